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


def fresh(engine: str):
    """A fresh connection (its making is not ours to count): DuckDB natively with the
    extension already loaded (that one-time load is measured below), DuckDB's Python path,
    or SQLite."""
    import apsw
    import duckdb

    if engine == "duckdb":
        return wasmudf.duckdb.connect()
    if engine == "duckdb_python":
        con = duckdb.connect()
        con.execute("SET allow_extension_repositories = 'forbidden'").fetchall()
        return con
    return apsw.Connection(":memory:")


@pytest.mark.parametrize("engine", ["duckdb", "duckdb_python", "sqlite"])
@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_load_and_register_on_a_fresh_connection(benchmark, warm_disk_cache, cache, engine):

    benchmark.group = f"cold start: load a cached module and register its 8 functions on a fresh {engine} connection"
    wasm = NUMERIC.read_bytes()
    connections = []

    def fresh_connection():
        if cache == "disk":
            ENGINES.forget_compiled()  # the disk cache's deserialization is part of the time
        con = fresh(engine)
        connections.append(con)
        return (con,), {}

    names = benchmark.pedantic(lambda con: wasmudf.register(con, wasm), setup=fresh_connection, rounds=30)
    benchmark.extra_info.update(rows=1, cache=cache)
    assert "add_i64" in names
    for con in connections:
        con.close()


@pytest.mark.parametrize("route", ["plain_connect", "unsigned_connect", "signed_load"])
def test_loading_the_duckdb_extension(benchmark, route):
    """What a database pays once for the native path: wasmudf.duckdb.connect against
    duckdb.connect, and the signed route's load into a plain connection."""
    import duckdb

    from wasmudf.adapters.duckdb import native_database

    benchmark.group = "cold start: loading wasmudf's DuckDB extension into a new database (once per database)"
    connections = []
    if route == "signed_load":
        def setup():
            connections.append(duckdb.connect())
            return (connections[-1],), {}

        benchmark.pedantic(lambda con: native_database(con), setup=setup, rounds=30)
    else:
        connect = duckdb.connect if route == "plain_connect" else wasmudf.duckdb.connect
        benchmark.pedantic(lambda: connections.append(connect()), rounds=30)
    benchmark.extra_info.update(rows=1)
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
