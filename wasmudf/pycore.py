"""The pure-Python core: the C accelerator's ``Core`` (``_speedups.c``) method for method.

An :class:`~wasmudf.instance.Instance` always holds a core and never asks which: this one
when the accelerator is not built (or ``WASMUDF_PURE_PYTHON=1``), doing the same work with
the same checks and reporting failures through the same ``on_failure(kind, what, detail)``
callback, so the error texts are written once, in instance.py. Calls go through
``wasmtime_func_call_unchecked`` via ctypes (~1 µs a call, against ~0.1 µs from C);
``call_batch`` lays out a frame exactly as ``run_batch`` does (see docs/abi.md §4).
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _native
from .abi import (
    DESCRIPTOR,
    DESCRIPTOR_SIZE,
    F_LENGTH,
    F_OFFSETS,
    F_RESERVED,
    F_TYPE,
    F_VALIDITY,
    FIELD_NAMES,
    align8,
)
from .abi import TYPES_BY_CODE as _TYPES

#: Reuse the frame block for this many calls before resetting the arena (as RESET_EVERY in C),
#: or until this many variable-length bytes went in and out (RESET_SCRATCH_BYTES): the guest
#: allocates a text result in its arena, and its scratch tends to grow with text input.
RESET_EVERY = 64
RESET_SCRATCH_BYTES = 1 << 20
#: The largest frame one call may take (BATCH_MAX_BYTES in C).
BATCH_MAX_BYTES = 0x7FFF0000
NO_DEADLINE = 1 << 62
SHAPE_SCALAR, SHAPE_FOLD, SHAPE_RESULT = 0, 1, 2

c_void_p, c_size_t, c_uint64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64
_symbol = _native.symbol
# Our own prototypes over wasmtime-py's library, taking plain ints: much cheaper than the
# wrappers in wasmtime._bindings. The call releases the GIL (CFUNCTYPE) so DuckDB's threads
# run Wasm in parallel; the tiny accessors keep it (PYFUNCTYPE).
_call_unchecked = ctypes.CFUNCTYPE(c_void_p, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p)(
    _symbol("wasmtime_func_call_unchecked")
)
_memory_data = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_void_p)(_symbol("wasmtime_memory_data"))
_memory_size = ctypes.PYFUNCTYPE(c_size_t, c_void_p, c_void_p)(_symbol("wasmtime_memory_data_size"))
_set_deadline = ctypes.PYFUNCTYPE(None, c_void_p, c_uint64)(_symbol("wasmtime_context_set_epoch_deadline"))
_set_fuel = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_uint64)(_symbol("wasmtime_context_set_fuel"))
_error_new = ctypes.PYFUNCTYPE(c_size_t, ctypes.c_char_p)(_symbol("wasmtime_error_new"))
_EPOCH_CALLBACK = ctypes.CFUNCTYPE(
    c_size_t, c_void_p, c_void_p, ctypes.POINTER(c_uint64), ctypes.POINTER(ctypes.c_uint8)
)
_deadline_callback = ctypes.PYFUNCTYPE(None, c_void_p, _EPOCH_CALLBACK, c_void_p, c_void_p)(
    _symbol("wasmtime_store_epoch_deadline_callback")
)


def arm_deadline(ctx: int, ticks: int) -> None:
    """Set a store's epoch deadline ``ticks`` from now (< 0: none), before any core exists
    (instantiation runs the start function under the time limit)."""
    _set_deadline(ctx, NO_DEADLINE if ticks < 0 else ticks)



class PyCore:
    """One instance's store, called from Python; see the C ``Core`` for the contract.

    Args: as ``Core(store, ctx, memory, reset_func, alloc_func, ticks, fuel, ticker,
    before_call, on_failure, owner)``: raw wasmtime addresses, epoch ticks and fuel per call
    (< 0: unlimited), the engine's ticker (its ``epoch`` tells whether a deadline is still
    current), a hook run before every guest call or None, the failure reporter (it raises),
    and the Instance that keeps the store alive.
    """

    def __init__(
        self,
        store: int,
        ctx: int,
        mem: int,
        reset_fn: int,
        alloc_fn: int,
        ticks: int,
        fuel: int,
        ticker: Any,
        before_call: Callable[[], None] | None,
        on_failure: Callable[[str, str, Any], None],
        owner: Any,
    ):
        self._ctx, self._mem = ctx, mem
        self._reset_fn, self._alloc_fn = reset_fn, alloc_fn
        self._ticks, self._fuel = ticks, fuel
        self._ticker = ticker
        self._before_call = before_call
        self._on_failure = on_failure
        self._owner = owner
        #: Set once the instance failed: it must not be used again.
        self.dead = 0
        #: None, or a callable: true stops the running call within one epoch tick.
        self.interrupt_check: Callable[[], bool] | None = None
        self._armed_epoch: int | None = None
        self._armed_per_tick = False
        self._ticks_left = ticks
        self._block = self._capacity = self._calls_since_reset = 0
        #: Variable-length bytes in and out since the last reset (see frame_block).
        self._scratch_bytes = 0
        self._slots = (ctypes.c_uint64 * 8)()
        self._slots_addr = ctypes.addressof(self._slots)
        self._trap = ctypes.c_void_p()
        self._trap_addr = ctypes.addressof(self._trap)
        # Linear memory never moves (runtime._make_config), so its base is read once, as in C.
        self._base = _memory_data(ctx, mem)
        self._epoch_callback = _EPOCH_CALLBACK(self._epoch_reached)  # kept alive with self
        _deadline_callback(store, self._epoch_callback, None, None)

    # -- calls ---------------------------------------------------------------------------

    def call(self, func: int, what: str, a0: int = 0, a1: int = 0, a2: int = 0, release_gil: bool = False) -> int:
        """Call ``func`` with up to three i32 arguments; its i32 result as an unsigned u32."""
        if self._before_call is not None:
            self._before_call()
        # A deadline is absolute (epoch now + ticks): while the ticker has not moved since it
        # was set, setting it again would change nothing. A call that can be interrupted gets
        # a deadline every tick instead, where _epoch_reached asks whether to stop.
        per_tick = self.interrupt_check is not None
        epoch = getattr(self._ticker, "epoch", None)
        if epoch is None or epoch != self._armed_epoch or per_tick != self._armed_per_tick:
            _set_deadline(self._ctx, 1 if per_tick else NO_DEADLINE if self._ticks < 0 else self._ticks)
            self._armed_epoch, self._armed_per_tick = epoch, per_tick
        self._ticks_left = self._ticks
        if self._fuel >= 0:
            err = _set_fuel(self._ctx, self._fuel)
            if err:
                self._fail("call", what, (err, 0))
        slots = self._slots
        slots[0], slots[2], slots[4] = a0 & 0xFFFFFFFF, a1 & 0xFFFFFFFF, a2 & 0xFFFFFFFF
        err = _call_unchecked(self._ctx, func, self._slots_addr, 4, self._trap_addr)
        if err or self._trap.value:
            trap, self._trap.value = self._trap.value, None
            self._fail("call", what, (err or 0, trap or 0))
        return slots[0] & 0xFFFFFFFF

    def _status_call(self, func: int, what: str, a0: int, a1: int = 0, a2: int = 0) -> None:
        status = self.call(func, what, a0, a1, a2)
        if status:
            self._fail("status", what, status)

    def _fail(self, kind: str, what: str, detail: Any) -> None:
        self.dead = 1
        self._on_failure(kind, what, detail)
        raise RuntimeError(f"wasmudf: on_failure({kind}) did not raise")

    def _epoch_reached(self, _ctx: Any, _data: Any, delta: Any, kind: Any) -> int:
        """The store's epoch deadline was reached: without an interrupt check that is the time
        limit; with one, it asks the check every tick and counts the time limit down itself.
        The texts are what instance.translate_errors recognizes. It must not raise."""
        check = self.interrupt_check
        if check is None:
            return _error_new(b"wasmudf: time limit")
        try:
            stop = bool(check())
        except Exception:  # noqa: BLE001 - a failing check is not an interruption
            stop = False
        if stop:
            return _error_new(b"wasmudf: interrupted")
        if self._ticks >= 0:
            self._ticks_left -= 1
            if self._ticks_left <= 0:
                return _error_new(b"wasmudf: time limit")
        delta[0] = 1
        kind[0] = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
        return 0

    # -- the arena -----------------------------------------------------------------------

    def reset(self) -> None:
        """Call ``wasmudf_reset``; the frame block is gone with the arena."""
        self.call(self._reset_fn, "wasmudf_reset")
        self._block = self._capacity = self._calls_since_reset = self._scratch_bytes = 0

    def alloc(self, size: int, align: int, what: str) -> int:
        """A block from ``wasmudf_alloc``, checked to be non-zero, aligned and in memory."""
        addr = self.call(self._alloc_fn, what, size, align)
        mem_size = _memory_size(self._ctx, self._mem)
        if addr == 0 or addr % align or addr + size > mem_size:
            self._fail("alloc", what, (size, align, addr, mem_size))
        return addr

    def frame_block(self, size: int, what: str, fresh: bool) -> int:
        """An 8-aligned block of ``size`` bytes for one call's frame.

        The arena need not be reset before every call (ABI §7: the host resets when it likes),
        so a call reuses the previous call's block when it fits (``fresh`` forces a new one),
        and the arena is reset every RESET_EVERY calls, or once RESET_SCRATCH_BYTES of
        variable-length input and results went through it, to bound whatever the guest took
        meanwhile. That saves two of the three guest calls per batch."""
        if size > BATCH_MAX_BYTES:
            raise OverflowError(f"one call's frame would be {size} bytes")
        if (
            not fresh
            and self._block
            and self._capacity >= size
            and self._calls_since_reset < RESET_EVERY
            and self._scratch_bytes <= RESET_SCRATCH_BYTES
        ):
            self._calls_since_reset += 1
            return self._block
        self.reset()
        capacity = max(size, 4096)
        addr = self.alloc(capacity, 8, what)
        self._block, self._capacity, self._calls_since_reset = addr, capacity, 1
        return addr

    def memory(self) -> tuple[int, int]:
        """(base address, size in bytes) of linear memory, read afresh: any call may grow it."""
        return self._base, _memory_size(self._ctx, self._mem)

    # -- one batch -----------------------------------------------------------------------

    def call_batch(
        self,
        func: int,
        what: str,
        rows: int,
        rcode: int,
        output_limit: int,
        allocate: Callable[[int], Any] | None,
        columns: Sequence[tuple],
        shape: int = SHAPE_SCALAR,
        state: int = 0,
        interrupt_check: Callable[[], bool] | None = None,
    ) -> tuple | None:
        """One guest call over a batch of Arrow columns; see ``Core.call_batch`` in C.

        ``columns``: (type code, Arrow offset, null count, validity, values or offsets, data)
        per argument. Returns (validity bytes or None, values) or (validity, offsets, data),
        each buffer from ``allocate(size)`` (bytes when it is None); None for a FOLD.
        """
        previous = self.interrupt_check
        if interrupt_check is not None:  # for this call only
            self.interrupt_check = interrupt_check
        try:
            return self._run_batch(func, what, rows, rcode, output_limit, allocate, columns, shape, state)
        finally:
            self.interrupt_check = previous

    def _run_batch(self, *batch: Any) -> tuple | None:
        func, what, rows, rcode, output_limit, allocate, columns, shape, state = batch
        nargs = len(columns)
        has_output = shape != SHAPE_FOLD
        rtype = _TYPES.get(rcode)
        if (
            nargs > 32
            or not 0 <= rows <= 0x7FFFFFFF
            or shape not in (SHAPE_SCALAR, SHAPE_FOLD, SHAPE_RESULT)
            or (has_output and rtype is None)
            or (shape == SHAPE_RESULT and (nargs or rows != 1))
        ):
            raise ValueError("bad batch description")
        pieces = [column_pieces(c, rows, what) for c in columns]
        pos = DESCRIPTOR_SIZE * (nargs + 1)
        places = []
        for validity, offsets, values in pieces:
            places.append(pos)
            pos = align8(pos + len(validity))
            places.append(pos)
            pos = align8(pos + len(offsets))
            places.append(pos)
            pos = align8(pos + len(values))
        out_validity = out_values = pos
        out_size = 0
        if has_output:
            pos = align8(pos + (rows + 7) // 8)
            out_values = pos
            out_size = (rows + 1) * 4 if rtype.is_varlen else rows * rtype.width
            pos = align8(pos + out_size)

        block = self.frame_block(max(pos, 8), what, False)
        self._scratch_bytes += sum(len(piece[2]) for c, piece in zip(columns, pieces) if _TYPES[c[0]].is_varlen)
        frame = bytearray(pos)
        for i, ((code, _, null_count, *_), (validity, offsets, values)) in enumerate(zip(columns, pieces)):
            v, o, d = places[3 * i : 3 * i + 3]
            frame[v : v + len(validity)] = validity
            frame[o : o + len(offsets)] = offsets
            frame[d : d + len(values)] = values
            varlen = _TYPES[code].is_varlen
            DESCRIPTOR.pack_into(
                frame,
                DESCRIPTOR_SIZE * i,
                code,
                rows,
                null_count,
                block + v if validity else 0,
                block + o if varlen else 0,
                block + d,
                len(values),
                0,
            )
        want = ()
        out_at = block + DESCRIPTOR_SIZE * nargs
        if has_output:
            varlen = rtype.is_varlen
            want = (
                rcode,
                rows,
                0,
                block + out_validity,
                block + out_values if varlen else 0,
                0 if varlen else block + out_values,
                0 if varlen else out_size,
                0,
            )
            DESCRIPTOR.pack_into(frame, DESCRIPTOR_SIZE * nargs, *want)
            frame[out_validity : out_validity + (rows + 7) // 8] = b"\xff" * ((rows + 7) // 8)
        ctypes.memmove(self._base + block, bytes(frame), len(frame))
        if shape == SHAPE_SCALAR:
            self._status_call(func, what, block, nargs, out_at)
        elif shape == SHAPE_FOLD:
            self._status_call(func, what, state, block, nargs)
        else:
            self._status_call(func, what, state, out_at)
        if not has_output:
            return None
        return self._read_result(what, out_at, want, rcode, rows, output_limit, allocate)

    def _read_result(
        self,
        what: str,
        out_at: int,
        want: tuple[int, ...],
        rcode: int,
        rows: int,
        output_limit: int,
        allocate: Callable[[int], Any] | None,
    ) -> tuple:
        """Read back and check the output descriptor and buffers (as read_result in C)."""
        base = self._base
        got = DESCRIPTOR.unpack(ctypes.string_at(base + out_at, DESCRIPTOR_SIZE))
        # The guest may write only null_count, and values/values_len of a varlen result.
        for f in (F_TYPE, F_LENGTH, F_VALIDITY, F_OFFSETS, F_RESERVED):
            if got[f] != want[f]:
                self._invalid(what, f"it changed the output descriptor's '{FIELD_NAMES[f]}' field from {want[f]} to {got[f]}")
        rtype = _TYPES[rcode]
        if not rtype.is_varlen and got[5:7] != want[5:7]:
            self._invalid(what, "it changed 'values' or 'values_len' of a fixed-width result")
        values_at, values_len = got[5], got[6]
        if rtype.is_varlen:
            self._scratch_bytes += values_len
            # Check everything before copying anything.
            if output_limit >= 0 and values_len > output_limit:
                self._fail("output_limit", what, values_len)
            if values_len > 0x7FFFFFFF:
                self._invalid(what, f"values_len {values_len} is over 2 GiB")
            raw_offsets = ctypes.string_at(base + want[F_OFFSETS], (rows + 1) * 4)
            self._check_offsets(what, raw_offsets, rows, values_len)
            mem_size = _memory_size(self._ctx, self._mem)
            if values_len and (values_at == 0 or values_at + values_len > mem_size):
                self._invalid(
                    what, f"values [0x{values_at:x}, +{values_len}) is outside the {mem_size}-byte linear memory"
                )
        raw_validity = ctypes.string_at(base + want[F_VALIDITY], (rows + 7) // 8)
        validity = None if raw_validity.count(b"\xff") == len(raw_validity) else raw_validity
        if rtype.is_bits:
            flags = ctypes.string_at(base + want[5], rows)
            if rows == 1:
                return validity, _output(allocate, b"\1" if flags[0] else b"\0")
            bits = np.packbits(np.frombuffer(flags, np.uint8) != 0, bitorder="little")
            return validity, _output(allocate, bits.tobytes())
        if not rtype.is_varlen:
            return validity, _output(allocate, ctypes.string_at(base + want[5], want[6]))
        return (
            validity,
            _output(allocate, raw_offsets),
            _output(allocate, ctypes.string_at(base + values_at, values_len) if values_len else b""),
        )

    def _check_offsets(self, what: str, raw: bytes, rows: int, values_len: int) -> None:
        problem = offsets_problem(raw, rows, values_len)
        if problem:
            self._invalid(what, problem)

    def _invalid(self, what: str, message: str) -> None:
        self._fail("invalid", what, message)


def offsets_problem(raw: bytes, rows: int, end: int | None = None) -> str | None:
    """What is wrong with ``rows + 1`` u32 offsets a guest wrote, or None: they start at 0,
    never decrease and, when ``end`` is given, end at it (a values_len). One row, SQLite's
    common case, is checked without numpy."""
    if rows == 1:
        offsets: Any = struct.unpack("<II", raw)
        decrease = 0 if offsets[1] < offsets[0] else None
    else:
        offsets = np.frombuffer(raw, np.uint32)
        steps = np.diff(offsets.astype(np.int64))
        decrease = int(np.argmax(steps < 0)) if rows and bool(np.any(steps < 0)) else None
    if offsets[0] != 0:
        return f"offsets[0] is {offsets[0]}, not 0"
    if decrease is not None:
        return f"offsets decrease at row {decrease} ({offsets[decrease]} then {offsets[decrease + 1]})"
    if end is not None and offsets[rows] != end:
        return f"offsets[{rows}] is {offsets[rows]} but values_len is {end}"
    return None


def _output(allocate: Callable[[int], Any] | None, data: bytes) -> Any:
    """``data`` in a buffer from ``allocate`` (bytes when None), as output_buffer in C."""
    if allocate is None:
        return data
    buf = allocate(len(data))
    view = memoryview(buf).cast("B")
    if len(view) < len(data):
        raise ValueError("allocate() returned a short buffer")
    view[: len(data)] = data
    return buf


def column_pieces(column: tuple, rows: int, what: str) -> tuple[bytes, bytes, bytes]:
    """One column description as the (validity, offsets, values) bytes of its frame part,
    rebased to row 0; checked to cover ``rows`` rows (as column_from in C)."""
    if type(column) is not tuple or len(column) != 6:
        raise ValueError("bad column description")
    code, off, null_count, validity, buf1, buf2 = column
    t = _TYPES.get(code)
    if t is None or off < 0 or not 0 <= null_count <= 0xFFFFFFFF:
        raise ValueError("bad column description")
    short = ValueError(f"`{what}`: an argument array's buffers are shorter than its length")
    bits = b""
    if null_count:
        if validity is None or len(memoryview(validity).cast("B")) * 8 < off + rows:
            raise short
        if rows == 1:
            bits = bytes([memoryview(validity).cast("B")[off // 8] >> (off % 8) & 1])
        else:
            bits = packed_bits(validity, off, rows).tobytes()
    if t.is_bits:
        if rows and (buf1 is None or len(memoryview(buf1).cast("B")) * 8 < off + rows):
            raise short
        if rows == 1:
            return bits, b"", bytes([memoryview(buf1).cast("B")[off // 8] >> (off % 8) & 1])
        flags = np.unpackbits(_bytes(buf1), bitorder="little", count=off + rows)[off:] if rows else np.zeros(0, np.uint8)
        return bits, b"", flags.tobytes()
    if not t.is_varlen:
        w = t.width
        data = memoryview(buf1).cast("B") if buf1 is not None else memoryview(b"")
        if rows and len(data) < (off + rows) * w:
            raise short
        return bits, b"", data[off * w : (off + rows) * w].tobytes()
    if buf1 is None or len(memoryview(buf1).cast("B")) < (off + rows + 1) * 4:
        raise short
    if rows == 1:  # a one-row call (SQLite's): no numpy
        start, end = struct.unpack_from("<ii", buf1, off * 4)
        offsets = struct.pack("<II", 0, max(end - start, 0))
    else:
        array = np.frombuffer(buf1, np.int32, count=rows + 1, offset=off * 4)
        start, end = int(array[0]), int(array[-1])
        offsets = (array - start).astype(np.uint32).tobytes()
    if start < 0 or end < start:
        raise short
    data = memoryview(buf2).cast("B") if buf2 is not None else memoryview(b"")
    if end > start and len(data) < end:
        raise short
    return bits, offsets, data[start:end].tobytes()


def _bytes(buf: Any) -> np.ndarray:
    return np.frombuffer(buf, np.uint8)


def packed_bits(buf: Any, off: int, n: int) -> np.ndarray:
    """``n`` bits of a bitmap from bit ``off``, packed again from bit 0."""
    if off % 8 == 0:
        return _bytes(buf)[off // 8 : off // 8 + (n + 7) // 8]
    bits = np.unpackbits(_bytes(buf), bitorder="little", count=off + n)[off:]
    return np.packbits(bits, bitorder="little")
