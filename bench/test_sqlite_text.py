"""Text and blobs on SQLite, row by row: the Wasm UDF through apsw (the accelerator's C row
path), the same Wasm UDF through Python's sqlite3 and on the pure-Python path, the same
function written in Python as a UDF on the same connection, and SQLite's built-in where one
exists (``upper``, ``length``)."""

from __future__ import annotations

import functools
import zlib

import pytest
from conftest import measure, module_path

import wasmudf
from wasmudf import instance as instance_module
from wasmudf.adapters import sqlite_apsw
from wasmudf.pycore import PyCore

ROWS = 20_000
AGGREGATE_ROWS = 1_000_000
WORDS = ["kitten", "sitting", "saturday", "sunday", "rosettacode", "raisethysword", "straße", "strasse", "naïve",
         "crème brûlée"]
MODULES = ("strings", "text", "binary")


def _py_functions(con, create_scalar, create_aggregate) -> None:
    from references import ascii_fold, edit_distance, slugify

    create_scalar(con, "py_lev", edit_distance, 2)
    create_scalar(con, "py_upper", lambda s: s.upper(), 1)
    create_scalar(con, "py_ascii_fold", ascii_fold, 1)
    create_scalar(con, "py_slugify", slugify, 1)
    create_scalar(con, "py_crc32", zlib.crc32, 1)

    class PyLongest:
        def __init__(self):
            self.best = None

        def step(self, s):
            if s is not None and (self.best is None or len(s.encode()) > len(self.best.encode())):
                self.best = s

        def final(self):
            return self.best

        finalize = final

    create_aggregate(con, "py_longest", PyLongest)


def _tables(con) -> None:
    con.execute(
        f"CREATE TABLE w AS WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i < {ROWS - 1}) "
        f"SELECT i, {_pick('i')} AS a, {_pick('(i * 7 + 3)')} AS b, CAST(printf('%.*c', 1024, char(65 + i % 26)) || i AS BLOB) AS blob FROM r"
    )
    con.execute(
        f"CREATE TABLE big AS WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r "
        f"WHERE i < {AGGREGATE_ROWS - 1}) SELECT {_pick('i')} || (i % 97) AS s FROM r"
    )


def _pick(i: str) -> str:
    cases = " ".join(f"WHEN {k} THEN '{w}'" for k, w in enumerate(WORDS))
    return f"(CASE {i} % {len(WORDS)} {cases} END)"


def _apsw(pure: bool = False):
    import apsw

    con = apsw.Connection(":memory:")
    if pure:
        # The pure-Python path, in this process: the Python core and Python row callables.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(instance_module, "CoreClass", PyCore)
            patch.setattr(sqlite_apsw, "row_function", lambda fn, interrupted=None: functools.partial(fn.call_row))
            patch.setattr(sqlite_apsw, "PACK_ROWS", False)
            for name in MODULES:
                wasmudf.register(con, wasmudf.load(module_path(name)))
    else:
        for name in MODULES:
            wasmudf.register(con, module_path(name))
    _py_functions(
        con,
        lambda c, name, fn, n: c.create_scalar_function(name, fn, n, deterministic=True),
        lambda c, name, cls: c.create_aggregate_function(name, cls, 1),
    )
    _tables(con)
    return con


def _sqlite3():
    import sqlite3

    con = sqlite3.connect(":memory:", isolation_level=None)
    for name in MODULES:
        wasmudf.register(con, module_path(name))
    _py_functions(
        con,
        lambda c, name, fn, n: c.create_function(name, n, fn, deterministic=True),
        lambda c, name, cls: c.create_aggregate(name, 1, cls),
    )
    _tables(con)
    return con


@pytest.fixture(scope="module")
def engines():
    cons = {"apsw": _apsw(), "pure": _apsw(pure=True), "sqlite3": _sqlite3()}
    yield cons
    for con in cons.values():
        con.close()


def _run(con, sql):
    return list(con.execute(sql))


# implementation → (connection, SQL expression)
CASES = {
    "SQLite sum(lev_distance(a, b)), 20,000 rows": {
        "wasm": ("apsw", "sum(lev_distance(a, b))"),
        "wasm_sqlite3": ("sqlite3", "sum(lev_distance(a, b))"),
        "wasm_pure_python": ("pure", "sum(lev_distance(a, b))"),
        "python_udf": ("apsw", "sum(py_lev(a, b))"),
    },
    "SQLite count(ascii_fold(a)), 20,000 rows": {
        "wasm": ("apsw", "count(ascii_fold(a))"),
        "wasm_sqlite3": ("sqlite3", "count(ascii_fold(a))"),
        "wasm_pure_python": ("pure", "count(ascii_fold(a))"),
        "python_udf": ("apsw", "count(py_ascii_fold(a))"),
        "python_udf_upper": ("apsw", "count(py_upper(a))"),
        "builtin_upper": ("apsw", "count(upper(a))"),
    },
    "SQLite count(slugify(a)), 20,000 rows": {
        "wasm": ("apsw", "count(slugify(a))"),
        "wasm_sqlite3": ("sqlite3", "count(slugify(a))"),
        "python_udf": ("apsw", "count(py_slugify(a))"),
    },
    "SQLite sum(crc32(1 KiB blob)), 20,000 rows": {
        "wasm": ("apsw", "sum(crc32(blob))"),
        "wasm_sqlite3": ("sqlite3", "sum(crc32(blob))"),
        "python_udf": ("apsw", "sum(py_crc32(blob))"),
        "builtin_length": ("apsw", "sum(length(blob))"),
    },
}
PARAMS = [(group, impl) for group, impls in CASES.items() for impl in impls]


@pytest.mark.parametrize(("group", "impl"), PARAMS, ids=[f"{g.split('(')[1].split(')')[0]}-{i}" for g, i in PARAMS])
def test_sqlite_text_scalars(benchmark, engines, group, impl):
    benchmark.group = group
    engine, expr = CASES[group][impl]
    con = engines[engine]
    result = measure(benchmark, lambda: _run(con, f"SELECT {expr} FROM w"), ROWS)
    if impl.startswith("wasm"):  # the same function, written in Python, is the reference
        assert result == _run(engines["apsw"], f"SELECT {CASES[group]['python_udf'][1]} FROM w")


@pytest.mark.parametrize("impl", ["wasm", "wasm_sqlite3", "python_aggregate"])
def test_sqlite_text_aggregate(benchmark, engines, impl):
    benchmark.group = "SQLite longest(s), 1,000,000 rows"
    engine, expr = {
        "wasm": ("apsw", "longest(s)"),
        "wasm_sqlite3": ("sqlite3", "longest(s)"),
        "python_aggregate": ("apsw", "py_longest(s)"),
    }[impl]
    result = measure(benchmark, lambda: _run(engines[engine], f"SELECT {expr} FROM big"), AGGREGATE_ROWS)
    assert len(result[0][0].encode()) == max(len(w.encode()) for w in WORDS) + 2
