"""Dates and timestamps (ABI types date, timestamp, timestamptz): udfs/dates against Python
references, directly (pyarrow, Python values, ISO text), on DuckDB's two paths and on SQLite
(apsw and sqlite3, ISO-8601 text in and out), with the extreme dates and negative timestamps."""

from __future__ import annotations

import datetime as dt
import sqlite3

import apsw
import duckdb
import pyarrow as pa
import pytest
from conftest import ROOT, build_functions
from hypothesis import given, settings
from hypothesis import strategies as st
from references import business_days_between, hour_of, iso_week, last_day_of_month, week_start

import wasmudf
from wasmudf import temporal

DATES = ROOT / "udfs" / "dates" / "dates.wasm"
UTC = dt.UTC

# The references (from each function's definition) are in references.py.

dates = st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31))
near_dates = st.dates(min_value=dt.date(1960, 1, 1), max_value=dt.date(2040, 12, 31))
# week_start of 0001-01-01 would be a Monday before year 1: keep a week's margin.
timestamps = st.datetimes(min_value=dt.datetime(1, 1, 8), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999))


@pytest.fixture(scope="module")
def fns():
    return wasmudf.load(DATES).functions


# -- direct calls -----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(d=dates, t=timestamps)
def test_python_values_match_the_references(fns, d, t):
    assert fns["iso_week"].call_row(d) == iso_week(d)
    assert fns["last_day_of_month"].call_row(d) == last_day_of_month(d)
    assert fns["hour_of"].call_row(t) == hour_of(t)
    assert fns["week_start"].call_row(t.replace(tzinfo=UTC)) == week_start(t.replace(tzinfo=UTC))


@settings(max_examples=150, deadline=None)
@given(a=near_dates, b=near_dates)
def test_business_days_between_matches(fns, a, b):
    assert fns["business_days_between"].call_row(a, b) == business_days_between(a, b)


def test_arrow_columns_with_nulls_and_the_extremes(fns):
    days = [dt.date(1, 1, 1), dt.date(9999, 12, 31), None, dt.date(1970, 1, 1), dt.date(1969, 12, 31)]
    got = fns["last_day_of_month"](pa.array(days, pa.date32()))
    assert got.type == pa.date32()
    assert got.to_pylist() == [None if d is None else last_day_of_month(d) for d in days]
    stamps = [dt.datetime(1969, 12, 31, 23, 59, 59, 999999), dt.datetime(1900, 3, 1, 5), None]
    assert fns["hour_of"](pa.array(stamps, pa.timestamp("us"))).to_pylist() == [23, 5, None]
    instants = pa.array([dt.datetime(2026, 12, 6, 23, 0, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
    got = fns["week_start"](instants)
    assert got.type == pa.timestamp("us", tz="UTC")
    assert got.to_pylist() == [dt.datetime(2026, 11, 30, tzinfo=UTC)]


def test_other_units_and_time_zones_are_converted(fns):
    # An instant is one instant whatever zone it is written in, and seconds become microseconds.
    from zoneinfo import ZoneInfo

    monday_in_berlin = dt.datetime(2026, 11, 30, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # Sunday in UTC
    berlin = pa.array([monday_in_berlin], pa.timestamp("s", tz="Europe/Berlin"))
    assert fns["week_start"](berlin).to_pylist() == [dt.datetime(2026, 11, 23, tzinfo=UTC)]


def test_iso_text_is_a_date_and_bad_text_names_the_argument(fns):
    assert fns["iso_week"].call_row("2026-12-02") == 49
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`iso_week` argument 1 must be date, got TEXT '2026-13-02'"):
        fns["iso_week"].call_row("2026-13-02")
    with pytest.raises(wasmudf.ArgumentTypeError, match=r"`hour_of` argument 1 must be timestamp"):
        fns["hour_of"].call_row(dt.date(2026, 1, 1))  # a date is not a timestamp


def test_the_conversions_round_trip_at_the_ends():
    for d in (dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1970, 1, 1)):
        assert temporal.from_raw("date", temporal.to_raw("date", d)) == d
    for t in (dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999), dt.datetime(1969, 12, 31, 23, 59)):
        assert temporal.from_raw("timestamp", temporal.to_raw("timestamp", t)) == t
    assert temporal.to_raw("timestamptz", "1970-01-01 01:00:00+01:00") == 0
    assert temporal.iso_text(dt.datetime(2026, 12, 2, 14, 30, 0, 123456)) == "2026-12-02 14:30:00.123456"
    assert temporal.iso_text(dt.datetime(2026, 12, 2, 14, 30, tzinfo=UTC)) == "2026-12-02 14:30:00+00:00"


# -- DuckDB -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["native", "python"])
def test_duckdb_dates_match_its_own_functions(path):
    con = duckdb.connect()
    if path == "python":
        con.execute("SET allow_extension_repositories = 'forbidden'")
    wasmudf.register(con, DATES)
    con.execute(
        "CREATE TABLE d AS SELECT DATE '0001-01-01' + (i * 7919 % 3652058)::INT AS day, "
        "TIMESTAMP '1900-01-01' + to_microseconds(i * 7777777777) AS ts FROM range(20000) r(i)"
    )
    mismatches = con.execute(
        "SELECT count(*) FROM d WHERE iso_week(day) <> weekofyear(day) "
        "OR last_day_of_month(day) <> last_day(day) OR hour_of(ts) <> hour(ts) "
        "OR week_start(ts::TIMESTAMPTZ) <> date_trunc('week', ts)::TIMESTAMPTZ"
    ).fetchall()
    assert mismatches == [(0,)]
    got = con.execute("SELECT business_days_between(DATE '2026-12-01', DATE '2026-11-01'), iso_week(NULL::DATE)").fetchall()
    assert got == [(-business_days_between(dt.date(2026, 11, 1), dt.date(2026, 12, 1)), None)]


# -- SQLite -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["apsw", "sqlite3"])
def test_sqlite_takes_and_gives_iso_text(kind):
    con = apsw.Connection(":memory:") if kind == "apsw" else sqlite3.connect(":memory:")
    wasmudf.register(con, DATES)
    got = con.execute(
        "SELECT iso_week('2026-12-02'), last_day_of_month('2024-02-10'), hour_of('1969-12-31 22:30:00.5'), "
        "week_start('2026-12-02 14:30:00+00:00'), week_start('2026-11-30T01:00:00+02:00'), "
        "last_day_of_month(NULL)"
    ).fetchall()
    assert got == [(49, "2024-02-29", 22, "2026-11-30 00:00:00+00:00", "2026-11-23 00:00:00+00:00", None)]
    # SQLite's own date functions read what comes back.
    assert con.execute("SELECT date(last_day_of_month('2026-02-01'), '+1 day')").fetchall() == [("2026-03-01",)]
    error = wasmudf.ArgumentTypeError if kind == "apsw" else sqlite3.OperationalError
    with pytest.raises(error) as caught:
        con.execute("SELECT iso_week('02/12/2026')").fetchall()
    assert "`iso_week` argument 1 must be date, got TEXT '02/12/2026'" in str(wasmudf.error_from(caught.value))


# -- the SDKs -------------------------------------------------------------------------------------

SDK_SOURCES = {
    "c": """#include "wasmudf.h"
static wasmudf_date days_after(wasmudf_date d, int32_t n) { return d + n; }
WASMUDF_SCALAR(days_after, date, "d + n days", date, int32)
static wasmudf_timestamp noon_of(wasmudf_date d) { return (int64_t)d * 86400000000LL + 43200000000LL; }
WASMUDF_SCALAR(noon_of, timestamp, "noon of the day", date)
""",
    "zig": """const udf = @import("wasmudf");
fn days_after(d: udf.Date, n: i32) udf.Date {
    return .{ .days = d.days + n };
}
fn noon_of(d: udf.Date) udf.Timestamp {
    return .{ .micros = @as(i64, d.days) * 86400000000 + 43200000000 };
}
comptime {
    udf.module(.{
        udf.scalar("days_after", days_after, .{ .doc = "d + n days" }),
        udf.scalar("noon_of", noon_of, .{ .doc = "noon of the day" }),
    });
}
""",
    "rs": """use wasmudf::{scalar, Date, Timestamp};
fn days_after(d: Date, n: i32) -> Date { Date(d.0 + n) }
scalar!(days_after(date, int32) -> date, "d + n days");
fn noon_of(d: Date) -> Timestamp { Timestamp(d.0 as i64 * 86_400_000_000 + 43_200_000_000) }
scalar!(noon_of(date) -> timestamp, "noon of the day");
""",
    "ts": """// @wasmudf scalar days_after(date, int32) -> date "d + n days"
export function days_after(d: i32, n: i32): i32 { return d + n; }
// @wasmudf scalar noon_of(date) -> timestamp "noon of the day"
export function noon_of(d: i32): i64 { return <i64>d * 86400000000 + 43200000000; }
""",
}


@pytest.mark.parametrize("suffix", list(SDK_SOURCES))
def test_every_sdk_declares_dates_and_timestamps(suffix, tmp_path):
    fns = build_functions(tmp_path, f"d.{suffix}", SDK_SOURCES[suffix])
    assert fns["days_after"].spec.signature() == "days_after(date, int32) -> date"
    for day in (dt.date(1, 1, 1), dt.date(1969, 12, 31), dt.date(2026, 12, 2), dt.date(9999, 11, 30)):
        assert fns["days_after"].call_row(day, 30) == day + dt.timedelta(days=30)
        assert fns["noon_of"].call_row(day) == dt.datetime(day.year, day.month, day.day, 12)
