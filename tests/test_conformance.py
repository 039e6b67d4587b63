"""Every example UDF against its pure-Python reference: direct pyarrow calls, DuckDB, SQLite.

The same generated rows (hypothesis: NULLs, empty and non-ASCII strings, extreme integers,
NaN and infinities) go through all three paths.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
from typing import Any

import pyarrow as pa
import pytest
from conftest import EXAMPLES, connect
from engines import ENGINE_TRAITS, call_over_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from references import ARROW_TYPES, NESTED_ARROW_TYPES, REFERENCES

import wasmudf
from wasmudf import temporal

I64 = st.integers(-(2**63), 2**63 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)
F64 = st.floats(allow_nan=True, allow_infinity=True)
F32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
LATIN = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x17F), max_size=24)
BLOB = st.binary(max_size=48)
LAT = st.floats(-90, 90)
LON = st.floats(-180, 180)
CARD = st.text(alphabet="0123456789 ", max_size=20) | TEXT
DATES = st.dates() | st.sampled_from([datetime.date(1, 1, 1), datetime.date(9999, 12, 31), datetime.date(1969, 12, 31)])
NEAR_DATES = st.dates(datetime.date(1900, 1, 1), datetime.date(2100, 12, 31))
# From the second week of year 1: week_start of an earlier instant is before year 1.
TIMESTAMPS = st.datetimes(datetime.datetime(1, 1, 8)) | st.sampled_from([datetime.datetime(1969, 12, 31, 23, 59, 59, 999999)])

def scaled(digits: int, scale: int) -> st.SearchStrategy[decimal.Decimal]:
    """decimal(digits, scale) values, the largest ones among them."""
    top = 10**digits - 1
    unscaled = st.integers(-top, top) | st.sampled_from([top, -top, 0, 5, -5, 50, 150, 250])
    exact = decimal.Context(prec=100)  # the default context would round 38 digits to 28
    return unscaled.map(lambda u: decimal.Decimal(u).scaleb(-scale, context=exact))


POINT = st.none() | st.fixed_dictionaries({"lat": st.none() | LAT, "lon": st.none() | LON})
WORDS = st.text(alphabet=" \t\n\x0b\x0c\r\x1c\u3000\u00a0ab\u00e9\U0001f600", max_size=24)

SQL = {
    "int64": "BIGINT",
    "int32": "INTEGER",
    "float64": "DOUBLE",
    "float32": "FLOAT",
    "utf8": "VARCHAR",
    "binary": "BLOB",
    "bool": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    "decimal(38,6)": "DECIMAL(38,6)",
    "decimal(18,2)": "DECIMAL(18,2)",
    "list<float64>": "DOUBLE[]",
    "list<int64>": "BIGINT[]",
    "list<struct<lat: float64, lon: float64>>": "STRUCT(lat DOUBLE, lon DOUBLE)[]",
}

#: name → (module, strategies per argument)
CASES: dict[str, tuple[str, list[Any]]] = {
    "haversine_km": ("numeric", [LAT, LON, LAT, LON]),
    "clamp": ("numeric", [F64, F64, F64]),
    "safe_div": ("numeric", [I64, I64 | st.sampled_from([0, -1])]),
    "add_i64": ("numeric", [I64, I64]),
    "gcd_i32": ("numeric", [I32, I32]),
    "lerp_f32": ("numeric", [F32, F32, F32]),
    "is_finite": ("numeric", [F64]),
    "coalesce_f64": ("numeric", [F64, F64]),
    "edit_distance": ("text", [TEXT | LATIN, TEXT | LATIN]),
    "lev_distance": ("strings", [TEXT | LATIN, TEXT | LATIN]),
    "collatz_steps": ("rust", [st.integers(-5, 10**6) | st.sampled_from([1, 27, 837799])]),
    "title_case": ("rust", [TEXT | LATIN]),
    "fizzbuzz_rs": ("rust", [I64]),
    "fizzbuzz_c": ("strings", [I64]),
    "fizzbuzz_zig": ("text", [I64]),
    "fizzbuzz": ("assemblyscript", [I64]),
    "celsius_to_kelvin": ("assemblyscript", [F64]),
    "ascii_fold": ("text", [LATIN | TEXT]),
    "slugify": ("text", [LATIN | TEXT]),
    "luhn_check": ("text", [CARD]),
    "crc32": ("binary", [BLOB]),
    "fnv1a64": ("binary", [BLOB]),
    "hex_lower": ("binary", [BLOB]),
    "xor_bytes": ("binary", [BLOB, BLOB]),
    "jaro_winkler": ("similarity", [TEXT | LATIN | st.sampled_from(["MARTHA", "DWAYNE", "DIXON"]), TEXT | LATIN]),
    "iso_week": ("dates", [DATES]),
    "last_day_of_month": ("dates", [DATES]),
    "business_days_between": ("dates", [NEAR_DATES, NEAR_DATES]),
    "hour_of": ("dates", [TIMESTAMPS]),
    "week_start": ("dates", [TIMESTAMPS.map(lambda t: t.replace(tzinfo=datetime.UTC))]),
    "round_cents": ("money", [scaled(38, 6)]),
    # basis points down to -20000 keep |result| <= |amount|: every amount fits (an overflow is
    # tested on its own, with positive basis points, in test_nested.py)
    "add_tax": ("money", [scaled(18, 2), st.integers(-20000, 0) | st.sampled_from([0, -1, -825, -10000])]),
    "median_of": ("nested", [st.lists(st.none() | F64, max_size=8)]),
    "top_k": ("nested", [st.lists(st.none() | I64, max_size=8), st.integers(-2, 10) | I32]),
    "split_words": ("nested", [WORDS | TEXT]),
    "bbox": ("nested", [st.lists(POINT, max_size=6)]),
    "soundex_code": ("similarity", [LATIN | st.sampled_from(["Robert", "Rupert", "Tymczak", "Pfister", "Ashcraft"])]),
}


def rows_of(strategies: list[Any]) -> st.SearchStrategy[list[tuple]]:
    row = st.tuples(*[st.none() | s for s in strategies])
    return st.lists(row, max_size=12)


def expected(name: str, spec: wasmudf.FunctionSpec, row: tuple) -> Any:
    if spec.strict and None in row:
        return None
    return REFERENCES[name](*row)


def same(a: Any, b: Any, name: str) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        tol = 1e-9 if name == "haversine_km" else 0.0
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol) or a == b
    if isinstance(a, (bytes, bytearray, memoryview)):
        return bytes(a) == bytes(b)
    return a == b


def normalize(value: Any, rtype: str) -> Any:
    if value is None:
        return None
    if rtype == "bool":
        return bool(value)  # SQLite has no booleans: 0/1
    if rtype in ("date", "timestamp", "timestamptz") and isinstance(value, str):
        return temporal.from_raw(rtype, temporal.to_raw(rtype, value))  # SQLite's ISO text
    if rtype.startswith("decimal") and isinstance(value, str):
        return decimal.Decimal(value)  # SQLite's exact text
    if rtype.startswith(("list", "struct")) and isinstance(value, str):
        return json.loads(value)  # SQLite's JSON text
    return value


def arrow_type(name: str) -> pa.DataType:
    return ARROW_TYPES[name] if name in ARROW_TYPES else NESTED_ARROW_TYPES[name]


def test_every_example_function_has_a_case(example_modules):
    names = {n for m in example_modules.values() for n, f in m.functions.items() if f.kind == "scalar"}
    assert names == set(CASES), "add a conformance case (and a reference) for each example"
    assert len(names) >= 12


@pytest.mark.parametrize("name", sorted(CASES))
def test_calls_match_reference(name, conformance_engine, example_modules):
    module_name, strategies = CASES[name]
    module = example_modules[module_name]
    fn = module.functions[name]
    types = [t.name for t in fn.spec.params]
    trait = ENGINE_TRAITS[conformance_engine]
    con = connect(conformance_engine) if trait.sql else None
    if con is not None:
        wasmudf.register(con, module)

    @settings(
        max_examples=25 if trait.sql else 60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(rows_of(strategies))
    def check(rows):
        if not trait.keeps_nan:
            # SQLite stores NaN as NULL: the function sees what the database holds.
            rows = [tuple(None if isinstance(v, float) and math.isnan(v) else v for v in r) for r in rows]
        table = pa.table(
            {f"c{i}": pa.array([r[i] for r in rows], type=arrow_type(t)) for i, t in enumerate(types)}
        )
        if con is None:
            got = fn(*table.columns).to_pylist()
        else:
            got = call_over_rows(con, name, table, [SQL[t] for t in types])
        for row, value in zip(rows, got, strict=True):
            want = expected(name, fn.spec, row)
            if not trait.keeps_nan and isinstance(want, float) and math.isnan(want):
                want = None  # and SQLite returns a NaN result as NULL
            assert same(normalize(value, fn.spec.returns.name), want, name), (row, value)

    try:
        check()
    finally:
        if con is not None:
            con.close()


@settings(max_examples=60, deadline=None)
@given(
    a=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=40, max_size=300),
    b=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=40, max_size=300),
)
def test_lev_distance_on_long_strings(a: str, b: str) -> None:
    # Strings over 64 bytes take the arena instead of the stack buffers in strings.c.
    fn = wasmudf.load(EXAMPLES["strings"]).functions["lev_distance"]
    assert fn(pa.array([a, b[:10]]), pa.array([b, a])).to_pylist() == [
        REFERENCES["lev_distance"](a, b),
        REFERENCES["lev_distance"](b[:10], a),
    ]
