"""Direct calls on pyarrow arrays (no database): Wasm against the native gcc build of the
same C source (the physical limit), vectorized pyarrow/numpy where it exists, and Extism."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import blobs, coordinates, ints, measure, module_path, positives, short_strings
from references import edit_distance, haversine_km

import wasmudf

SIZES = [1_000, 100_000, 1_000_000]


@pytest.fixture(scope="module")
def fns():
    out = {}
    for name in ("numeric", "binary", "strings", "stats"):
        out.update(wasmudf.load(module_path(name)).functions)
    return out


@pytest.mark.parametrize("rows", [*SIZES, 10_000_000])
@pytest.mark.parametrize("impl", ["wasm", "native", "pyarrow", "extism"])
def test_add_i64(benchmark, fns, native, extism_plugin, rows, impl):
    benchmark.group = f"add_i64 direct, {rows:,} rows"
    a, b = ints(rows)
    expected = pc.add(a, b)
    run = {
        "wasm": lambda: fns["add_i64"](a, b),
        "native": lambda: native.scalar("numeric", "add_i64", [a, b], pa.int64()),
        "pyarrow": lambda: pc.add(a, b),
        "extism": lambda: pa.array(np.frombuffer(
            extism_plugin.call("add_i64", a.buffers()[1].to_pybytes() + b.buffers()[1].to_pybytes()), np.int64)),
    }[impl]
    assert measure(benchmark, run, rows).equals(expected)


@pytest.mark.parametrize("rows", SIZES)
@pytest.mark.parametrize("impl", ["wasm", "native", "numpy"])
def test_haversine(benchmark, fns, native, rows, impl):
    benchmark.group = f"haversine_km direct, {rows:,} rows"
    cols = coordinates(rows)

    def with_numpy():
        lat1, lon1, lat2, lon2 = (np.radians(c.to_numpy()) for c in cols)
        a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
        return pa.array(2 * 6371.0 * np.arcsin(np.sqrt(np.minimum(a, 1.0))))

    run = {
        "wasm": lambda: fns["haversine_km"](*cols),
        "native": lambda: native.scalar("numeric", "haversine_km", cols, pa.float64()),
        "numpy": with_numpy,
    }[impl]
    result = measure(benchmark, run, rows).to_numpy()
    first = [c[0].as_py() for c in cols]
    assert result[0] == pytest.approx(haversine_km(*first), rel=1e-9)


@pytest.mark.parametrize(
    ("impl", "rows"),
    # Pure Python per row is measured up to 100K rows: beyond that it only takes longer.
    [(impl, rows) for impl in ("wasm", "native", "python") for rows in SIZES if impl != "python" or rows <= 100_000],
)
def test_levenshtein(benchmark, fns, native, rows, impl):
    benchmark.group = f"levenshtein (short strings) direct, {rows:,} rows"
    a, b = short_strings(rows)
    run = {
        "wasm": lambda: fns["lev_distance"](a, b),
        "native": lambda: native.scalar("strings", "lev_distance", [a, b], pa.int64()),
        "python": lambda: pa.array([edit_distance(x, y) for x, y in zip(a.to_pylist(), b.to_pylist())]),
    }[impl]
    result = measure(benchmark, run, rows)
    assert result[0].as_py() == edit_distance(a[0].as_py(), b[0].as_py())


@pytest.mark.parametrize("rows", [1_000, 100_000])
@pytest.mark.parametrize("impl", ["wasm", "native", "python_zlib"])
def test_crc32_of_1kib_blobs(benchmark, fns, native, rows, impl):
    benchmark.group = f"crc32 of 1 KiB blobs direct, {rows:,} rows"
    data = blobs(rows)
    run = {
        "wasm": lambda: fns["crc32"](data),
        "native": lambda: native.scalar("binary", "crc32", [data], pa.int64()),
        "python_zlib": lambda: pa.array([zlib.crc32(v) for v in data.to_pylist()], pa.int64()),
    }[impl]
    result = measure(benchmark, run, rows)
    assert result[0].as_py() == zlib.crc32(data[0].as_py())


@pytest.mark.parametrize("rows", SIZES)
@pytest.mark.parametrize("impl", ["wasm", "native", "numpy"])
def test_geo_mean_aggregate(benchmark, fns, native, rows, impl):
    benchmark.group = f"geo_mean aggregate direct, {rows:,} rows"
    x = positives(rows)
    run = {
        "wasm": lambda: fns["geo_mean"].aggregate(x),
        "native": lambda: native.aggregate_f64("stats", "geo_mean", x),
        "numpy": lambda: float(np.exp(np.mean(np.log(x.to_numpy())))),
    }[impl]
    assert measure(benchmark, run, rows) == pytest.approx(float(np.exp(np.mean(np.log(x.to_numpy())))), rel=1e-9)
