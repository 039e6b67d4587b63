"""Table functions (ABI §6): one call, over one row of arguments, streams batches of rows.

A :class:`TableFunction` makes :class:`TableCall` objects: ``__open`` over the arguments,
then ``__next`` into output columns the host prepared until the guest says it is done (0
rows), then ``__close``. Memory stays bounded however many rows a call yields: one batch is
in the guest at a time. Every limit applies to each guest call; the rows of one call are
bounded by ``Limits.table_rows``. The engine adapters drive calls one row of arguments at a
time (SQLite's virtual tables); :meth:`TableFunction.__call__` streams one call as a
``pyarrow.RecordBatchReader``.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import temporal
from .abi import DESCRIPTOR, DESCRIPTOR_SIZE, FIELD_NAMES, AbiType, FunctionSpec, align8
from .columns import row_column, value_kind
from .errors import ArgumentTypeError, GuestError, RowLimitExceeded
from .pycore import offsets_problem

if TYPE_CHECKING:
    from .instance import Instance, InstancePool

#: Rows per ``__next`` call for direct calls (the engines choose their own).
DEFAULT_BATCH_ROWS = 65_536
#: The most rows of one ``__next`` call: its output buffers stay under 0.5 GiB.
MAX_BATCH_ROWS = 1 << 20



class TableFunction:
    """A table-valued SQL function of a loaded module.

    >>> series = mod.functions["series"]                    # doctest: +SKIP
    >>> series(1, 5, 2).read_all()                          # doctest: +SKIP
    pyarrow.Table  value: int64  [[1, 3, 5]]

    Calling it with one value per parameter returns a ``pyarrow.RecordBatchReader`` that
    runs the guest as it is read; :meth:`lateral` runs it once per row of argument columns.
    """

    kind = "table"

    def __init__(self, pool: InstancePool, spec: FunctionSpec):
        #: The module's instances, one per thread (``pool.spec.label`` names the module).
        self.pool = pool
        self.spec = spec
        self.name = spec.name
        #: The output columns, as Arrow sees them.
        self.schema = pa.schema([pa.field(n, t.arrow) for n, t in spec.columns])
        self.limits = pool.spec.limits

    def __repr__(self) -> str:
        return f"<TableFunction {self.spec.signature()} from {self.pool.spec.label}>"

    def __call__(self, *args: Any, batch_rows: int = DEFAULT_BATCH_ROWS) -> pa.RecordBatchReader:
        """One call over ``args`` (Python values, None for NULL), read lazily in batches of
        at most ``batch_rows`` rows. It opens now, so bad arguments fail here; it runs in an
        instance of its own, so the reader may be read on any thread (one at a time)."""
        values = self.check_arguments(args)
        call = TableCall(self, self.pool.dedicated(self.name), values)
        return pa.RecordBatchReader.from_batches(self.schema, call.batches(batch_rows))

    def lateral(self, *columns: Any, batch_rows: int = DEFAULT_BATCH_ROWS) -> pa.RecordBatchReader:
        """One call per row of the argument columns (sequences or arrays of equal length),
        as ``FROM t, LATERAL f(t.x)`` does: each batch starts with ``input_row``, the index of
        the row whose call produced it, so each row's output stays apart."""
        if len(columns) != len(self.spec.params):
            raise ArgumentTypeError(f"`{self.name}` takes {len(self.spec.params)} arguments, {len(columns)} given")
        rows = [c.to_pylist() if isinstance(c, (pa.Array, pa.ChunkedArray)) else list(c) for c in columns]
        if len({len(r) for r in rows}) > 1:
            raise ArgumentTypeError(f"`{self.name}`: the argument columns differ in length")
        schema = pa.schema([pa.field("input_row", pa.int64()), *self.schema])
        inst = self.pool.dedicated(self.name)

        def batches() -> Iterator[pa.RecordBatch]:
            for i, values in enumerate(zip(*rows)):
                for batch in TableCall(self, inst, self.check_arguments(values)).batches(batch_rows):
                    index = pa.array(np.full(batch.num_rows, i, dtype=np.int64))
                    yield pa.RecordBatch.from_arrays([index, *batch.columns], schema=schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def dedicated_exports(self) -> tuple[Any, ...]:
        """For callers in C: a new instance's core, the addresses of ``__open``, ``__next``
        and ``__close`` in it, what raises the error for an ``__open`` that returned 0, and
        the instance itself (kept alive with the tuple)."""
        inst = self.pool.dedicated(self.name)
        export = self.spec.export
        return (
            inst.core,
            inst.func_addr(f"{export}__open"),
            inst.func_addr(f"{export}__next"),
            inst.func_addr(f"{export}__close"),
            lambda part="__open": _raise_open_failed(self, inst),
            inst,
        )

    def check_arguments(self, args: Sequence[Any]) -> list[Any]:
        """The arguments as the Python values a call takes, each held to its parameter's type
        (as a one-row scalar call holds them)."""
        params = self.spec.params
        if len(args) != len(params):
            raise ArgumentTypeError(f"`{self.name}` takes {len(params)} arguments, {len(args)} given")
        values = []
        for i, (v, t) in enumerate(zip(args, params)):
            if isinstance(v, np.generic):
                v = v.item()
            if v is not None and (not isinstance(v, t.accepts) or (t.name != "bool" and isinstance(v, bool))):
                raise ArgumentTypeError(f"`{self.name}` argument {i + 1} must be {t.name}, got {value_kind(v)} {v!r}")
            if v is not None and t.range is not None and not t.range[0] <= v <= t.range[1]:
                raise ArgumentTypeError(f"`{self.name}` argument {i + 1} ({t.name}) is out of range: {v}")
            if v is not None and t.temporal:
                try:
                    temporal.to_raw(t.temporal, v)
                except TypeError:
                    raise ArgumentTypeError(
                        f"`{self.name}` argument {i + 1} must be {t.name}, got {value_kind(v)} {v!r}"
                    ) from None
            values.append(v)
        return values


class TableCall:
    """One running call of a table function in one instance. Not thread-safe; every call
    ends with :meth:`close` (reading :meth:`batches` to the end closes it too)."""

    def __init__(
        self, fn: TableFunction, inst: Instance, values: Sequence[Any], interrupted: Callable[[], bool] | None = None
    ):
        self.fn = fn
        self._inst = inst
        self._interrupted = interrupted
        self._export = fn.spec.export
        self._state = 0
        self._rows = 0
        #: True once the guest said it has no more rows (or the call failed, or closed).
        self.done = False
        if fn.spec.strict and any(v is None for v in values):
            self.done = True  # a NULL argument gives no rows, without calling the guest
            return
        state = self._guest(lambda: self._open(values))
        if not state:
            self.done = True
            _raise_open_failed(fn, inst)
        self._state = state

    # -- the guest calls --------------------------------------------------------------------

    def _guest(self, call: Callable[[], Any]) -> Any:
        try:
            with self._inst.interruptible(self._interrupted):
                return call()
        except GuestError:
            self.done = True
            self._state = 0  # it went with the instance
            raise

    def _open(self, values: Sequence[Any]) -> int | None:
        """``__open(args, nargs)`` over one row of arguments, copied into a frame block."""
        frame = _argument_frame(self.fn.spec.params, values)
        inst = self._inst
        block = inst.core.frame_block(max(len(frame.data), 8), self.fn.name, False)
        frame.place(block)
        base, _ = inst.core.memory()
        ctypes.memmove(base + block, bytes(frame.data), len(frame.data))
        return inst.call(f"{self._export}__open", (block, len(values)), what=self.fn.name)

    def next_batch(self, capacity: int) -> pa.RecordBatch | None:
        """The next batch of at most ``capacity`` rows; None when the call is done."""
        return self._next_checked(capacity, _OutputReader.batch)

    def next_rows(self, capacity: int) -> list[list[Any]] | None:
        """As :meth:`next_batch`, the batch as plain Python columns (None for NULL)."""
        return self._next_checked(capacity, _OutputReader.python_columns)

    def _next_checked(self, capacity: int, read: Callable[[_OutputReader], Any]) -> Any:
        if self.done:
            return None
        if not 1 <= capacity <= MAX_BATCH_ROWS:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH_ROWS} rows, not {capacity}")
        reader = self._guest(lambda: self._next(capacity))
        if reader is None:
            self.close()
            return None
        return self._guest(lambda: read(reader))

    def _next(self, capacity: int) -> _OutputReader | None:
        fn, inst = self.fn, self._inst
        columns = fn.spec.columns
        layout = _OutputLayout([t for _, t in columns], capacity)
        block = inst.core.frame_block(layout.size, fn.name, False)
        wants = layout.descriptors(block)
        base, _ = inst.core.memory()
        ctypes.memmove(base + block, layout.initial_bytes(wants), layout.size)
        got = inst.call(f"{self._export}__next", (self._state, block, len(columns)), what=fn.name)
        rows = got - (1 << 32) if got >= 1 << 31 else got
        if rows < 0:
            inst.status_failed(rows, fn.name)
        if rows == 0:
            return None
        if rows > capacity:
            raise inst.invalid_output(fn.name, f"{self._export}__next returned {rows} rows for a batch of {capacity}")
        limit = fn.limits.table_rows
        if limit is not None and self._rows + rows > limit:
            self.close()
            raise RowLimitExceeded(
                f"`{fn.name}` in {inst.label} returned more than Limits.table_rows = {limit} rows in one call; "
                "raise the limit or return fewer",
                function=fn.name,
                module=inst.label,
            )
        self._rows += rows
        return _OutputReader(inst, fn, block, wants, rows)

    def batches(self, capacity: int) -> Iterator[pa.RecordBatch]:
        """Every remaining batch; the call is closed at the end, or when the reader is dropped."""
        try:
            while (batch := self.next_batch(capacity)) is not None:
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        """Release the guest's state (``__close``); never raises, safe to call twice."""
        self.done = True
        state, self._state = self._state, 0
        if not state or self._inst.broken or sys.is_finalizing():
            return  # at exit the instance's store may already be gone: nothing to give back
        try:
            self._inst.call(f"{self._export}__close", (state,), what=self.fn.name)
        except GuestError:
            pass  # the instance let go of itself, and of the state with it


def _raise_open_failed(fn: TableFunction, inst: Instance) -> None:
    """``__open`` returned 0: the call failed (the guest's message says why)."""
    raise inst.no_state(fn.name, f"{fn.spec.export}__open failed")


# -- the frames ---------------------------------------------------------------------------


class _ArgumentFrame:
    """One row of arguments laid out as descriptors and buffers, addresses filled in by
    :meth:`place` once the block is known."""

    def __init__(self, n: int):
        self.data = bytearray(DESCRIPTOR_SIZE * n)
        self._fields: list[tuple[int, tuple]] = []

    def add(self, i: int, t: AbiType, value: Any) -> None:
        # The value's bytes as a one-row scalar call makes them (columns.row_column): a NULL,
        # a fixed-width value, or a varlen value's offsets and bytes.
        _, _, nulls, _, first, data = row_column(t, value)
        validity = self._append(b"\x00") if nulls else 0
        offsets = self._append(first) if t.is_varlen else 0
        payload = (data or b"") if t.is_varlen else first
        values = self._append(payload)
        self._fields.append((i, (t.code, 1, nulls, validity, offsets, values, len(payload))))

    def _append(self, data: bytes) -> int:
        at = align8(len(self.data))
        self.data.extend(bytes(at - len(self.data)))
        self.data.extend(data)
        return at

    def place(self, block: int) -> None:
        for i, (code, length, nulls, validity, offsets, values, values_len) in self._fields:
            varlen = offsets != 0
            DESCRIPTOR.pack_into(
                self.data,
                DESCRIPTOR_SIZE * i,
                code,
                length,
                nulls,
                block + validity if nulls else 0,
                block + offsets if varlen else 0,
                block + values,
                values_len,
                0,
            )


def _argument_frame(params: Sequence[AbiType], values: Sequence[Any]) -> _ArgumentFrame:
    frame = _ArgumentFrame(len(params))
    for i, (t, v) in enumerate(zip(params, values)):
        frame.add(i, t, v)
    return frame


class _OutputLayout:
    """The output columns of one ``__next`` call: descriptors, then per column a validity
    bitmap (all set) and a values buffer (fixed width) or an offsets buffer (varlen)."""

    def __init__(self, types: list[AbiType], capacity: int):
        self.types = types
        self.capacity = capacity
        pos = DESCRIPTOR_SIZE * len(types)
        self.places = []
        for t in types:
            validity = pos
            pos = align8(pos + (capacity + 7) // 8)
            buffer = pos
            pos = align8(pos + ((capacity + 1) * 4 if t.is_varlen else capacity * t.width))
            self.places.append((validity, buffer))
        self.size = pos

    def descriptors(self, block: int) -> list[tuple[int, ...]]:
        wants = []
        for t, (validity, buffer) in zip(self.types, self.places):
            varlen = t.is_varlen
            wants.append(
                (
                    t.code,
                    self.capacity,
                    0,
                    block + validity,
                    block + buffer if varlen else 0,
                    0 if varlen else block + buffer,
                    0 if varlen else self.capacity * t.width,
                    0,
                )
            )
        return wants

    def initial_bytes(self, wants: list[tuple[int, ...]]) -> bytes:
        frame = bytearray(self.size)
        for i, want in enumerate(wants):
            DESCRIPTOR.pack_into(frame, DESCRIPTOR_SIZE * i, *want)
            validity = self.places[i][0]
            frame[validity : validity + (self.capacity + 7) // 8] = b"\xff" * ((self.capacity + 7) // 8)
        return bytes(frame)


class _OutputReader:
    """Reads back and checks one batch: every descriptor field the guest may not change,
    offsets, bounds, UTF-8 and the batch's output bytes, before anything is copied. Gives an
    Arrow record batch, or plain Python columns (what SQLite's cursor hands on row by row)."""

    def __init__(self, inst: Instance, fn: TableFunction, block: int, wants: list[tuple[int, ...]], rows: int):
        self.inst, self.fn, self.block, self.wants, self.rows = inst, fn, block, wants, rows

    def invalid(self, column: str, message: str) -> Exception:
        return self.inst.invalid_output(self.fn.name, f"column {column!r}: {message}")

    def batch(self) -> pa.RecordBatch:
        arrays = [self._arrow(*column) for column in self._columns()]
        return pa.RecordBatch.from_arrays(arrays, schema=self.fn.schema)

    def python_columns(self) -> list[list[Any]]:
        return [self._python(*column) for column in self._columns()]

    def _columns(self) -> list[tuple]:
        """(name, type, validity bytes or None when all valid, values bytes, offsets) per
        column, every check done."""
        inst, rows = self.inst, self.rows
        base, mem_size = inst.core.memory()
        varlen_bytes = 0
        described = []
        for i, ((name, t), want) in enumerate(zip(self.fn.spec.columns, self.wants)):
            got = DESCRIPTOR.unpack(ctypes.string_at(base + self.block + DESCRIPTOR_SIZE * i, DESCRIPTOR_SIZE))
            for f in (0, 1, 3, 4, 7):
                if got[f] != want[f]:
                    raise self.invalid(
                        name, f"it changed the output descriptor's '{FIELD_NAMES[f]}' field from {want[f]} to {got[f]}"
                    )
            if not t.is_varlen and got[5:7] != want[5:7]:
                raise self.invalid(name, "it changed 'values' or 'values_len' of a fixed-width column")
            varlen_bytes += got[6] if t.is_varlen else 0
            described.append((name, t, want, got))
        limit = self.fn.limits.output_bytes
        if limit is not None and varlen_bytes > limit:
            raise inst.output_limit_exceeded(self.fn.name, varlen_bytes, limit)
        columns = []
        for name, t, want, got in described:
            validity = _validity(ctypes.string_at(base + want[3], (rows + 7) // 8), rows)
            if not t.is_varlen:
                columns.append((name, t, validity, ctypes.string_at(base + want[5], rows * t.width), None))
                continue
            values_at, values_len = got[5], got[6]
            if values_len > 0x7FFFFFFF:
                raise self.invalid(name, f"values_len {values_len} is over 2 GiB")
            raw_offsets = ctypes.string_at(base + want[4], (rows + 1) * 4)
            problem = offsets_problem(raw_offsets, rows, values_len)
            if problem:
                raise self.invalid(name, problem)
            offsets = np.frombuffer(raw_offsets, np.uint32)
            if values_len and (values_at == 0 or values_at + values_len > mem_size):
                raise self.invalid(
                    name, f"values [0x{values_at:x}, +{values_len}) is outside the {mem_size}-byte linear memory"
                )
            data = ctypes.string_at(base + values_at, values_len) if values_len else b""
            columns.append((name, t, validity, data, offsets))
        return columns

    def _arrow(self, name: str, t: AbiType, validity: bytes | None, data: bytes, offsets: Any) -> pa.Array:
        rows = self.rows
        bitmap = None if validity is None else pa.py_buffer(validity)
        if offsets is None:
            if t.is_bits:
                data = np.packbits(np.frombuffer(data, np.uint8) != 0, bitorder="little").tobytes()
            return pa.Array.from_buffers(t.arrow, rows, [bitmap, pa.py_buffer(data)])
        array = pa.Array.from_buffers(t.arrow, rows, [bitmap, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)])
        if t.name == "utf8":
            try:
                array.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise self.invalid(name, f"a utf8 value is not valid UTF-8 ({exc})") from None
        return array

    def _python(self, name: str, t: AbiType, validity: bytes | None, data: bytes, offsets: Any) -> list[Any]:
        rows = self.rows
        if offsets is None:
            values = np.frombuffer(data, f"<{t.struct_code}" if not t.is_bits else np.uint8)
            out = (values != 0).tolist() if t.is_bits else values.tolist()
            if t.temporal:
                try:
                    out = [temporal.from_raw(t.temporal, v) for v in out]
                except OverflowError:
                    raise self.invalid(name, f"a {t.name} value is outside years 1 to 9999") from None
        else:
            bounds = offsets.tolist()
            if t.name == "utf8":
                try:
                    out = [data[bounds[i] : bounds[i + 1]].decode("utf-8") for i in range(rows)]
                except UnicodeDecodeError as exc:
                    raise self.invalid(name, f"a utf8 value is not valid UTF-8 ({exc})") from None
            else:
                out = [data[bounds[i] : bounds[i + 1]] for i in range(rows)]
        if validity is not None:
            for i in range(rows):
                if not validity[i >> 3] >> (i & 7) & 1:
                    out[i] = None
        return out


def _validity(raw: bytes, rows: int) -> bytes | None:
    """The first ``rows`` bits of a validity bitmap, or None when they are all set."""
    full, tail = divmod(rows, 8)
    mask = (1 << tail) - 1
    if raw[:full] == b"\xff" * full and (not tail or raw[full] & mask == mask):
        return None
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")[:rows]
    return np.packbits(bits, bitorder="little").tobytes()
