"""Arrow arrays and Python values as the core's column descriptions, and back.

A core (``Core`` in C, or :class:`~wasmudf.pycore.PyCore`) takes each argument as a tuple
``(type code, Arrow offset, null count, validity, values or offsets, data)`` in Arrow's own
layout and answers with ``(validity, values)`` or ``(validity, offsets, data)``. This module
makes those tuples from Arrow arrays or from one row of Python values, and turns results into
arrays or Python values. The core checks everything the guest wrote; what is left here is
the UTF-8 of a text result.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from . import decimals, temporal
from .abi import AbiType

#: The most variable-length input bytes handed to the guest in one call.
BATCH_VARLEN_BYTES = 16 * 1024 * 1024


def arrow_columns(arrays: Sequence[pa.Array], types: Sequence[AbiType]) -> list[tuple]:
    """Plain arrays of the types' Arrow types as the core's column descriptions."""
    return [arrow_column(a, t.code, t.is_varlen) for a, t in zip(arrays, types)]


def arrow_column(a: pa.Array, code: int, varlen: bool) -> tuple:
    """One plain array as :func:`arrow_columns` describes it."""
    bufs = a.buffers()
    nulls = a.null_count
    return (code, a.offset, nulls, bufs[0] if nulls else None, bufs[1], bufs[2] if varlen else None)


def result_array(inst: Any, name: str, t: AbiType, rows: int, result: tuple) -> pa.Array:
    """The array of a core's result (already checked there), its utf8 rows checked here."""
    validity = pa.py_buffer(result[0]) if result[0] is not None else None
    buffers = [b if type(b) is not bytes else pa.py_buffer(b) for b in result[1:]]
    arr = pa.Array.from_buffers(t.arrow, rows, [validity, *buffers])
    if t.name == "utf8" or t.is_decimal:
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid as exc:
            problem = "not valid UTF-8" if t.name == "utf8" else f"out of {t.name}'s precision"
            raise inst.invalid_output(name, f"a {t.name} result is {problem} ({exc})") from None
    return arr


# -- one row of Python values -----------------------------------------------------------


def row_column(t: AbiType, v: Any) -> tuple:
    """One Python value (None is NULL) as a one-row column of type ``t``.

    Raises:
        TypeError: ``v`` is not one of the values ``t`` accepts.
        OverflowError: ``v`` is out of ``t``'s range.
    """
    if v is None:
        return (t.code, 0, 1, b"\0", bytes(t.width) if t.width else b"\0\0\0\0\0\0\0\0", None)
    if t.is_decimal:  # exactly, or a TypeError, a ValueError (digits past the scale) or an OverflowError
        unscaled = decimals.to_unscaled(t.precision, t.scale, v)
        return (t.code, 0, 0, None, unscaled.to_bytes(16, "little", signed=True), None)
    if not isinstance(v, t.accepts):
        raise TypeError(t.name)
    if t.temporal:
        try:
            return (t.code, 0, 0, None, struct.pack("<" + t.struct_code, temporal.to_raw(t.temporal, v)), None)
        except struct.error:
            raise OverflowError(t.name) from None
    if t.range is not None and not t.range[0] <= v <= t.range[1]:
        raise OverflowError(t.name)
    if t.is_bits:
        return (t.code, 0, 0, None, b"\1" if v else b"\0", None)  # an Arrow bitmap of one bit
    if t.is_varlen:
        data = v.encode("utf-8", errors="surrogatepass") if isinstance(v, str) else bytes(v)
        return (t.code, 0, 0, None, struct.pack("<ii", 0, len(data)), data)
    if t.is_float:
        try:
            x = float(v)
        except OverflowError:
            raise OverflowError(t.name) from None
        try:
            return (t.code, 0, 0, None, struct.pack("<" + t.struct_code, x), None)
        except OverflowError:
            # Past float32's range: IEEE rounding gives +-inf, as C's conversion and Arrow's cast do.
            return (t.code, 0, 0, None, struct.pack("<f", math.copysign(math.inf, x)), None)
    return (t.code, 0, 0, None, struct.pack("<" + t.struct_code, v), None)


def row_value(inst: Any, name: str, t: AbiType, result: tuple) -> Any:
    """The Python value of a one-row result (None for NULL)."""
    validity = result[0]
    if validity is not None and not validity[0] & 1:
        return None
    if t.is_bits:
        return bool(result[1][0] & 1)
    if t.is_decimal:
        unscaled = int.from_bytes(bytes(result[1][:16]), "little", signed=True)
        if not t.range[0] <= unscaled <= t.range[1]:
            raise inst.invalid_output(name, f"a {t.name} result ({unscaled} unscaled) is out of its precision")
        return decimals.from_unscaled(t.scale, unscaled)
    if not t.is_varlen:
        raw = struct.unpack_from("<" + t.struct_code, result[1])[0]
        if not t.temporal:
            return raw
        try:
            return temporal.from_raw(t.temporal, raw)
        except OverflowError:
            raise inst.invalid_output(name, f"a {t.name} result ({raw}) is outside years 1 to 9999") from None
    data = bytes(result[2])
    if t.name != "utf8":
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise inst.invalid_output(name, f"a utf8 result is not valid UTF-8 ({exc})") from None


def array_value(inst: Any, name: str, t: AbiType, result: pa.Array) -> Any:
    """The Python value of a one-row result that came back as an array (a nested type)."""
    try:
        return result.to_pylist()[0]
    except (ValueError, OverflowError) as exc:  # a date past year 9999 inside a list, say
        raise inst.invalid_output(name, f"a {t.name} result has a value Python cannot hold ({exc})") from None


def value_kind(v: Any) -> str:
    """The SQL storage class of a Python value, as errors about it name it."""
    if v is None:
        return "NULL"
    if isinstance(v, (bool, int, np.integer)):
        return "INTEGER"
    if isinstance(v, float):
        return "REAL"
    if isinstance(v, str):
        return "TEXT"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "BLOB"
    return type(v).__name__


# -- whole columns ------------------------------------------------------------------------


def plain_array(c: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (a chunked one combined, without a copy when it has one chunk)."""
    if isinstance(c, pa.Array):
        return c
    return c.chunk(0) if c.num_chunks == 1 else c.combine_chunks()


def valid_rows(arrays: Sequence[pa.Array], n: int) -> np.ndarray:
    """A boolean mask of the rows where no array is NULL (strict NULL handling)."""
    mask = np.ones(n, dtype=bool)
    for a in arrays:
        if a.null_count:
            mask &= a.is_valid().to_numpy(zero_copy_only=False)
    return mask


def row_ranges(arrays: list[pa.Array], n: int) -> Iterator[tuple[int, int]]:
    """Split [0, n) so no call carries more than BATCH_VARLEN_BYTES of variable-length input
    (text and bytes, and the elements of lists)."""
    varlen = [a for a in arrays if pa.types.is_string(a.type) or pa.types.is_binary(a.type)]
    nested = [a for a in arrays if pa.types.is_list(a.type) or pa.types.is_struct(a.type)]
    if n == 0 or sum(_data_bytes(a) for a in varlen) + sum(a.nbytes for a in nested) <= BATCH_VARLEN_BYTES:
        yield 0, n
        return
    sizes = np.zeros(n + 1, dtype=np.int64)
    for a in varlen:
        offs = np.frombuffer(a.buffers()[1], np.int32, count=n + 1, offset=a.offset * 4)
        sizes += offs.astype(np.int64) - int(offs[0])
    for a in nested:
        sizes[1:] += np.cumsum(_nested_row_bytes(a))
    start = 0
    while start < n:
        limit = sizes[start] + BATCH_VARLEN_BYTES
        stop = int(np.searchsorted(sizes, limit, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def merge_validity(n: int, parts: list[tuple[int, int, bytes]]) -> pa.Buffer:
    """One validity bitmap for ``n`` rows from the bitmaps of the batches that had NULLs."""
    bits = np.ones(n, dtype=bool)
    for start, rows, bitmap in parts:
        bits[start : start + rows] = np.unpackbits(
            np.frombuffer(bitmap, np.uint8), bitorder="little", count=rows
        )
    return pa.py_buffer(np.packbits(bits, bitorder="little"))


def _nested_row_bytes(a: pa.Array) -> np.ndarray:
    """About how many bytes each row of a list or struct array takes in a frame: a list's
    elements at its child's average size, a struct's fields added up."""
    if pa.types.is_struct(a.type):
        total = np.zeros(len(a), dtype=np.int64)
        for i in range(a.type.num_fields):
            total += _nested_row_bytes(a.field(i))
        return total
    if pa.types.is_list(a.type):
        offsets = a.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        counts = np.diff(offsets)
        child = a.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        if len(child) == 0:
            return np.full(len(a), 4, dtype=np.int64)
        return 4 + counts * max(1, -(-child.nbytes // len(child)))
    return np.full(len(a), max(1, -(-a.nbytes // max(len(a), 1))), dtype=np.int64)


def _data_bytes(a: pa.Array) -> int:
    """An upper bound of a string/binary array's data bytes (its whole data buffer)."""
    data = a.buffers()[2]
    return 0 if data is None else data.size
