"""Dates and timestamps as the ABI stores them, and as Python and SQLite see them.

In linear memory a ``date`` is an int32 of days since 1970-01-01, a ``timestamp`` an int64 of
microseconds since 1970-01-01 00:00 (no time zone) and a ``timestamptz`` an int64 of
microseconds since the epoch, UTC: Arrow's date32, timestamp[us] and timestamp[us, UTC], and
DuckDB's DATE, TIMESTAMP and TIMESTAMPTZ, so those engines hand their buffers over as they are.
Python values are ``datetime.date`` / ``datetime.datetime``; SQLite has no such types, so
there they are ISO-8601 text: ``'2026-12-02'``, ``'2026-12-02 14:30:00.123456'`` and, for
``timestamptz``, ``'2026-12-02 14:30:00+00:00'`` (the fraction only when it is not zero).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

EPOCH_DATE = dt.date(1970, 1, 1)
EPOCH = dt.datetime(1970, 1, 1)
EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ONE_US = dt.timedelta(microseconds=1)


def to_raw(kind: str, value: Any) -> int:
    """A Python value (or ISO text) as the ABI's integer for ``kind``.

    Raises:
        TypeError: a value of another type, or text that is not ISO-8601 of this kind.
    """
    if kind == "date":
        if isinstance(value, str):
            value = _parse(dt.date.fromisoformat, value)
        if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
            raise TypeError(kind)
        return (value - EPOCH_DATE).days
    if isinstance(value, str):
        value = _parse(dt.datetime.fromisoformat, value.replace("Z", "+00:00"))
    if not isinstance(value, dt.datetime):
        raise TypeError(kind)
    if value.tzinfo is not None:
        return (value - EPOCH_UTC) // ONE_US  # an instant: its UTC time, for either kind
    if kind == "timestamptz":
        return (value.replace(tzinfo=dt.UTC) - EPOCH_UTC) // ONE_US  # naive means UTC
    return (value - EPOCH) // ONE_US


def _parse(parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except ValueError:
        raise TypeError(text) from None


def from_raw(kind: str, raw: int) -> dt.date | dt.datetime:
    """The ABI's integer for ``kind`` as a Python value.

    Raises:
        OverflowError: outside what Python's date and datetime hold (years 1 to 9999).
    """
    if kind == "date":
        return EPOCH_DATE + dt.timedelta(days=raw)
    if kind == "timestamptz":
        return EPOCH_UTC + dt.timedelta(microseconds=raw)
    return EPOCH + dt.timedelta(microseconds=raw)


def iso_text(value: dt.date | dt.datetime) -> str:
    """SQLite's form: ``2026-12-02``, ``2026-12-02 14:30:00[.ffffff][+00:00]``."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return value.isoformat()
