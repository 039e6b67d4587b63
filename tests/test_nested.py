"""Decimals, lists and structs beyond the conformance suite: the type names a manifest may
use, the distinct_sorted aggregate on every engine (its states moving between instances),
add_tax where it overflows, pandas and polars in and out, and SQLite's JSON and exact text."""

from __future__ import annotations

import decimal
import json

import apsw
import pyarrow as pa
import pytest
from conftest import EXAMPLES, build_functions, connect
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


# -- every SDK ------------------------------------------------------------------------------

SDK_SOURCES = {
    "c": r"""#include "wasmudf.h"
static double median_of(wasmudf_list xs) {
    double *v = (double *)(uintptr_t)wasmudf_alloc(xs.len * 8 + 8, 8);
    uint32_t n = 0;
    for (uint32_t i = 0; i < xs.len; i++)
        if (wasmudf_list_valid(xs, i)) {
            double x = wasmudf_list_get(float64, xs, i);
            uint32_t j = n++;
            for (; j > 0 && v[j - 1] > x; j--) v[j] = v[j - 1];
            v[j] = x;
        }
    if (n == 0) { wasmudf_set_null(); return 0; }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
WASMUDF_SCALAR(median_of, float64, "median", list(float64))
static wasmudf_list split_words(wasmudf_str s) {
    wasmudf_str *w = (wasmudf_str *)(uintptr_t)wasmudf_alloc((s.len / 2 + 1) * sizeof(wasmudf_str), 4);
    uint32_t n = 0;
    for (uint32_t i = 0; i < s.len;) {
        while (i < s.len && (s.ptr[i] == ' ' || (s.ptr[i] >= '\t' && s.ptr[i] <= '\r'))) i++;
        uint32_t start = i;
        while (i < s.len && !(s.ptr[i] == ' ' || (s.ptr[i] >= '\t' && s.ptr[i] <= '\r'))) i++;
        if (i > start) w[n++] = wasmudf_str_of(s.ptr + start, i - start);
    }
    return wasmudf_list_of(w, n);
}
WASMUDF_SCALAR(split_words, list(utf8), "words", utf8)
static wasmudf_decimal cents(wasmudf_decimal x) { return x / 10000; }
WASMUDF_SCALAR(cents, decimal(38,2), "truncated to cents", decimal(38,6))
""",
    "zig": r"""const std = @import("std");
const udf = @import("wasmudf");
const Cents = udf.Decimal(38, 2);
fn median_of(xs: udf.List(f64)) ?f64 {
    const v = udf.allocator.alloc(f64, xs.len) catch return null;
    var n: usize = 0;
    var i: u32 = 0;
    while (i < xs.len) : (i += 1) if (xs.at(i)) |x| { v[n] = x; n += 1; };
    if (n == 0) return null;
    std.mem.sort(f64, v[0..n], {}, std.sort.asc(f64));
    return if (n % 2 == 1) v[n / 2] else (v[n / 2 - 1] + v[n / 2]) / 2;
}
fn split_words(s: []const u8) !udf.List([]const u8) {
    var words = try udf.allocator.alloc([]const u8, s.len / 2 + 1);
    var n: usize = 0;
    var it = std.mem.tokenizeAny(u8, s, " \t\n\x0b\x0c\r");
    while (it.next()) |w| { words[n] = w; n += 1; }
    return udf.List([]const u8).of(words[0..n]);
}
fn cents(x: udf.Decimal(38, 6)) Cents { return Cents.of(@divTrunc(x.unscaled(), 10000)); }
const Point = struct { lat: ?f64, lon: ?f64 };
const Bounds = struct { min_lat: f64, min_lon: f64, max_lat: f64, max_lon: f64 };
fn bbox(points: udf.List(Point)) ?Bounds {
    var b: ?Bounds = null;
    var i: u32 = 0;
    while (i < points.len) : (i += 1) {
        const p = points.at(i) orelse continue;
        const y = p.lat orelse continue;
        const x = p.lon orelse continue;
        if (b) |*c| {
            c.min_lat = @min(c.min_lat, y); c.min_lon = @min(c.min_lon, x);
            c.max_lat = @max(c.max_lat, y); c.max_lon = @max(c.max_lon, x);
        } else b = .{ .min_lat = y, .min_lon = x, .max_lat = y, .max_lon = x };
    }
    return b;
}
comptime {
    udf.module(.{
        udf.scalar("median_of", median_of, .{}),
        udf.scalar("split_words", split_words, .{}),
        udf.scalar("cents", cents, .{}),
        udf.scalar("bbox", bbox, .{}),
    });
}
""",
    "rs": r"""use wasmudf::{scalar, sql_struct, sql_type, Decimal, List};
sql_type!(floats = "list<float64>" as List<f64>);
sql_type!(words = "list<utf8>" as List<String>);
sql_type!(micros = "decimal(38,6)" as Decimal);
sql_type!(cents = "decimal(38,2)" as Decimal);
sql_struct!(Point { lat: float64, lon: float64 });
sql_struct!(Bounds { min_lat: float64, min_lon: float64, max_lat: float64, max_lon: float64 });
sql_type!(points = "list<struct<lat: float64, lon: float64>>" as List<Point>);
fn median_of(xs: List<f64>) -> Option<f64> {
    let mut v = xs.values();
    if v.is_empty() { return None; }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}
scalar!(median_of(floats) -> float64, "median");
fn split_words(s: &str) -> List<String> {
    List::of(s.split(|c: char| c.is_ascii_whitespace() || c == '\x0b').filter(|w| !w.is_empty()).map(String::from).collect())
}
scalar!(split_words(utf8) -> words, "words");
fn cents_of(x: Decimal) -> Decimal { Decimal(x.0 / 10000) }
scalar!(cents_of(micros) -> cents, "truncated to cents");
fn bbox(ps: List<Point>) -> Option<Bounds> {
    let pts: Vec<(f64, f64)> = ps.values().into_iter().filter_map(|p| Some((p.lat?, p.lon?))).collect();
    let first = *pts.first()?;
    let mut b = Bounds { min_lat: Some(first.0), min_lon: Some(first.1), max_lat: Some(first.0), max_lon: Some(first.1) };
    for (y, x) in pts {
        b.min_lat = Some(b.min_lat.unwrap().min(y)); b.min_lon = Some(b.min_lon.unwrap().min(x));
        b.max_lat = Some(b.max_lat.unwrap().max(y)); b.max_lon = Some(b.max_lon.unwrap().max(x));
    }
    Some(b)
}
scalar!(bbox(points) -> Bounds, "bounds");
""",
    "ts": r"""// @wasmudf scalar cents(decimal(18,6)) -> decimal(18,2) "truncated to cents"
export function cents(x: i64): i64 { return x / 10000; }
""",
}


@pytest.mark.parametrize("suffix", list(SDK_SOURCES))
def test_every_sdk_declares_decimals_lists_and_structs(suffix, tmp_path):
    from references import bbox, median_of, split_words

    fns = build_functions(tmp_path, f"n.{suffix}", SDK_SOURCES[suffix])
    cents = fns.get("cents") or fns["cents_of"]
    for x in ("1.239999", "-1.239999", "0.000001", "99999999999.999999"):
        assert cents.call_row(D(x)) == D(x).quantize(D("0.01"), rounding=decimal.ROUND_DOWN)
    if suffix == "ts":
        assert cents.spec.signature() == "cents(decimal(18,6)) -> decimal(18,2)"
        return
    lists = [[1.0, None, 3.0, 2.0], [], None, [4.0, 1.0], [None]]
    assert fns["median_of"](pa.array(lists, pa.list_(pa.float64()))).to_pylist() == [
        None if xs is None else median_of(xs) for xs in lists
    ]
    texts = ["  hello   wide\tworld ", "", None, "x", "é\u3000ü\x0bv"]
    assert fns["split_words"](pa.array(texts)).to_pylist() == [None if t is None else split_words(t) for t in texts]
    if "bbox" in fns:
        points = [[{"lat": 1.0, "lon": 2.0}, {"lat": -1.0, "lon": 5.0}, None], [], None, [{"lat": None, "lon": 1.0}]]
        got = fns["bbox"](pa.array(points, fns["bbox"].spec.params[0].arrow)).to_pylist()
        assert got == [None if p is None else bbox(p) for p in points]


def test_lists_larger_than_one_call_are_split_across_calls(nested):
    import numpy as np

    from wasmudf.columns import BATCH_VARLEN_BYTES, row_ranges

    rows = [list(np.linspace(-i, i, 1500 + i % 7)) for i in range(3000)]  # about 36 MB of elements
    lists = pa.array(rows, pa.list_(pa.float64()))
    ranges = list(row_ranges([lists], len(lists)))
    assert len(ranges) > 1 and ranges[0][0] == 0 and ranges[-1][1] == len(lists)
    assert all(lists.slice(a, b - a).nbytes <= 1.1 * BATCH_VARLEN_BYTES for a, b in ranges)
    # One call over the whole column would need its 36 MB in the frame and as much again for
    # the guest's sorted copies: over 48 MiB of memory, which split calls stay under.
    fn = wasmudf.load(EXAMPLES["nested"], limits=wasmudf.Limits(memory_bytes=48 * 2**20)).functions["median_of"]
    assert fn(lists).to_pylist() == [float(np.median(r)) for r in rows]
