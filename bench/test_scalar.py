"""Side-by-side scalar benchmarks: `.venv/bin/python -m pytest bench --benchmark-only`.

Each group runs the same query several ways in one process, so ratios within a group are
comparable even on a noisy machine.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import wasmudf

NUMERIC = Path(__file__).resolve().parent.parent / "udfs" / "numeric" / "numeric.wasm"
DUCKDB_ROWS = 10_000_000
SQLITE_ROWS = 1_000_000


@pytest.fixture(scope="module")
def duck():
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 1")
    wasmudf.register(con, NUMERIC)
    con.create_function("pa_add", lambda a, b: pc.add(a, b), ["BIGINT", "BIGINT"], "BIGINT", type="arrow")
    con.create_function("py_add", lambda a, b: a + b, ["BIGINT", "BIGINT"], "BIGINT")
    con.execute(f"CREATE TABLE t AS SELECT range AS a, range * 2 AS b FROM range({DUCKDB_ROWS})")
    con.execute("CREATE TABLE small AS SELECT * FROM t LIMIT 1000000")
    yield con
    con.close()


@pytest.mark.benchmark(group="duckdb sum(add(a, b)), 10M rows")
@pytest.mark.parametrize("impl", ["native", "wasm", "pyarrow_udf"])
def test_duckdb_add(benchmark, duck, impl):
    expr = {"native": "a + b", "wasm": "add_i64(a, b)", "pyarrow_udf": "pa_add(a, b)"}[impl]
    result = benchmark.pedantic(lambda: duck.execute(f"SELECT sum({expr}) FROM t").fetchall(), rounds=3)
    assert result == [(3 * DUCKDB_ROWS * (DUCKDB_ROWS - 1) // 2,)]


@pytest.mark.benchmark(group="duckdb sum(add(a, b)), 1M rows, with the row-at-a-time Python UDF")
@pytest.mark.parametrize("impl", ["wasm", "python_row_udf"])
def test_duckdb_add_vs_row_udf(benchmark, duck, impl):
    expr = {"wasm": "add_i64(a, b)", "python_row_udf": "py_add(a, b)"}[impl]
    result = benchmark.pedantic(lambda: duck.execute(f"SELECT sum({expr}) FROM small").fetchall(), rounds=3)
    assert result == [(3 * 1_000_000 * 999_999 // 2,)]


@pytest.fixture(scope="module")
def lite():
    import apsw

    con = apsw.Connection(":memory:")
    wasmudf.register(con, NUMERIC)
    con.create_scalar_function("py_add", lambda a, b: a + b, 2, deterministic=True)
    con.execute(
        "CREATE TABLE t AS WITH RECURSIVE r(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM r "
        f"WHERE x < {SQLITE_ROWS - 1}) SELECT x AS a, 2 * x AS b FROM r"
    )
    yield con
    con.close()


@pytest.mark.benchmark(group="sqlite sum(add(a, b)), 1M rows")
@pytest.mark.parametrize("impl", ["native", "wasm", "python_udf"])
def test_sqlite_add(benchmark, lite, impl):
    expr = {"native": "a + b", "wasm": "add_i64(a, b)", "python_udf": "py_add(a, b)"}[impl]
    result = benchmark.pedantic(lambda: lite.execute(f"SELECT sum({expr}) FROM t").fetchall(), rounds=3)
    assert result == [(3 * SQLITE_ROWS * (SQLITE_ROWS - 1) // 2,)]


@pytest.mark.benchmark(group="direct call add_i64, 1M rows")
@pytest.mark.parametrize("impl", ["wasm", "pyarrow_compute"])
def test_direct_add(benchmark, impl):
    a = pa.array(range(1_000_000), pa.int64())
    fn = wasmudf.load(NUMERIC).functions["add_i64"] if impl == "wasm" else pc.add
    result = benchmark(fn, a, a)
    assert result[-1].as_py() == 2 * 999_999
