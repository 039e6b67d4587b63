"""iso_week on DuckDB: the Wasm UDF on both DuckDB paths against the same function as a pyarrow
arrow UDF, a Python UDF and DuckDB's built-in weekofyear."""

from __future__ import annotations

import duckdb
import pyarrow.compute as pc
import pytest
from conftest import measure, module_path

import wasmudf

GROUP = "DuckDB sum(iso_week(day)), 1,000,000 rows"
ROWS = 1_000_000


def _con(path: str):
    con = duckdb.connect()
    con.execute("SET threads = 1")
    if path == "python":
        con.execute("SET allow_extension_repositories = 'forbidden'")
    assert wasmudf.register(con, module_path("dates")).path == path
    con.execute(f"CREATE TABLE days AS SELECT DATE '1900-01-01' + (i * 37 % 80000)::INT AS day FROM range({ROWS}) r(i)")
    con.create_function("pa_iso_week", lambda d: pc.iso_week(d), ["DATE"], "BIGINT", type="arrow")
    con.create_function("py_iso_week", lambda d: d.isocalendar().week, [duckdb.sqltypes.DATE], "BIGINT")
    return con


@pytest.fixture(scope="module")
def cons():
    return {"native": _con("native"), "python": _con("python")}


@pytest.mark.parametrize("impl", ["wasm", "wasm_python", "pyarrow_udf", "python_udf", "builtin"])
def test_duckdb_iso_week(benchmark, cons, impl):
    benchmark.group = GROUP
    con = cons["python" if impl == "wasm_python" else "native"]
    expr = {
        "wasm": "iso_week(day)",
        "wasm_python": "iso_week(day)",
        "pyarrow_udf": "pa_iso_week(day)",
        "python_udf": "py_iso_week(day)",
        "builtin": "weekofyear(day)",
    }[impl]
    want = con.execute("SELECT sum(weekofyear(day)) FROM days").fetchall()
    assert measure(benchmark, lambda: con.execute(f"SELECT sum({expr}) FROM days").fetchall(), ROWS) == want
