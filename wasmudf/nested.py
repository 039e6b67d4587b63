"""Calls whose parameters or result include a list or a struct (docs/abi.md §3.2).

The cores lay out flat columns only. A call with a nested type comes here, for either core:
the frame is built in Python, every level's descriptor and buffers (Arrow offsets rebased to
0 at every level), written into the frame block with one copy, and the guest is called
through the core, so limits, fuel and interrupts apply as to any call. The result's
descriptor tree was prepared by the host: the nodes whose length the host knows (the result
and the fields of a struct it knows) have their buffers ready as a v1 result has; a list's
child and everything under it is described by the guest, in buffers it allocated. Reading
it back checks every level before copying anything of it: the links the host wrote are
unchanged, every address and length lies inside linear memory, offsets start at 0, never
decrease and end at the child's length, a struct's fields are as long as the struct, and the
bytes read stay under ``Limits.output_bytes``; Arrow's full validation then checks UTF-8
and decimal precision.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .abi import DESCRIPTOR, DESCRIPTOR_SIZE, FIELD_NAMES, LIST_CODE, STRUCT_CODE, AbiType, align8
from .columns import arrow_column
from .pycore import SHAPE_FOLD, SHAPE_SCALAR, column_pieces, offsets_problem, packed_bits

_U32 = struct.Struct("<I")
#: The longest column a guest may describe (Arrow's int32 offsets).
MAX_LENGTH = 0x7FFFFFFF



class _Frame:
    """A frame being built: bytes at positions relative to its block, whose address is
    known only once the frame's size is; ``links`` are the fields that hold a position."""

    def __init__(self, descriptors: int):
        self.buf = bytearray(DESCRIPTOR_SIZE * descriptors)
        self.links: list[int] = []

    def reserve(self, size: int) -> int:
        pos = align8(len(self.buf))
        self.buf.extend(bytes(pos + size - len(self.buf)))
        return pos

    def put(self, data: bytes) -> int:
        pos = self.reserve(len(data))
        self.buf[pos : pos + len(data)] = data
        return pos

    def descriptor(self, at: int, fields: Sequence[int], linked: Sequence[int]) -> None:
        """Write a descriptor; the fields whose indexes are in ``linked`` hold positions."""
        DESCRIPTOR.pack_into(self.buf, at, *fields)
        self.links.extend(at + 4 * f for f in linked)

    def place(self, block: int) -> bytes:
        for at in self.links:
            _U32.pack_into(self.buf, at, _U32.unpack_from(self.buf, at)[0] + block)
        return bytes(self.buf)


# -- the arguments ----------------------------------------------------------------------


def _write_input(frame: _Frame, t: AbiType, a: pa.Array, at: int, what: str) -> None:
    n = len(a)
    nulls = a.null_count
    validity = frame.put(packed_bits(a.buffers()[0], a.offset, n).tobytes()) if nulls else 0
    linked = [3] if nulls else []
    if t.code == LIST_CODE:
        offsets = a.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        start = int(offsets[0])
        offsets_at = frame.put((offsets - start).astype(np.uint32).tobytes())
        child_at = frame.reserve(DESCRIPTOR_SIZE)
        frame.descriptor(at, (t.code, n, nulls, validity, offsets_at, child_at, DESCRIPTOR_SIZE, 0), [*linked, 4, 5])
        (_, element), = t.children
        _write_input(frame, element, a.values.slice(start, int(offsets[-1]) - start), child_at, what)
    elif t.code == STRUCT_CODE:
        k = len(t.children)
        fields_at = frame.reserve(DESCRIPTOR_SIZE * k)
        frame.descriptor(at, (t.code, n, nulls, validity, 0, fields_at, DESCRIPTOR_SIZE * k, 0), [*linked, 5])
        for i, (_, ft) in enumerate(t.children):
            _write_input(frame, ft, a.field(i), fields_at + DESCRIPTOR_SIZE * i, what)
    else:
        _, offsets, values = column_pieces(arrow_column(a, t.code, t.is_varlen), n, what)
        offsets_at = frame.put(offsets) if t.is_varlen else 0
        values_at = frame.put(values)
        frame.descriptor(
            at, (t.code, n, nulls, validity, offsets_at, values_at, len(values), 0),
            [*linked, *([4] if t.is_varlen else []), 5],
        )


# -- the result -------------------------------------------------------------------------


@dataclass
class _Node:
    """One prepared result descriptor: what the host wrote, and whether it knows the length."""

    t: AbiType
    at: int
    want: list[int]
    known: bool
    path: str
    children: list[_Node] = field(default_factory=list)
    #: The fields of ``want`` that hold frame positions until the block is placed.
    linked: list[int] = field(default_factory=list)


def _prepare_output(frame: _Frame, t: AbiType, at: int, length: int | None, path: str) -> _Node:
    known = length is not None
    want = [t.code, 0, 0, 0, 0, 0, 0, 0]
    node = _Node(t, at, want, known, path)
    linked = node.linked
    if known:
        want[1] = length
        want[3] = frame.put(b"\xff" * ((length + 7) // 8))
        linked.append(3)
    if t.code == LIST_CODE:
        if known:
            want[4] = frame.reserve((length + 1) * 4)
            linked.append(4)
        want[5], want[6] = frame.reserve(DESCRIPTOR_SIZE), DESCRIPTOR_SIZE
        linked.append(5)
        (_, element), = t.children
        node.children.append(_prepare_output(frame, element, want[5], None, f"{path}[]"))
    elif t.code == STRUCT_CODE:
        k = len(t.children)
        want[5], want[6] = frame.reserve(DESCRIPTOR_SIZE * k), DESCRIPTOR_SIZE * k
        linked.append(5)
        for i, (name, ft) in enumerate(t.children):
            node.children.append(_prepare_output(frame, ft, want[5] + DESCRIPTOR_SIZE * i, length, f"{path}.{name}"))
    elif known and t.is_varlen:
        want[4] = frame.reserve((length + 1) * 4)
        linked.append(4)
    elif known:
        want[6] = length * (1 if t.is_bits else t.width)
        want[5] = frame.reserve(want[6])
        linked.append(5)
    frame.descriptor(at, want, linked)
    return node


def _place_nodes(node: _Node, block: int) -> None:
    for f in node.linked:
        node.want[f] += block
    node.at += block
    for child in node.children:
        _place_nodes(child, block)


class _Reader:
    """Reads a result's descriptor tree out of linear memory, checking as it goes."""

    def __init__(self, inst: Any, what: str, output_limit: int):
        self.inst, self.what, self.limit = inst, what, output_limit
        self.base, self.size = inst.core.memory()
        self.spent = 0

    def invalid(self, message: str) -> Exception:
        return self.inst.invalid_output(self.what, message)

    def take(self, addr: int, size: int, path: str, name: str, guest_buffer: bool) -> bytes:
        """``size`` bytes at ``addr``, inside linear memory; counted against the output limit
        when the guest allocated them."""
        if size == 0:
            return b""
        if addr == 0 or addr + size > self.size:
            raise self.invalid(f"{path}: {name} [0x{addr:x}, +{size}) is outside the {self.size}-byte linear memory")
        if guest_buffer:
            self.spent += size
            if 0 <= self.limit < self.spent:
                raise self.inst.output_limit_exceeded(self.what, self.spent, self.limit)
        return ctypes.string_at(self.base + addr, size)

    def offsets(self, addr: int, length: int, path: str, guest_buffer: bool, end: int | None = None) -> np.ndarray:
        """A list's or a text's offsets, checked (ending at ``end``, a text's values_len)."""
        data = self.take(addr, (length + 1) * 4, path, "offsets", guest_buffer)
        problem = offsets_problem(data, length, end)
        if problem:
            raise self.invalid(f"{path}: {problem}")
        raw = np.frombuffer(data, np.uint32)
        if raw[length] > MAX_LENGTH:
            raise self.invalid(f"{path}: offsets[{length}] is {raw[length]}, over 2 GiB")
        return raw

    def read(self, node: _Node, expected: int | None) -> pa.Array:
        t, path, want = node.t, node.path, node.want
        got = DESCRIPTOR.unpack(self.take(node.at, DESCRIPTOR_SIZE, path, "descriptor", False))
        fixed = [0, 7] + ([1, 3, 4] if node.known else [])
        if t.is_nested or (node.known and not t.is_varlen):
            fixed += [5, 6]
        for f in fixed:
            if got[f] != want[f]:
                raise self.invalid(f"{path}: it changed the descriptor's '{FIELD_NAMES[f]}' field from {want[f]} to {got[f]}")
        length = got[1]
        if length > MAX_LENGTH:
            raise self.invalid(f"{path}: length {length} is over 2^31 - 1")
        if expected is not None and length != expected:
            raise self.invalid(f"{path}: length is {length}, but its parent needs {expected}")
        validity = None
        if got[3]:
            bits = self.take(got[3], (length + 7) // 8, path, "validity", not node.known)
            if bits.count(b"\xff") != len(bits):
                validity = pa.py_buffer(bits)
        if t.code == LIST_CODE:
            offsets = self.offsets(got[4], length, path, not node.known)
            child = self.read(node.children[0], int(offsets[length]))
            return pa.Array.from_buffers(t.arrow, length, [validity, pa.py_buffer(offsets.tobytes())], children=[child])
        if t.code == STRUCT_CODE:
            children = [self.read(c, length) for c in node.children]
            return pa.Array.from_buffers(t.arrow, length, [validity], children=children)
        if t.is_varlen:
            offsets = self.offsets(got[4], length, path, not node.known, end=got[6])
            data = self.take(got[5], got[6], path, "values", True)
            return pa.Array.from_buffers(t.arrow, length, [validity, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)])
        size = length * (1 if t.is_bits else t.width)
        if got[6] != size:
            raise self.invalid(f"{path}: values_len is {got[6]}, but {length} rows of {t.name} take {size} bytes")
        data = self.take(got[5], size, path, "values", not node.known)
        if t.is_bits:
            data = np.packbits(np.frombuffer(data, np.uint8) != 0, bitorder="little").tobytes()
        return pa.Array.from_buffers(t.arrow, length, [validity, pa.py_buffer(data)])


# -- one call ---------------------------------------------------------------------------


def call_batch(
    inst: Any,
    func: int,
    what: str,
    rows: int,
    rtype: AbiType | None,
    output_limit: int,
    arrays: Sequence[pa.Array],
    types: Sequence[AbiType],
    shape: int = SHAPE_SCALAR,
    state: int = 0,
    interrupted: Callable[[], bool] | None = None,
) -> pa.Array | None:
    """One guest call over a batch of arrays of ``types``, as ``Core.call_batch`` but for
    any type; the result as a checked Arrow array (None for a FOLD, which has none)."""
    nargs = len(arrays)
    has_output = shape != SHAPE_FOLD
    frame = _Frame(nargs + (1 if has_output else 0))
    for i, (t, a) in enumerate(zip(types, arrays)):
        _write_input(frame, t, a, DESCRIPTOR_SIZE * i, what)
    out_at = DESCRIPTOR_SIZE * nargs
    node = _prepare_output(frame, rtype, out_at, rows, "the result") if has_output else None
    core = inst.core
    # A fresh arena every call: the guest allocates a nested result's children there.
    block = core.frame_block(max(len(frame.buf), 8), what, True)
    data = frame.place(block)
    base, _ = core.memory()
    ctypes.memmove(base + block, data, len(data))
    with inst.interruptible(interrupted):
        if shape == SHAPE_SCALAR:
            status = core.call(func, what, block, nargs, block + out_at)
        elif shape == SHAPE_FOLD:
            status = core.call(func, what, state, block, nargs)
        else:
            status = core.call(func, what, state, block + out_at)
    if status:
        inst.status_failed(status, what)
    if node is None:
        return None
    _place_nodes(node, block)
    result = _Reader(inst, what, output_limit).read(node, rows)
    try:
        result.validate(full=True)
    except pa.ArrowInvalid as exc:
        raise inst.invalid_output(what, f"the result is not a valid {rtype.name} ({exc})") from None
    return result
