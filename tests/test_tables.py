"""Table functions (ABI §6): the udfs/tables examples against Python references, directly,
on SQLite (apsw virtual tables, lateral joins) and on DuckDB (wasmudf.table), and the
manifest's rules for them."""

from __future__ import annotations

import apsw
import duckdb
import pyarrow as pa
import pytest
import wat
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

import wasmudf
from wasmudf.abi import parse_manifest

TABLES = ROOT / "udfs" / "tables" / "tables.wasm"
INT64 = st.integers(-(2**63), 2**63 - 1)
ASCII_SPACE = " \t\n\r\f\v"

# -- references, from each function's definition --------------------------------------------


def series(start: int, stop: int, step: int) -> list[int]:
    """DuckDB's generate_series: inclusive of stop; empty when the range runs the other way."""
    if step == 0:
        raise ValueError("step 0")
    out, v = [], start
    while (step > 0 and v <= stop) or (step < 0 and v >= stop):
        out.append(v)
        v += step
    return out


def split_rows(text: str | None, sep: str) -> list[tuple[int, str]]:
    if text is None:
        return []
    return list(enumerate(text.split(sep), start=1))


def parse_kv(text: str) -> list[tuple[str, str]]:
    pairs = []
    for pair in text.split(";"):
        if "=" in pair:
            key, value = pair.split("=", 1)
            pairs.append((key.strip(ASCII_SPACE), value.strip(ASCII_SPACE)))
    return pairs


@pytest.fixture(scope="module")
def tables():
    return wasmudf.load(TABLES)


def rows(reader: pa.RecordBatchReader) -> list[tuple]:
    table = reader.read_all()
    return list(zip(*(c.to_pylist() for c in table.columns)))


# -- direct calls -----------------------------------------------------------------------------


def test_a_direct_call_streams_a_record_batch_reader(tables):
    reader = tables.functions["series"](1, 250_000, 1, batch_rows=65_536)
    assert isinstance(reader, pa.RecordBatchReader)
    assert reader.schema == pa.schema([("value", pa.int64())])
    sizes = [b.num_rows for b in reader]
    assert sizes == [65_536, 65_536, 65_536, 53_392]


@settings(max_examples=200, deadline=None)
@given(start=INT64 | st.integers(-50, 50), stop=INT64 | st.integers(-50, 50), step=st.integers(-7, 7).filter(bool))
def test_series_matches_generate_series(tables, start, stop, step):
    # Near the int64 ends the count stays small: a big range with a small step is cut short
    # by only looking at its first rows.
    if abs(stop - start) // abs(step) > 10_000:
        stop = start + step * 10_000
        if not -(2**63) <= stop < 2**63:
            return
    assert [v for (v,) in rows(tables.functions["series"](start, stop, step))] == series(start, stop, step)


def test_series_at_the_int64_ends_does_not_overflow(tables):
    top, bottom = 2**63 - 1, -(2**63)
    fn = tables.functions["series"]
    assert [v for (v,) in rows(fn(top - 2, top, 1))] == [top - 2, top - 1, top]
    assert [v for (v,) in rows(fn(top - 2, top, 5))] == [top - 2]
    assert [v for (v,) in rows(fn(bottom + 2, bottom, -1))] == [bottom + 2, bottom + 1, bottom]
    assert [v for (v,) in rows(fn(bottom, top, 2**62))] == series(bottom, top, 2**62)


def test_series_step_zero_is_an_error_naming_the_function(tables):
    with pytest.raises(wasmudf.GuestFailure, match=r"`series`.*step must not be 0"):
        tables.functions["series"](1, 10, 0)


text = st.text(alphabet=st.sampled_from(list("ab,;= \t-é€")), max_size=40)


@settings(max_examples=200, deadline=None)
@given(value=st.none() | text, sep=st.sampled_from([",", ";", "--", "é", " ", "ab"]))
def test_split_rows_matches_str_split(tables, value, sep):
    assert rows(tables.functions["split_rows"](value, sep)) == split_rows(value, sep)


def test_split_rows_refuses_an_empty_separator(tables):
    with pytest.raises(wasmudf.GuestFailure, match=r"`split_rows`.*separator must not be empty"):
        tables.functions["split_rows"]("a,b", "")


@settings(max_examples=200, deadline=None)
@given(value=text)
def test_parse_kv_matches_its_definition(tables, value):
    assert rows(tables.functions["parse_kv"](value)) == parse_kv(value)


def test_lateral_calls_keep_each_rows_output_apart(tables):
    texts = ["a,b", None, "", "c,,d"]
    got = rows(tables.functions["split_rows"].lateral(texts, [","] * len(texts)))
    want = [(i, *r) for i, t in enumerate(texts) for r in split_rows(t, ",")]
    assert got == want


def test_arguments_are_held_to_their_types(tables):
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`series` argument 2 must be int64"):
        tables.functions["series"](1, "10", 1)
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`series` takes 3 arguments, 2 given"):
        tables.functions["series"](1, 10)


def test_the_rows_of_one_call_are_limited():
    fn = wasmudf.load(TABLES, limits=wasmudf.Limits(table_rows=1000)).functions["series"]
    assert len(rows(fn(1, 1000, 1))) == 1000
    with pytest.raises(wasmudf.RowLimitExceeded, match=r"`series`.*more than Limits.table_rows = 1000"):
        rows(fn(1, 1001, 1))
    assert len(rows(fn(1, 5, 1))) == 5  # the instance is still good


# -- SQLite (apsw) ------------------------------------------------------------------------------


@pytest.fixture
def lite():
    con = apsw.Connection(":memory:")
    wasmudf.register(con, TABLES)
    yield con
    con.close()


def test_sqlite_calls_them_as_table_valued_functions(lite):
    assert lite.execute("SELECT * FROM series(1, 10, 3)").fetchall() == [(v,) for v in series(1, 10, 3)]
    assert lite.execute("SELECT ordinal, part FROM split_rows('a,,b', ',')").fetchall() == split_rows("a,,b", ",")
    assert lite.execute("SELECT key, value FROM parse_kv(' a = 1;x; b=2 ')").fetchall() == parse_kv(" a = 1;x; b=2 ")
    # The arguments are hidden columns, and constraints on them are the arguments.
    assert lite.execute("SELECT value FROM series WHERE arg1 = 5 AND arg2 = 1 AND arg3 = -2").fetchall() == [
        (5,),
        (3,),
        (1,),
    ]
    # The hidden columns read back the arguments SQLite passed.
    assert lite.execute("SELECT part, arg1, arg2 FROM split_rows('x;y', ';')").fetchall() == [
        ("x", "x;y", ";"),
        ("y", "x;y", ";"),
    ]
    assert lite.execute("SELECT count(*), sum(value) FROM series(1, 100000, 1)").fetchall() == [
        (100_000, 100_000 * 100_001 // 2)
    ]


def test_sqlite_lateral_join_calls_once_per_row(lite):
    data = [(1, "a,b"), (2, None), (3, ""), (4, "x,,y,z")]
    lite.execute("CREATE TABLE t(id INTEGER, x TEXT)")
    lite.executemany("INSERT INTO t VALUES (?, ?)", data)
    got = lite.execute(
        "SELECT t.id, s.ordinal, s.part FROM t, split_rows(t.x, ',') AS s ORDER BY t.id, s.ordinal"
    ).fetchall()
    assert got == [(i, *r) for i, x in data for r in split_rows(x, ",")]
    # SQLite's JSON functions read the parts back.
    got = lite.execute("SELECT json_group_array(part) FROM split_rows('p|q', '|')").fetchall()
    assert got == [('["p","q"]',)]


def test_sqlite_errors_name_the_function_and_leave_the_connection(lite):
    with pytest.raises(wasmudf.GuestFailure, match=r"`series`.*step must not be 0"):
        lite.execute("SELECT * FROM series(1, 2, 0)").fetchall()
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`series` takes 3 arguments; argument 3 is missing"):
        lite.execute("SELECT * FROM series(1, 2)").fetchall()
    assert lite.execute("SELECT count(*) FROM series(1, 3, 1)").fetchall() == [(3,)]
    assert list(wasmudf.table(lite, "split_rows", "a;b", ";")) == [(1, "a"), (2, "b")]


def test_sqlite_replace_and_unregister(lite):
    with pytest.raises(wasmudf.RegistrationError, match="already exists"):
        wasmudf.register(lite, TABLES)
    reg = wasmudf.register(lite, TABLES, replace=True)
    assert lite.execute("SELECT * FROM series(1, 2, 1)").fetchall() == [(1,), (2,)]
    reg.unregister()
    # A statement apsw cached before fails naming the function; a new one finds no table.
    with pytest.raises(wasmudf.UsageError, match="`series` was unregistered"):
        lite.execute("SELECT * FROM series(1, 2, 1)").fetchall()
    with pytest.raises(apsw.SQLError, match="no such table: series"):
        lite.execute("SELECT * FROM series(1, 3, 1)").fetchall()
    wasmudf.register(lite, TABLES)
    assert lite.execute("SELECT * FROM series(1, 2, 1)").fetchall() == [(1,), (2,)]


def test_sqlite_builtin_table_functions_are_not_replaced():
    con = apsw.Connection(":memory:")
    clash = wat.module(
        """
        (func (export "json_each__open") (param i32 i32) (result i32) (i32.const 64))
        (func (export "json_each__next") (param i32 i32 i32) (result i32) (i32.const 0))
        (func (export "json_each__close") (param i32))
        """,
        [{"name": "json_each", "kind": "table", "params": ["utf8"], "columns": [{"name": "v", "type": "int64"}]}],
    )
    with pytest.raises(wasmudf.RegistrationError, match="`json_each` is a built-in sqlite function"):
        wasmudf.register(con, clash, replace=True)
    assert con.execute("SELECT value FROM json_each('[7]')").fetchall() == [(7,)]


def test_python_sqlite3_says_it_has_no_table_functions(example_modules):
    import sqlite3

    con = sqlite3.connect(":memory:")
    with pytest.raises(wasmudf.RegistrationError, match=r"`series` is a table function.*no virtual tables.*apsw"):
        wasmudf.register(con, TABLES)
    # A module with other functions too: those are registered, and the warning says what was not.
    with pytest.warns(wasmudf.RegistrationWarning, match=r"`fizzbuzz_rows_zig` is a table function.*no virtual tables"):
        reg = wasmudf.register(con, example_modules["text"])
    assert "fizzbuzz_rows_zig" not in reg and "slugify" in reg
    assert con.execute("SELECT slugify('Crème brûlée')").fetchall() == [("creme-brulee",)]
    with pytest.raises(wasmudf.UsageError, match="no virtual tables"):
        wasmudf.table(con, "fizzbuzz_rows_zig", 3)


# -- DuckDB -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["native", "python"])
def test_duckdb_table_gives_a_relation(path):
    con = duckdb.connect()
    if path == "python":
        con.execute("SET allow_extension_repositories = 'forbidden'")  # keeps it off the native path
    wasmudf.register(con, TABLES)
    assert wasmudf.table(con, "series", 1, 10, 3).fetchall() == [(v,) for v in series(1, 10, 3)]
    assert wasmudf.table(con, "split_rows", "a,,b", ",").fetchall() == split_rows("a,,b", ",")
    assert wasmudf.table(con, "series", 1, 1_000_000, 1).aggregate("count(*), sum(value)").fetchall() == [
        (1_000_000, 1_000_000 * 1_000_001 // 2)
    ]
    with pytest.raises(wasmudf.UsageError, match="no table function `nope`"):
        wasmudf.table(con, "nope")
    reg = wasmudf.register(con, TABLES, replace=True)
    reg.unregister()
    with pytest.raises(wasmudf.UsageError, match="no table function `series`"):
        wasmudf.table(con, "series", 1, 2, 1)


def test_duckdb_native_table_functions_in_sql():
    from wasmudf.adapters import duckdb_native

    if duckdb_native.unavailable_reason() is not None:
        pytest.skip("DuckDB's native path needs the C accelerator (this is the pure-Python run)")
    con = duckdb.connect()
    assert wasmudf.register(con, TABLES).path == "native"
    assert con.execute("SELECT * FROM series(10, -10, -7)").fetchall() == [(v,) for v in series(10, -10, -7)]
    assert con.execute("SELECT * FROM split_rows('x--y----', '--')").fetchall() == split_rows("x--y----", "--")
    assert con.execute("SELECT key, value FROM parse_kv('k=v=w; ;z')").fetchall() == parse_kv("k=v=w; ;z")
    assert con.execute("SELECT count(*) FROM series(1, 10, NULL)").fetchall() == [(0,)]  # strict: no rows
    got = con.execute("SELECT count(*), sum(value), min(value), max(value) FROM series(1, 3000000, 1)").fetchall()
    assert got == [(3_000_000, 3_000_000 * 3_000_001 // 2, 1, 3_000_000)]
    # Several vectors of strings, checked against the reference row for row.
    text = ",".join(f"w{i}é" for i in range(5000))
    assert con.execute("SELECT ordinal, part FROM split_rows(?, ',')", [text]).fetchall() == split_rows(text, ",")
    with pytest.raises(duckdb.InvalidInputException, match=r"GuestFailure: `series`.*step must not be 0"):
        con.execute("SELECT * FROM series(1, 2, 0)").fetchall()
    con2 = duckdb.connect()
    wasmudf.register(con2, wasmudf.load(TABLES, limits=wasmudf.Limits(table_rows=10)))
    with pytest.raises(duckdb.InvalidInputException, match=r"RowLimitExceeded: `series`.*Limits.table_rows = 10"):
        con2.execute("SELECT * FROM series(1, 11, 1)").fetchall()
    assert con2.execute("SELECT count(*) FROM series(1, 10, 1)").fetchall() == [(10,)]


# -- the manifest ----------------------------------------------------------------------------------


def manifest(**fields) -> bytes:
    import json

    entry = {"name": "f", "kind": "table", "params": ["int64"], **fields}
    return json.dumps({"abi": 1, "functions": [entry]}).encode()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({}, r"'columns' must be a non-empty list"),
        ({"columns": []}, r"'columns' must be a non-empty list"),
        ({"columns": [{"name": "v"}]}, r"exactly 'name' and 'type'"),
        ({"columns": [{"name": "v", "type": "int128"}]}, r"unknown type 'int128'"),
        ({"columns": [{"name": "1v", "type": "int64"}]}, r"must match"),
        ({"columns": [{"name": "v", "type": "int64"}, {"name": "V", "type": "utf8"}]}, r"two columns are named"),
        ({"columns": [{"name": "arg1", "type": "int64"}]}, r"reserved for the arguments"),
        ({"columns": [{"name": "v", "type": "int64"}], "returns": "int64"}, r"'columns', not 'returns'"),
    ],
)
def test_the_manifest_checks_a_table_functions_columns(fields, error):
    with pytest.raises(wasmudf.ManifestError, match=error):
        parse_manifest(manifest(**fields))


def test_columns_belong_to_table_functions_only():
    import json

    doc = {"abi": 1, "functions": [{"name": "f", "kind": "scalar", "params": [], "returns": "int64",
                                    "columns": [{"name": "v", "type": "int64"}]}]}
    with pytest.raises(wasmudf.ManifestError, match="only allowed on table functions"):
        parse_manifest(json.dumps(doc).encode())


def test_a_table_function_needs_its_three_exports():
    wasm = wat.module(
        '(func (export "f__open") (param i32 i32) (result i32) (i32.const 64))',
        [{"name": "f", "kind": "table", "params": ["int64"], "columns": [{"name": "v", "type": "int64"}]}],
    )
    with pytest.raises(wasmudf.ExportError, match=r"'f__next' .*missing"):
        wasmudf.load(wasm)
