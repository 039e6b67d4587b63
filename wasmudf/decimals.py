"""Decimals as the ABI stores them, and as Python and SQLite see them.

In linear memory a ``decimal(p,s)`` is the 16-byte little-endian two's-complement integer
``value × 10^s`` (Arrow's decimal128, the unscaled value), whatever p is; DuckDB keeps small
precisions in 2, 4 or 8 bytes, and its adapters widen and narrow them. Python values are
``decimal.Decimal``; SQLite has no decimal type, so there a decimal is exact text
(``'12.50'``), and a REAL or INTEGER argument is taken at its shortest decimal form.
"""

from __future__ import annotations

import decimal
from typing import Any

import numpy as np

# Enough digits that no conversion here ever rounds: 38 digits plus a scale of up to 38.
_EXACT = decimal.Context(prec=120, Emax=999_999, Emin=-999_999)


def to_unscaled(precision: int, scale: int, value: Any) -> int:
    """A Python value (Decimal, int, float, or text) as the unscaled integer of
    ``decimal(precision, scale)``: exactly, or an error.

    Raises:
        TypeError: not a number (text that does not parse, another type).
        ValueError: not finite, or more digits after the point than the scale keeps.
        OverflowError: more digits before the point than ``precision - scale``.
    """
    if isinstance(value, bool):
        raise TypeError("bool")
    if isinstance(value, (int, np.integer)):
        d = decimal.Decimal(int(value))
    elif isinstance(value, float):
        d = decimal.Decimal(repr(value))  # the number as written, not the binary fraction
    elif isinstance(value, str):
        try:
            d = decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            raise TypeError(value) from None
    elif isinstance(value, decimal.Decimal):
        d = value
    else:
        raise TypeError(type(value).__name__)
    if not d.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    scaled = d.scaleb(scale, context=_EXACT)
    if scaled != scaled.to_integral_value(context=_EXACT):
        raise ValueError(f"{value} has more than {scale} digits after the point")
    unscaled = int(scaled)
    if abs(unscaled) >= 10**precision:
        raise OverflowError(f"{value} has more than {precision - scale} digits before the point")
    return unscaled


def from_unscaled(scale: int, unscaled: int) -> decimal.Decimal:
    """The Decimal of an unscaled integer, with exactly ``scale`` digits after the point."""
    return decimal.Decimal(unscaled).scaleb(-scale, context=_EXACT)


def exact_text(value: decimal.Decimal) -> str:
    """SQLite's form: plain digits, never an exponent (``'0.000001'``, ``'-12.50'``)."""
    return format(value, "f")
