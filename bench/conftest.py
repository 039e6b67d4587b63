"""Shared pieces of the benchmark suite: modules, data, the native build, the Extism peer.

Run everything and write the report: ``bash scripts/bench.sh`` (see bench/report.py).
Every group measures the same work several ways in one process, so the ratios inside a group
are comparable on a noisy machine; each result records its row count in ``extra_info``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Before numpy loads: OpenBLAS's idle worker threads spin, which on a 2-core machine takes
# time from whatever is being measured (numpy here never multiplies matrices).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parent.parent
UDFS = ROOT / "udfs"
sys.path.insert(0, str(ROOT / "tests"))


def module_path(name: str) -> Path:
    return UDFS / name / f"{name}.wasm"


def rounds_for(rows: int) -> int:
    if rows <= 10_000:
        return 100
    if rows <= 100_000:
        return 20
    if rows <= 1_000_000:
        return 9
    return 7  # the machine is shared: medians of fewer rounds of the 10M queries wander


def measure(benchmark, fn, rows: int, iterations: int = 1, **info):
    """Time ``fn()`` (medians over rounds scaled to the size) and record the row count.
    ``iterations`` calls per round: for calls of a few microseconds, so the timer's own cost
    does not count."""
    benchmark.extra_info["rows"] = rows
    benchmark.extra_info.update(info)
    return benchmark.pedantic(fn, rounds=rounds_for(rows), iterations=iterations, warmup_rounds=1)


# -- peak memory --------------------------------------------------------------------------------

#: Prepended to a memory benchmark's script: ``peak_kib()``, the process's own peak RSS.
PEAK_KIB = """
import json, sys

def peak_kib():
    # VmHWM: this process's own peak. ru_maxrss is not: Linux carries it over from the
    # parent through fork and exec, so a child of a big benchmark process reports the parent's.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
"""


def peak_memory(script: str, *args: str) -> dict:
    """Run ``script`` (which prints one JSON line last, using ``peak_kib()``) in a fresh
    interpreter; its JSON."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_KIB + script, *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- data ------------------------------------------------------------------------------------

RNG_SEED = 20261122


def ints(rows: int) -> tuple[pa.Array, pa.Array]:
    rng = np.random.default_rng(RNG_SEED)
    a = rng.integers(-(2**40), 2**40, rows, dtype=np.int64)
    return pa.array(a), pa.array(a[::-1].copy())


def coordinates(rows: int) -> list[pa.Array]:
    rng = np.random.default_rng(RNG_SEED)
    lat = rng.uniform(-90, 90, (2, rows))
    lon = rng.uniform(-180, 180, (2, rows))
    return [pa.array(lat[0]), pa.array(lon[0]), pa.array(lat[1]), pa.array(lon[1])]


WORDS = ["kitten", "sitting", "saturday", "sunday", "rosettacode", "raisethysword", "straße", "strasse", "naïve", "naive"]


def short_strings(rows: int) -> tuple[pa.Array, pa.Array]:
    rng = np.random.default_rng(RNG_SEED)
    pick = rng.integers(0, len(WORDS), (2, rows))
    return pa.array([WORDS[i] for i in pick[0]]), pa.array([WORDS[i] for i in pick[1]])


def blobs(rows: int, size: int = 1024) -> pa.Array:
    rng = np.random.default_rng(RNG_SEED)
    data = rng.integers(0, 256, rows * size, dtype=np.uint8).tobytes()
    offsets = pa.array(np.arange(0, rows * size + 1, size, dtype=np.int32))
    return pa.BinaryArray.from_buffers(pa.binary(), rows, [None, offsets.buffers()[1], pa.py_buffer(data)])


def positives(rows: int) -> pa.Array:
    rng = np.random.default_rng(RNG_SEED)
    return pa.array(rng.uniform(0.5, 2.0, rows))


# -- the native build of the same C sources -------------------------------------------------


class Native:
    """The udfs/ C sources compiled with gcc -O2 against bench/native/wasmudf.h."""

    def __init__(self, out: Path):
        self.libs = {}
        gcc = shutil.which("gcc")
        if gcc is None:
            raise RuntimeError("the native baseline needs gcc")
        for name in ("numeric", "binary", "strings", "stats"):
            lib = out / f"native_{name}.so"
            subprocess.run(
                [gcc, "-O2", "-shared", "-fPIC", "-w", f"-I{ROOT / 'bench' / 'native'}", "-o", str(lib),
                 str(UDFS / name / f"{name}.c")],
                check=True,
            )
            self.libs[name] = ctypes.CDLL(str(lib))

    def scalar(self, module: str, name: str, arrays: list[pa.Array], out_type: pa.DataType) -> pa.Array:
        """Run ``native_<name>`` over whole arrays (no NULLs, offset 0) into a new array."""
        n = len(arrays[0])
        columns = (ctypes.c_void_p * len(arrays))()
        offsets = (ctypes.c_void_p * len(arrays))()
        for i, a in enumerate(arrays):
            bufs = a.buffers()
            if pa.types.is_binary(a.type) or pa.types.is_string(a.type):
                offsets[i] = bufs[1].address
                columns[i] = bufs[2].address
            else:
                columns[i] = bufs[1].address
        out = pa.allocate_buffer(n * out_type.bit_width // 8)
        getattr(self.libs[module], f"native_{name}")(columns, offsets, ctypes.c_void_p(out.address), ctypes.c_size_t(n))
        return pa.Array.from_buffers(out_type, n, [None, out])

    def aggregate_f64(self, module: str, name: str, array: pa.Array) -> float:
        fn = getattr(self.libs[module], f"native_{name}")
        fn.restype = ctypes.c_double
        columns = (ctypes.c_void_p * 1)(array.buffers()[1].address)
        offsets = (ctypes.c_void_p * 1)()
        return fn(columns, offsets, ctypes.c_size_t(len(array)))


@pytest.fixture(scope="session")
def native(tmp_path_factory) -> Native:
    return Native(tmp_path_factory.mktemp("native"))


# -- the Extism peer -----------------------------------------------------------------------

EXTISM_WAT = r"""
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (memory (export "memory") 1)
  (func (export "noop") (result i32) (call $output_set (i64.const 0) (i64.const 0)) (i32.const 0))
  ;; input: n int64 a's then n int64 b's; output: n int64 sums (wrapping), via the kernel's memory
  (func (export "add_i64") (result i32)
    (local $n i64) (local $i i64) (local $out i64)
    (local.set $n (i64.div_u (call $input_length) (i64.const 16)))
    (local.set $out (call $alloc (i64.mul (local.get $n) (i64.const 8))))
    (block $done (loop $l
      (br_if $done (i64.ge_u (local.get $i) (local.get $n)))
      (call $store_u64 (i64.add (local.get $out) (i64.mul (local.get $i) (i64.const 8)))
        (i64.add (call $input_load_u64 (i64.mul (local.get $i) (i64.const 8)))
                 (call $input_load_u64 (i64.mul (i64.add (local.get $n) (local.get $i)) (i64.const 8)))))
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (br $l)))
    (call $output_set (local.get $out) (i64.mul (local.get $n) (i64.const 8)))
    (i32.const 0)))
"""


@pytest.fixture(scope="session")
def extism_plugin():
    import extism
    import wasmtime

    return extism.Plugin(bytes(wasmtime.wat2wasm(EXTISM_WAT)), wasi=False)
