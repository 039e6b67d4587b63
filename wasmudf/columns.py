"""Arrow arrays ⇄ ABI column descriptors in linear memory.

The host writes a call's inputs and its output descriptor into one block from
``wasmudf_alloc`` (one guest call instead of one per buffer), and after the call reads the
result back from the addresses *it* allocated. Everything the guest could have changed is
checked before use: descriptor fields, offsets, lengths, addresses, UTF-8.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .abi import (
    DESCRIPTOR,
    DESCRIPTOR_SIZE,
    F_LENGTH,
    F_OFFSETS,
    F_RESERVED,
    F_TYPE,
    F_VALIDITY,
    F_VALUES,
    F_VALUES_LEN,
    FIELD_NAMES,
    AbiType,
)
from .instance import Instance

ARROW_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "utf8": pa.string(),
    "binary": pa.binary(),
}
_I32_MAX = 2**31 - 1


def _align(n: int, to: int = 8) -> int:
    return (n + to - 1) & ~(to - 1)


def bitmap_bytes(n: int) -> int:
    return (n + 7) // 8


@dataclass
class HostBuffer:
    """Bytes on the host side: an address and a size, and whatever keeps them alive."""

    address: int
    size: int
    owner: Any = None

    @classmethod
    def of(cls, obj: Any) -> HostBuffer:
        if isinstance(obj, np.ndarray):
            obj = np.ascontiguousarray(obj)
            return cls(obj.ctypes.data, obj.nbytes, obj)
        buf = obj if isinstance(obj, pa.Buffer) else pa.py_buffer(obj)
        return cls(buf.address, buf.size, buf)


EMPTY = HostBuffer(0, 0)


@dataclass
class InputColumn:
    """One argument, rebased to row 0 and ready to copy into linear memory."""

    type: AbiType
    length: int
    null_count: int
    validity: HostBuffer  # size 0 when there are no NULLs
    offsets: HostBuffer  # varlen only: length + 1 little-endian u32
    values: HostBuffer


def _validity(arr: pa.Array) -> HostBuffer:
    n, off = len(arr), arr.offset
    if arr.null_count == 0:
        return EMPTY
    buf = arr.buffers()[0]
    if off % 8 == 0:
        return HostBuffer.of(buf.slice(off // 8, bitmap_bytes(n)))
    # A slice that starts mid-byte: rebase the bits so row 0 is bit 0 (ABI §3).
    bits = np.unpackbits(np.frombuffer(buf, np.uint8), bitorder="little", count=off + n)[off:]
    return HostBuffer.of(np.packbits(bits, bitorder="little"))


def input_column(arr: pa.Array, abitype: AbiType) -> InputColumn:
    """Describe a pyarrow array (already of ``abitype``'s Arrow type) as an ABI column."""
    n, off = len(arr), arr.offset
    validity = _validity(arr)
    bufs = arr.buffers()
    if abitype.name == "bool":
        raw = np.frombuffer(bufs[1], np.uint8) if bufs[1] is not None else np.zeros(0, np.uint8)
        values = HostBuffer.of(np.unpackbits(raw, bitorder="little", count=off + n)[off:])
        return InputColumn(abitype, n, arr.null_count, validity, EMPTY, values)
    if not abitype.is_varlen:
        w = abitype.width
        values = HostBuffer.of(bufs[1].slice(off * w, n * w)) if n else EMPTY
        return InputColumn(abitype, n, arr.null_count, validity, EMPTY, values)
    offsets = np.frombuffer(bufs[1], np.int32, count=n + 1, offset=off * 4)
    start, end = int(offsets[0]), int(offsets[-1])
    if start:
        offsets = offsets - start
    data = bufs[2].slice(start, end - start) if bufs[2] is not None and end > start else EMPTY
    return InputColumn(
        abitype,
        n,
        arr.null_count,
        validity,
        HostBuffer.of(offsets.astype(np.uint32, copy=False)),
        data if isinstance(data, HostBuffer) else HostBuffer.of(data),
    )


@dataclass
class Frame:
    """Where one call's descriptors and buffers live in linear memory."""

    block: int
    args: int  # address of the first argument descriptor
    out: int  # address of the output descriptor
    out_fields: tuple[int, ...]  # the output descriptor exactly as the host wrote it
    rows: int
    rtype: AbiType | None


def write_frame(
    inst: Instance, columns: list[InputColumn], rtype: AbiType | None, rows: int, what: str
) -> Frame:
    """Allocate one block, copy the inputs in and prepare the output descriptor (ABI §4).

    ``rtype`` None: inputs only (an aggregate's ``__update``); the output descriptor is unused.
    """
    nargs = len(columns)
    # Layout: [arg descriptors][out descriptor][per column: validity, offsets, values]
    #         [out validity][out values or offsets]. Every piece 8-aligned.
    pos = DESCRIPTOR_SIZE * (nargs + 1)
    places = []
    for col in columns:
        v = pos
        pos = _align(pos + col.validity.size)
        o = pos
        pos = _align(pos + col.offsets.size)
        d = pos
        pos = _align(pos + col.values.size)
        places.append((v, o, d))
    out_validity = out_values = pos
    if rtype is not None:
        pos = _align(pos + bitmap_bytes(rows))
        out_values = pos
        out_size = (rows + 1) * 4 if rtype.is_varlen else rows * rtype.width
        pos = _align(pos + out_size)
    fresh = (rtype is not None and rtype.is_varlen) or any(c.type.is_varlen for c in columns)
    block = inst.frame_block(max(pos, 8), what=what, fresh=fresh)
    base, _ = inst.memory()
    descs = bytearray(DESCRIPTOR_SIZE * (nargs + 1))
    for i, (col, (v, o, d)) in enumerate(zip(columns, places)):
        for buf, at in ((col.validity, v), (col.offsets, o), (col.values, d)):
            if buf.size:
                ctypes.memmove(base + block + at, buf.address, buf.size)
        DESCRIPTOR.pack_into(
            descs,
            i * DESCRIPTOR_SIZE,
            col.type.code,
            col.length,
            col.null_count,
            block + v if col.validity.size else 0,
            block + o if col.type.is_varlen else 0,
            block + d,
            col.values.size,
            0,
        )
    if rtype is None:
        ctypes.memmove(base + block, bytes(descs), len(descs))
        return Frame(block, block, 0, (), rows, None)
    out_fields = (
        rtype.code,
        rows,
        0,
        block + out_validity,
        block + out_values if rtype.is_varlen else 0,
        0 if rtype.is_varlen else block + out_values,
        0 if rtype.is_varlen else out_size,
        0,
    )
    DESCRIPTOR.pack_into(descs, nargs * DESCRIPTOR_SIZE, *out_fields)
    ctypes.memmove(base + block, bytes(descs), len(descs))
    ctypes.memset(base + block + out_validity, 0xFF, bitmap_bytes(rows))
    return Frame(block, block, block + nargs * DESCRIPTOR_SIZE, out_fields, rows, rtype)


def read_output(inst: Instance, frame: Frame, what: str, output_limit: int | None) -> pa.Array:
    """Read and check the result the guest wrote into ``frame``'s output descriptor."""
    base, mem_size = inst.memory()
    got = DESCRIPTOR.unpack(ctypes.string_at(base + frame.out, DESCRIPTOR_SIZE))
    want = frame.out_fields
    rtype, n = frame.rtype, frame.rows
    # The guest may write only null_count, and values/values_len of a varlen result (ABI §4).
    for idx in (F_TYPE, F_LENGTH, F_VALIDITY, F_OFFSETS, F_RESERVED):
        if got[idx] != want[idx]:
            raise inst.invalid_output(
                what,
                f"it changed the output descriptor's '{FIELD_NAMES[idx]}' field from {want[idx]} to {got[idx]}",
            )
    if not rtype.is_varlen and (got[F_VALUES], got[F_VALUES_LEN]) != (want[F_VALUES], want[F_VALUES_LEN]):
        raise inst.invalid_output(what, "it changed 'values' or 'values_len' of a fixed-width result")
    validity = _validity_out(base, want[F_VALIDITY], n)
    if rtype.name == "bool":
        raw = np.frombuffer(_copy_out(base, want[F_VALUES], n), np.uint8)
        values = pa.py_buffer(np.packbits(raw != 0, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), n, [validity, values])
    if not rtype.is_varlen:
        values = _copy_out(base, want[F_VALUES], n * rtype.width)
        return pa.Array.from_buffers(ARROW_TYPES[rtype.name], n, [validity, values])
    offsets = np.frombuffer(_copy_out(base, want[F_OFFSETS], (n + 1) * 4), np.uint32)
    values_addr, values_len = got[F_VALUES], got[F_VALUES_LEN]
    if output_limit is not None and values_len > output_limit:
        raise inst.output_limit_exceeded(what, values_len, output_limit)
    if values_len > _I32_MAX:
        raise inst.invalid_output(what, f"values_len {values_len} is over 2 GiB")
    if offsets[0] != 0:
        raise inst.invalid_output(what, f"offsets[0] is {offsets[0]}, not 0")
    if n and bool(np.any(np.diff(offsets.astype(np.int64)) < 0)):
        first = int(np.argmax(np.diff(offsets.astype(np.int64)) < 0))
        raise inst.invalid_output(
            what, f"offsets decrease at row {first} ({offsets[first]} then {offsets[first + 1]})"
        )
    if offsets[n] != values_len:
        raise inst.invalid_output(what, f"offsets[{n}] is {offsets[n]} but values_len is {values_len}")
    if values_len and (values_addr == 0 or values_addr + values_len > mem_size):
        raise inst.invalid_output(
            what,
            f"values [0x{values_addr:x}, +{values_len}) is outside the {mem_size}-byte linear memory",
        )
    data = _copy_out(base, values_addr, values_len)
    arr = pa.Array.from_buffers(
        ARROW_TYPES[rtype.name], n, [validity, pa.py_buffer(offsets.view(np.int32)), data]
    )
    if rtype.name == "utf8":
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid as exc:
            raise inst.invalid_output(what, f"a utf8 result is not valid UTF-8 ({exc})") from None
    return arr


def _validity_out(base: int, addr: int, n: int) -> pa.Buffer | None:
    """The result's validity bitmap, or None when every row is valid (the common case)."""
    raw = ctypes.string_at(base + addr, bitmap_bytes(n))
    if raw.count(b"\xff") == len(raw):
        return None
    return pa.py_buffer(raw)


def _copy_out(base: int, addr: int, size: int) -> pa.Buffer:
    buf = pa.allocate_buffer(size)
    if size:
        ctypes.memmove(buf.address, base + addr, size)
    return buf
