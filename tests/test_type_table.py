"""The type table is one table: the C accelerator's constants agree with wasmudf.abi.TYPES,
and every adapter names a SQL type for every ABI type."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
from references import ARROW_TYPES

from wasmudf.abi import DECIMAL_CODE, LIST_CODE, STRUCT_CODE, TYPES, TYPES_BY_CODE

HEADER = Path(__file__).resolve().parent.parent / "wasmudf" / "_speedups.h"


def _c_enum() -> dict[str, int]:
    """``enum { ABI_BOOL = 1, ABI_INT32, ... }`` as {"bool": 1, "int32": 2, ...}."""
    body = re.search(r"enum \{ (ABI_[^}]*)\}", HEADER.read_text()).group(1)
    codes, next_code = {}, 0
    for item in body.split(","):
        name, _, value = item.strip().partition("=")
        next_code = int(value) if value.strip() else next_code + 1
        codes[name.strip().removeprefix("ABI_").lower()] = next_code
    return codes


def _c_widths() -> dict[int, int]:
    """type_width() of _speedups.h: {code: width} for the fixed-width codes."""
    body = re.search(r"static inline int type_width\(int code\) \{(.*?)\n\}", HEADER.read_text(), re.S).group(1)
    enum = _c_enum()
    widths = {}
    for cases, width in re.findall(r"((?:case ABI_\w+: )+)return (\d+);", body):
        for name in re.findall(r"ABI_(\w+)", cases):
            widths[enum[name.lower()]] = int(width)
    return widths


def test_the_c_type_codes_are_abi_pys():
    families = {"decimal": DECIMAL_CODE, "list": LIST_CODE, "struct": STRUCT_CODE}
    assert _c_enum() == {name: t.code for name, t in TYPES.items()} | families


def test_the_c_widths_are_abi_pys():
    assert _c_widths() == {t.code: t.width for t in TYPES_BY_CODE.values() if t.width}


def test_codes_are_unique_and_arrow_types_are_the_documents():
    assert len(TYPES_BY_CODE) == len(TYPES) + 1  # and decimal's storage
    assert {name: t.arrow for name, t in TYPES.items()} == ARROW_TYPES


@pytest.mark.parametrize("name", sorted(TYPES))
def test_a_one_row_value_of_each_type_round_trips_through_the_core(name):
    from wasmudf.columns import row_column

    t = TYPES[name]
    value = {
        "bool": True, "int32": -7, "int64": 2**40, "float32": 1.5, "float64": -2.25, "utf8": "é", "binary": b"\0x",
        "date": datetime.date(1969, 12, 31), "timestamp": datetime.datetime(1969, 12, 31, 23, 59, 59, 999999),
        "timestamptz": datetime.datetime(1970, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
    }[name]
    column = row_column(t, value)
    assert column[0] == t.code and column[2] == 0
    with pytest.raises(TypeError):
        row_column(t, object())
    if t.range is not None:
        with pytest.raises(OverflowError):
            row_column(t, t.range[1] + 1)


def test_the_duckdb_adapter_names_every_type():
    from wasmudf.adapters.duckdb import SQL_TYPES

    assert set(SQL_TYPES) == set(TYPES)
