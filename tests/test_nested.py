"""Decimals, lists and structs beyond the conformance suite: the type names a manifest may
use, the distinct_sorted aggregate on every engine (its states moving between instances),
add_tax where it overflows, pandas and polars in and out, and SQLite's JSON and exact text."""

from __future__ import annotations

import decimal
import json

import apsw
import pyarrow as pa
import pytest
from conftest import EXAMPLES, connect
from engines import ENGINE_TRAITS, query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from references import add_tax, distinct_sorted, round_cents

import wasmudf
from wasmudf.abi import parse_type

D = decimal.Decimal
I64 = st.integers(-(2**63), 2**63 - 1)


@pytest.fixture(scope="module")
def nested():
    return wasmudf.load(EXAMPLES["nested"])


@pytest.fixture(scope="module")
def money():
    return wasmudf.load(EXAMPLES["money"])


# -- type names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "arrow"),
    [
        ("decimal(38, 6)", "decimal(38,6)", pa.decimal128(38, 6)),
        ("decimal(1,0)", "decimal(1,0)", pa.decimal128(1, 0)),
        ("list<list<utf8>>", "list<list<utf8>>", pa.list_(pa.list_(pa.string()))),
        ("struct<a:int32,B : list<date>>", "struct<a: int32, B: list<date>>",
         pa.struct([("a", pa.int32()), ("B", pa.list_(pa.date32()))])),
    ],
)
def test_type_names_parse_to_their_arrow_types(text, canonical, arrow):
    t = parse_type(text)
    assert (t.name, t.arrow) == (canonical, arrow)
    assert parse_type(t.name) is t  # one AbiType per type


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("decimal(39,0)", "1 <= p <= 38"),
        ("decimal(5,6)", "0 <= s <= p"),
        ("list<>", "unknown type '>'"),
        ("list<int32", "ends early"),
        ("struct<a: int32, A: utf8>", "two fields are named 'A'"),
        ("struct<>", "expected a field name, found '>'"),
        ("list<" * 8 + "int32" + ">" * 8, "at most 8 deep"),
        ("map<utf8, int32>", "unknown type 'map'"),
        ("int32 int32", "unexpected 'int32'"),
    ],
)
def test_bad_type_names_are_refused_with_the_reason(text, problem):
    mod = wat_module([{"name": "f", "kind": "scalar", "params": [text], "returns": "int32"}])
    with pytest.raises(wasmudf.ManifestError, match=rf"function 'f': params\[0\] .* is not a type: .*({problem})"):
        wasmudf.load(mod)


def test_table_functions_refuse_nested_columns_for_now():
    mod = wat_module([{"name": "t", "kind": "table", "params": ["int64"],
                       "columns": [{"name": "xs", "type": "list<int64>"}]}])
    with pytest.raises(wasmudf.ManifestError, match=r"table functions take .* list<int64> is not one of them yet"):
        wasmudf.load(mod)


def wat_module(functions):
    import wat

    return wat.module("", functions)


# -- distinct_sorted ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(parts=st.lists(st.lists(st.none() | I64 | st.integers(-3, 3), max_size=30), min_size=1, max_size=4))
def test_distinct_sorted_states_merge_across_instances(nested, parts):
    fn = nested.functions["distinct_sorted"]
    moved = []
    for part in parts:  # each part in a state of its own, moved out as bytes
        state = fn.start()
        state.update(pa.array(part, pa.int64()))
        moved.append(state.serialize())
    whole = fn.restore(moved[0])
    for data in moved[1:]:
        whole.merge(fn.restore(data))
    assert whole.finish() == distinct_sorted([v for p in parts for v in p])


def test_distinct_sorted_in_group_by_on_every_engine(conformance_engine, nested):
    trait = ENGINE_TRAITS[conformance_engine]
    rows = [(g, v) for g in range(5) for v in [g * 7 % 5, None, -(2**63), 2**63 - 1, g, g * 2, g * 7 % 5]] + [(9, None)]
    groups: dict[int, list] = {}
    for g, v in rows:
        groups.setdefault(g, []).append(v)
    want = {g: distinct_sorted(vs) for g, vs in groups.items()}
    fn = nested.functions["distinct_sorted"]
    if not trait.sql:
        table = fn.group_by(pa.array([g for g, _ in rows]), pa.array([v for _, v in rows], pa.int64()))
        got = dict(zip(table.column("key").to_pylist(), table.column("distinct_sorted").to_pylist()))
        assert got == want
        return
    con = connect(conformance_engine)
    wasmudf.register(con, nested)
    query(con, "CREATE TABLE t (g INTEGER, v BIGINT)")
    for g, v in rows:
        query(con, "INSERT INTO t VALUES (?, ?)", (g, v))
    got = {g: json.loads(v) if isinstance(v, str) else v for g, v in query(con, "SELECT g, distinct_sorted(v) FROM t GROUP BY g")}
    assert got == want
    con.close()


# -- money ----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    amount=st.integers(-(10**15), 10**15).map(lambda u: D(u).scaleb(-2)),
    basis_points=st.integers(0, 2**31 - 10001) | st.sampled_from([825, 1, 5, 10000]),
)
def test_add_tax_with_positive_basis_points(money, amount, basis_points):
    fn = money.functions["add_tax"]
    want = add_tax(amount, basis_points)
    if abs(want) >= 10**16:
        with pytest.raises(wasmudf.GuestFailure, match=r"`add_tax`.*does not fit decimal\(18,2\)"):
            fn.call_row(amount, basis_points)
        return
    assert fn.call_row(amount, basis_points) == want


def test_add_tax_overflow_is_a_clear_sql_error_and_the_connection_survives(money):
    con = apsw.Connection(":memory:")
    wasmudf.register(con, money)
    con.execute("CREATE TABLE t(x TEXT); INSERT INTO t VALUES ('9999999999999999.99')")
    with pytest.raises(wasmudf.GuestFailure, match=r"`add_tax`.*does not fit decimal\(18,2\)"):
        con.execute("SELECT add_tax(x, 10000) FROM t").fetchall()
    assert con.execute("SELECT add_tax(x, -10000), round_cents('0.125') FROM t").fetchall() == [("0.00", "0.12")]


def test_sqlite_decimals_are_exact_text_both_ways(money):
    con = apsw.Connection(":memory:")
    wasmudf.register(con, money)
    # A REAL argument counts at its shortest decimal form (0.1 is 0.1, not 0.1000000000000000055…).
    assert con.execute("SELECT round_cents(0.1), round_cents(2), round_cents('-0.005'), typeof(round_cents(1))").fetchall() == [
        ("0.10", "2.00", "0.00", "text")
    ]
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`round_cents` argument 1 \(decimal\(38,6\)\): 1.0000001 has more than 6 digits"):
        con.execute("SELECT round_cents('1.0000001')").fetchall()
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`round_cents` argument 1 must be decimal\(38,6\), got TEXT 'ten'"):
        con.execute("SELECT round_cents('ten')").fetchall()
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`round_cents` argument 1 .*out of range|more than 32 digits before"):
        con.execute("SELECT round_cents('1e40')").fetchall()


# -- lists and structs in SQLite and in dataframes ---------------------------------------


def test_sqlite_reads_list_and_struct_results_with_its_json_functions(nested):
    con = apsw.Connection(":memory:")
    wasmudf.register(con, nested)
    rows = con.execute(
        """SELECT json_extract(top_k('[3, null, 10, -1]', 2), '$[0]'), json_array_length(split_words(' a b  c ')),
                  json_extract(bbox('[{"lat": 1.5, "lon": 2}, null, {"lat": -3, "lon": null}]'), '$.max_lon'),
                  median_of(json_array(1, 2, 3, 10))"""
    ).fetchall()
    assert rows == [(10, 3, 2.0, 2.5)]
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`median_of` argument 1 \(list<float64>\): JSON text that does not parse"):
        con.execute("SELECT median_of('[1, 2')").fetchall()
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`bbox` argument 1 .*has no field 'x'"):
        con.execute("""SELECT bbox('[{"lat": 1, "x": 2}]')""").fetchall()


def test_pandas_and_polars_in_and_out(nested, money):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    round_fn, median_fn = money.functions["round_cents"], nested.functions["median_of"]
    got = round_fn(pd.Series([D("1.005"), None, D("-2.675")]))
    assert isinstance(got, pd.Series)
    assert list(got) == [round_cents(D("1.005")), None, round_cents(D("-2.675"))]
    got = round_fn(pl.Series([D("0.125"), D("0.135")], dtype=pl.Decimal(38, 6)))
    assert isinstance(got, pl.Series) and got.to_list() == [D("0.12"), D("0.14")]
    got = median_fn(pl.Series([[1.0, 5.0, 2.0], [], None]))
    assert isinstance(got, pl.Series) and got.to_list() == [2.0, None, None]
    got = median_fn(pd.Series([[4.0, 1.0], None]))
    assert isinstance(got, pd.Series) and got.iloc[0] == 2.5 and pd.isna(got.iloc[1])
