"""Cold start: loading a module and registering it on a fresh connection, the first call
on a new thread, and the subprocess-per-call plug-in model for comparison."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
from conftest import measure, module_path

import wasmudf
from wasmudf.adapters.sqlite_apsw import row_function
from wasmudf.runtime import ENGINES

NUMERIC = module_path("numeric")


@pytest.fixture(scope="module")
def warm_disk_cache():
    wasmudf.load(NUMERIC)  # compiles once and writes the disk cache


@pytest.mark.parametrize("engine", ["duckdb", "sqlite"])
@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_load_and_register_on_a_fresh_connection(benchmark, warm_disk_cache, cache, engine):
    import apsw
    import duckdb

    benchmark.group = f"cold start: load a cached module and register its 8 functions on a fresh {engine} connection"
    wasm = NUMERIC.read_bytes()
    connections = []

    def fresh_connection():
        if cache == "disk":
            ENGINES.forget_compiled()  # the disk cache's deserialization is part of the time
        con = duckdb.connect() if engine == "duckdb" else apsw.Connection(":memory:")  # not ours to count
        connections.append(con)
        return (con,), {}

    names = benchmark.pedantic(lambda con: wasmudf.register(con, wasm), setup=fresh_connection, rounds=30)
    benchmark.extra_info.update(rows=1, cache=cache)
    assert "add_i64" in names
    for con in connections:
        con.close()


def test_first_call_on_a_new_thread(benchmark, warm_disk_cache):
    benchmark.group = "cold start: first call on a new thread (new store and instance)"
    fn = wasmudf.load(NUMERIC).functions["add_i64"]
    row = row_function(fn)
    timings: list[float] = []

    def run():
        def first_call():
            start = time.perf_counter()
            row(1, 2)
            timings.append(time.perf_counter() - start)

        t = threading.Thread(target=first_call)
        t.start()
        t.join()

    measure(benchmark, run, 1)
    timings.sort()
    benchmark.extra_info["first_call_median_s"] = timings[len(timings) // 2]


@pytest.fixture(scope="module")
def add_program(tmp_path_factory):
    source = tmp_path_factory.mktemp("proc") / "add.c"
    source.write_text(
        '#include <stdio.h>\n#include <stdlib.h>\n'
        'int main(int c, char **v) { printf("%lld\\n", atoll(v[1]) + atoll(v[2])); return 0; }\n'
    )
    exe = source.with_suffix("")
    subprocess.run([shutil.which("gcc") or "gcc", "-O2", "-o", str(exe), str(source)], check=True)
    return exe


@pytest.mark.parametrize("impl", ["wasm_sqlite_row", "subprocess_per_call"])
def test_one_call(benchmark, add_program, impl):
    benchmark.group = "one add_i64 call: wasmudf's per-row call vs a process per call"
    if impl == "subprocess_per_call":
        def run():
            return int(subprocess.run([str(add_program), "1", "2"], capture_output=True, text=True).stdout)
    else:
        row = row_function(wasmudf.load(NUMERIC).functions["add_i64"])

        def run():
            return row(1, 2)

    assert measure(benchmark, run, 1) == 3


@pytest.mark.parametrize("impl", ["wasm_row_call", "wasm_batch_call", "extism_call"])
def test_per_call_overhead(benchmark, extism_plugin, impl):
    import pyarrow as pa

    benchmark.group = "per-call overhead: the smallest call"
    fn = wasmudf.load(NUMERIC).functions["add_i64"]
    row = row_function(fn)
    one = pa.array([1], pa.int64())
    run = {
        "wasm_row_call": lambda: row(1, 2) and None,
        "wasm_batch_call": lambda: fn(one, one) and None,
        "extism_call": lambda: extism_plugin.call("noop", b"") and None,
    }[impl]
    measure(benchmark, run, 1, iterations=100)
