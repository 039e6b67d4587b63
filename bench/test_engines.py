"""Inside the databases: the Wasm UDF against the same function as a Python UDF on the same
engine, DuckDB's arrow UDF with pyarrow.compute, and the engine's built-in where one exists."""

from __future__ import annotations

import zlib

import pyarrow.compute as pc
import pytest
from conftest import measure, module_path

import wasmudf

DUCK_ROWS = 10_000_000
THREADS_GROUP = "DuckDB sum(f(a, b)) by threads, 10,000,000 rows"


def _duck(threads: int = 1, limits: wasmudf.Limits | None = None, path: str = "native"):
    """A database with the example modules registered natively (DuckDB's C extension API),
    or on the Python path (a database that forbids extension repositories)."""
    import duckdb

    con = duckdb.connect()
    if path == "python":
        con.execute("SET allow_extension_repositories = 'forbidden'").fetchall()
    con.execute(f"SET threads = {threads}")
    for name in ("numeric", "binary", "strings", "stats"):
        assert wasmudf.register(con, module_path(name), limits=limits).path == path
    con.create_function("pa_add", lambda a, b: pc.add(a, b), ["BIGINT", "BIGINT"], "BIGINT", type="arrow")
    con.create_function("py_add", lambda a, b: a + b, ["BIGINT", "BIGINT"], "BIGINT")
    con.create_function("py_crc32", lambda b: zlib.crc32(b), ["BLOB"], "BIGINT")
    con.create_function("py_lev", _py_lev, ["VARCHAR", "VARCHAR"], "BIGINT")
    con.execute(f"CREATE TABLE t AS SELECT range AS a, range * 2 AS b FROM range({DUCK_ROWS})")
    con.execute("CREATE TABLE t1m AS SELECT * FROM t LIMIT 1000000")
    con.execute(
        "CREATE TABLE words AS SELECT (['kitten','sitting','saturday','sunday','straße','strasse'])[1 + range % 6] AS w1, "
        "(['sitting','kitten','sunday','saturday','strasse','straße'])[1 + (range * 7) % 6] AS w2 FROM range(100000)"
    )
    con.execute("CREATE TABLE blobs AS SELECT repeat(chr(65 + (range % 26)::INTEGER), 1024)::BLOB AS b FROM range(100000)")
    con.execute("CREATE TABLE pos AS SELECT 0.5 + (hash(range) % 1000) / 1000.0 AS x, range % 100 AS g FROM range(1000000)")
    con.execute("CREATE TABLE pos200k AS SELECT range AS i, 0.5 + (hash(range) % 1000) / 1000.0 AS x FROM range(200000)")
    # Warm every contender once (first queries after loading a table run slower), so the
    # order the benchmarks run in does not favour anyone.
    for expr in ("add_i64(a, b)", "pa_add(a, b)", "a + b"):
        con.execute(f"SELECT sum({expr}) FROM t").fetchall()
    return con


def _py_lev(a: str, b: str) -> int:
    from references import edit_distance

    return edit_distance(a, b)


@pytest.fixture(scope="module")
def duck():
    con = _duck()
    yield con
    con.close()


@pytest.fixture(scope="module")
def duck_python():
    con = _duck(path="python")
    yield con
    con.close()


def on(impl: str, duck, duck_python):
    """The connection an impl runs on: "wasm_python" is the Wasm UDF on DuckDB's Python path."""
    return duck_python if impl == "wasm_python" else duck


def one(con, sql):
    return con.execute(sql).fetchall()


@pytest.mark.parametrize("impl", ["wasm", "wasm_python", "pyarrow_udf", "builtin"])
def test_duckdb_add_10m(benchmark, duck, duck_python, impl):
    benchmark.group = "DuckDB sum(add(a, b)), 10,000,000 rows"
    expr = {"wasm": "add_i64(a, b)", "wasm_python": "add_i64(a, b)", "pyarrow_udf": "pa_add(a, b)", "builtin": "a + b"}[impl]
    con = on(impl, duck, duck_python)
    assert measure(benchmark, lambda: one(con, f"SELECT sum({expr}) FROM t"), DUCK_ROWS) == [(3 * DUCK_ROWS * (DUCK_ROWS - 1) // 2,)]


@pytest.mark.parametrize("impl", ["wasm", "pyarrow_udf", "python_udf", "builtin"])
def test_duckdb_add_1m(benchmark, duck, impl):
    benchmark.group = "DuckDB sum(add(a, b)), 1,000,000 rows"
    expr = {"wasm": "add_i64(a, b)", "pyarrow_udf": "pa_add(a, b)", "python_udf": "py_add(a, b)", "builtin": "a + b"}[impl]
    assert measure(benchmark, lambda: one(duck, f"SELECT sum({expr}) FROM t1m"), 1_000_000) == [(3 * 1_000_000 * 999_999 // 2,)]


@pytest.mark.parametrize("impl", ["wasm", "python_udf", "builtin"])
def test_duckdb_levenshtein(benchmark, duck, impl):
    benchmark.group = "DuckDB sum(levenshtein(w1, w2)), 100,000 rows"
    expr = {"wasm": "lev_distance(w1, w2)", "python_udf": "py_lev(w1, w2)", "builtin": "levenshtein(w1, w2)"}[impl]
    # DuckDB's built-in counts bytes, not code points: compare it on time only.
    result = measure(benchmark, lambda: one(duck, f"SELECT sum({expr}) FROM words"), 100_000)
    assert result[0][0] > 0


@pytest.mark.parametrize("impl", ["wasm", "python_udf"])
def test_duckdb_crc32(benchmark, duck, impl):
    benchmark.group = "DuckDB sum(crc32(1 KiB blob)), 100,000 rows"
    expr = {"wasm": "crc32(b)", "python_udf": "py_crc32(b)"}[impl]
    expected = one(duck, "SELECT sum(py_crc32(b)) FROM blobs")
    assert measure(benchmark, lambda: one(duck, f"SELECT sum({expr}) FROM blobs"), 100_000) == expected


@pytest.mark.parametrize("impl", ["wasm", "wasm_python", "builtin"])
def test_duckdb_geo_mean_grouped(benchmark, duck, duck_python, impl):
    benchmark.group = "DuckDB geo_mean(x) GROUP BY g (100 groups), 1,000,000 rows"
    expr = {"wasm": "geo_mean(x)", "wasm_python": "geo_mean(x)", "builtin": "geomean(x)"}[impl]
    con = on(impl, duck, duck_python)
    result = measure(benchmark, lambda: one(con, f"SELECT g, {expr} FROM pos GROUP BY g ORDER BY g"), 1_000_000)
    assert len(result) == 100


WINDOW_GROUP = "DuckDB geo_mean(x) OVER (ORDER BY i ROWS 100 PRECEDING), 200,000 rows"


@pytest.mark.parametrize("impl", ["wasm", "wasm_python"])
def test_duckdb_geo_mean_window(benchmark, duck, duck_python, impl):
    # Natively a real aggregate (DuckDB's segment tree); on the Python path a macro over list().
    benchmark.group = WINDOW_GROUP
    con = on(impl, duck, duck_python)
    sql = "SELECT sum(v) FROM (SELECT geo_mean(x) OVER (ORDER BY i ROWS 100 PRECEDING) AS v FROM pos200k)"
    expected = one(duck, sql)[0][0]
    result = measure(benchmark, lambda: one(con, sql), 200_000)
    assert result[0][0] == pytest.approx(expected, rel=1e-9)


CUMULATIVE_GROUP = "DuckDB geo_mean(x) OVER (ORDER BY i ROWS UNBOUNDED PRECEDING), 200,000 rows"


@pytest.mark.parametrize("impl", ["wasm", "builtin"])
def test_duckdb_geo_mean_cumulative_window(benchmark, duck, impl):
    # Natively the segment tree's nodes are serialized states merged per frame (ABI §5); the
    # Python path (a macro over list()) is quadratic here: minutes, so it is not run.
    benchmark.group = CUMULATIVE_GROUP
    fn = {"wasm": "geo_mean", "builtin": "geomean"}[impl]
    sql = f"SELECT sum(v) FROM (SELECT {fn}(x) OVER (ORDER BY i ROWS UNBOUNDED PRECEDING) AS v FROM pos200k)"
    expected = one(duck, sql.replace(fn, "geomean"))[0][0]
    result = measure(benchmark, lambda: one(duck, sql), 200_000)
    assert result[0][0] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("impl", ["wasm", "wasm_python", "pyarrow_udf", "identity_udf"])
def test_duckdb_threads(benchmark, impl, threads):
    # The identity arrow UDF (returns its first argument) is DuckDB's own cost of calling
    # Python per vector: with 2 threads its workers hand the GIL back and forth every vector.
    benchmark.group = THREADS_GROUP
    con = _duck(threads, path="python" if impl == "wasm_python" else "native")
    con.create_function("identity_udf", lambda a, b: a, ["BIGINT", "BIGINT"], "BIGINT", type="arrow")
    expr = {"wasm": "add_i64(a, b)", "wasm_python": "add_i64(a, b)", "pyarrow_udf": "pa_add(a, b)",
            "identity_udf": "identity_udf(a, b)"}[impl]
    one(con, f"SELECT sum({expr}) FROM t")  # warm
    measure(benchmark, lambda: one(con, f"SELECT sum({expr}) FROM t"), DUCK_ROWS, threads=threads)
    con.close()


@pytest.mark.parametrize("limits", ["default", "unlimited"])
def test_duckdb_limits_overhead(benchmark, limits):
    benchmark.group = "DuckDB sum(add_i64(a, b)), default limits vs none, 10,000,000 rows"
    con = _duck(limits=wasmudf.Limits() if limits == "default" else wasmudf.Limits.unlimited())
    for _ in range(3):  # a new database's first queries run slow: warm it before timing
        one(con, "SELECT sum(add_i64(a, b)) FROM t")
    measure(benchmark, lambda: one(con, "SELECT sum(add_i64(a, b)) FROM t"), DUCK_ROWS)
    con.close()


@pytest.fixture(scope="module")
def lite():
    import apsw

    con = apsw.Connection(":memory:")
    for name in ("numeric", "stats"):
        wasmudf.register(con, module_path(name))
    con.create_scalar_function("py_add", lambda a, b: a + b, 2, deterministic=True)

    class PyGeoMean:
        def __init__(self):
            self.total, self.n = 0.0, 0

        def step(self, x):
            import math

            self.total += math.log(x)
            self.n += 1

        def final(self):
            import math

            return math.exp(self.total / self.n) if self.n else None

    con.create_aggregate_function("py_geo_mean", PyGeoMean, 1)
    con.execute(
        "CREATE TABLE t AS WITH RECURSIVE r(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM r WHERE x < 999999) "
        "SELECT x AS a, 2 * x AS b, 0.5 + (x % 1000) / 1000.0 AS f FROM r"
    )
    yield con
    con.close()


@pytest.mark.parametrize("impl", ["wasm", "python_udf", "builtin"])
def test_sqlite_add(benchmark, lite, impl):
    benchmark.group = "SQLite sum(add(a, b)), 1,000,000 rows"
    expr = {"wasm": "add_i64(a, b)", "python_udf": "py_add(a, b)", "builtin": "a + b"}[impl]
    result = measure(benchmark, lambda: lite.execute(f"SELECT sum({expr}) FROM t").fetchall(), 1_000_000)
    assert result == [(3 * 1_000_000 * 999_999 // 2,)]


@pytest.mark.parametrize("impl", ["wasm", "python_aggregate"])
def test_sqlite_geo_mean(benchmark, lite, impl):
    benchmark.group = "SQLite geo_mean(f), 1,000,000 rows"
    expr = {"wasm": "geo_mean(f)", "python_aggregate": "py_geo_mean(f)"}[impl]
    result = measure(benchmark, lambda: lite.execute(f"SELECT {expr} FROM t").fetchall(), 1_000_000)
    assert result[0][0] == pytest.approx(lite.execute("SELECT py_geo_mean(f) FROM t").fetchall()[0][0], rel=1e-9)
