"""Table functions: series against the engines' own generators, split_rows against the same
function in Python on the same engine, and the peak memory of a call at 1M and 10M rows."""

from __future__ import annotations

import apsw
import duckdb
import pytest
from conftest import measure, module_path, peak_memory

import wasmudf

SERIES_DUCKDB = "DuckDB SELECT count(*) FROM series(1, 10,000,000, 1)"
SERIES_SQLITE = "SQLite SELECT count(*) FROM series(1, 1,000,000, 1)"
SPLIT_SQLITE = "SQLite split_rows over 2,000 rows of 50 parts (100,000 rows out)"


@pytest.fixture(scope="module")
def duck():
    con = duckdb.connect()
    con.execute("SET threads = 1")
    assert wasmudf.register(con, module_path("tables")).path == "native"
    return con


@pytest.mark.parametrize("impl", ["wasm", "builtin", "wasm_reader"])
def test_duckdb_series(benchmark, duck, impl):
    benchmark.group = SERIES_DUCKDB
    n = 10_000_000
    run = {
        "wasm": lambda: duck.execute(f"SELECT count(*) FROM series(1, {n}, 1)").fetchall(),
        "builtin": lambda: duck.execute(f"SELECT count(*) FROM generate_series(1, {n}, 1)").fetchall(),
        # The Python path's way: wasmudf.table over an Arrow record batch reader.
        "wasm_reader": lambda: wasmudf.table(duck, "series", 1, n, 1).aggregate("count(*)").fetchall(),
    }[impl]
    assert measure(benchmark, run, n) == [(n,)]


class PySplitRows:
    """split_rows as an apsw virtual table in Python: the comparison the issue asks for."""

    def Connect(self, connection, modulename, databasename, tablename, *args):  # noqa: N802
        return "CREATE TABLE x(ordinal, part, arg1 HIDDEN, arg2 HIDDEN)", self

    Create = Connect

    def BestIndexObject(self, info):  # noqa: N802
        for i in range(info.nConstraint):
            column = info.get_aConstraint_iColumn(i)
            if column >= 2 and info.get_aConstraint_op(i) == apsw.SQLITE_INDEX_CONSTRAINT_EQ:
                if not info.get_aConstraint_usable(i):
                    return False
                info.set_aConstraintUsage_argvIndex(i, column - 1)
                info.set_aConstraintUsage_omit(i, True)
        info.estimatedCost = 1000.0
        return True

    def Open(self):  # noqa: N802
        return _PyCursor()

    def Disconnect(self):  # noqa: N802
        pass

    Destroy = Disconnect


class _PyCursor:
    def Filter(self, indexnum, indexname, args):  # noqa: N802
        text, sep = args
        self.parts = [] if text is None else list(enumerate(text.split(sep), start=1))
        self.i = 0

    def Eof(self):  # noqa: N802
        return self.i >= len(self.parts)

    def Column(self, n):  # noqa: N802
        return self.parts[self.i][n] if n < 2 else None

    def Rowid(self):  # noqa: N802
        return self.i

    def Next(self):  # noqa: N802
        self.i += 1

    def Close(self):  # noqa: N802
        pass


@pytest.fixture(scope="module")
def lite():
    con = apsw.Connection(":memory:")
    wasmudf.register(con, module_path("tables"))
    con.create_module("py_split_rows", PySplitRows(), use_bestindex_object=True, eponymous_only=True)
    con.execute("CREATE TABLE lines(x TEXT)")
    con.executemany("INSERT INTO lines VALUES (?)", [(",".join(f"w{i}_{j}" for j in range(50)),) for i in range(2000)])
    return con


@pytest.mark.parametrize("impl", ["wasm", "recursive_cte"])
def test_sqlite_series(benchmark, lite, impl):
    benchmark.group = SERIES_SQLITE
    n = 1_000_000
    sql = {
        "wasm": f"SELECT count(*) FROM series(1, {n}, 1)",
        "recursive_cte": f"WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < {n}) "
        "SELECT count(*) FROM s",
    }[impl]
    assert measure(benchmark, lambda: lite.execute(sql).fetchall(), n) == [(n,)]


@pytest.mark.parametrize("impl", ["wasm", "python_vtable"])
def test_sqlite_split_rows(benchmark, lite, impl):
    benchmark.group = SPLIT_SQLITE
    fn = {"wasm": "split_rows", "python_vtable": "py_split_rows"}[impl]
    sql = f"SELECT count(*), sum(length(p.part)) FROM lines, {fn}(lines.x, ',') AS p"
    want = lite.execute(sql.replace(fn, "py_split_rows")).fetchall()
    assert measure(benchmark, lambda: lite.execute(sql).fetchall(), 100_000) == want


SCRIPT = """
import duckdb, wasmudf
con = duckdb.connect()
con.execute("SET threads = 1")
wasmudf.register(con, sys.argv[2])
before = peak_kib()
rows = int(sys.argv[1])
assert con.execute(f"SELECT count(*) FROM series(1, {rows}, 1)").fetchall() == [(rows,)]
after = peak_kib()
print(json.dumps({"before_kib": before, "peak_kib": after}))
"""


@pytest.mark.parametrize("rows", [1_000_000, 10_000_000])
def test_peak_memory_of_a_table_call(benchmark, rows):
    # Flat: one batch of 2,048 rows is in the guest at a time, whatever the call yields.
    benchmark.group = "peak memory (KiB, VmHWM) of DuckDB SELECT count(*) FROM series(1, N, 1)"

    def run():
        return peak_memory(SCRIPT, str(rows), str(module_path("tables")))

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result, rows=rows, memory=True)
    assert result["peak_kib"] >= result["before_kib"]
