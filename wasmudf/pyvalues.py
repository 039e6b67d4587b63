"""Python values of the types beyond v1's: decimals, lists and structs, in and out.

A one-row call, an aggregate stepped by SQLite and a table call's arguments take Python
values. For a decimal that is a ``Decimal`` (or an int, a float, or text, held to the scale
exactly: decimals.py); for a list a Python list, for a struct a dict, with the same rules at
every level (a date inside a list is a ``datetime.date`` or ISO text). SQLite hands lists and
structs over as JSON text, so a list or struct parameter takes JSON text too, and results go
back to SQLite as JSON text its own JSON functions read (:func:`json_text`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa

from . import decimals, temporal
from .abi import LIST_CODE, STRUCT_CODE, AbiType


def check(t: AbiType, value: Any) -> Any:
    """``value`` as the Python value pyarrow converts to ``t``'s Arrow type (None is NULL).

    Raises:
        TypeError: not a value of ``t`` (naming what was found where, for a nested value).
        ValueError: a decimal with more digits after the point than its scale, JSON text
            that does not parse, a struct field the type does not have.
        OverflowError: an integer or decimal out of range.
    """
    if value is None:
        return None
    if t.is_nested:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"JSON text that does not parse ({exc})") from None
        if t.code == LIST_CODE:
            if not isinstance(value, (list, tuple)):
                raise TypeError(f"{type(value).__name__} where a list belongs")
            (_, element), = t.children
            return [check(element, v) for v in value]
        if not isinstance(value, dict):
            raise TypeError(f"{type(value).__name__} where a struct belongs")
        fields = dict(t.children)
        for key in value:
            if key not in fields:
                raise ValueError(f"{t.name} has no field {key!r}")
        return {name: check(ft, value.get(name)) for name, ft in t.children}
    if t.is_decimal:
        return decimals.from_unscaled(t.scale, decimals.to_unscaled(t.precision, t.scale, value))
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, t.accepts) or (t.name != "bool" and isinstance(value, bool) and not t.is_float):
        raise TypeError(f"{type(value).__name__} where {t.name} belongs")
    if t.temporal:
        return temporal.from_raw(t.temporal, temporal.to_raw(t.temporal, value))
    if t.range is not None and not t.range[0] <= value <= t.range[1]:
        raise OverflowError(f"{value} is out of {t.name}'s range")
    if t.is_float:
        return float(value)
    if t.is_bits:
        return bool(value)
    return value


def arrow_array(t: AbiType, values: list[Any]) -> pa.Array:
    """Python values (each already through :func:`check`) as one array of ``t``."""
    return pa.array(values, type=t.arrow)


def json_text(t: AbiType, value: Any) -> str:
    """A list or struct value as JSON text: decimals as exact numbers, dates and timestamps
    as ISO-8601 strings, bytes as hex strings, NaN and infinities (which JSON has not) as
    null."""
    return _json(t, value)


def _json(t: AbiType, v: Any) -> str:
    if v is None:
        return "null"
    if t.code == LIST_CODE:
        (_, element), = t.children
        return "[" + ",".join(_json(element, x) for x in v) + "]"
    if t.code == STRUCT_CODE:
        return "{" + ",".join(f"{json.dumps(name)}:{_json(ft, v.get(name))}" for name, ft in t.children) + "}"
    if t.is_decimal:
        return decimals.exact_text(v)
    if t.is_bits:
        return "true" if v else "false"
    if t.is_float:
        return repr(float(v)) if math.isfinite(v) else "null"
    if isinstance(v, (dt.date, dt.datetime)):
        return json.dumps(temporal.iso_text(v))
    if isinstance(v, (bytes, bytearray)):
        return json.dumps(bytes(v).hex())
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return str(int(v))



