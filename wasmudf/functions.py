"""Engine-neutral function objects: a scalar is callable on pyarrow arrays.

The adapters hand these to DuckDB and SQLite; nothing here knows about either engine.
"""

from __future__ import annotations

import ctypes
import functools
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import _native
from .abi import DESCRIPTOR, DESCRIPTOR_SIZE, F_NULL_COUNT, FIELD_NAMES, AbiType, FunctionSpec
from .columns import (
    ARROW_TYPES,
    EMPTY,
    HostBuffer,
    InputColumn,
    input_column,
    read_output,
    write_frame,
)
from .errors import ArgumentTypeError, GuestError
from .frames import frame_kind, from_arrow, to_arrow

if TYPE_CHECKING:
    from .module import Module
from .instance import Instance

#: Rows handed to the guest per call, and the most variable-length input bytes per call.
BATCH_ROWS = 65_536
BATCH_VARLEN_BYTES = 16 * 1024 * 1024
SMALL_RESULT_ROWS = 256  # up to this many rows, the C accelerator returns a result as bytes

_VARLEN_CLASSES = (pa.StringArray, pa.BinaryArray)
_ARRAY_CLASSES = {
    "bool": pa.BooleanArray,
    "int32": pa.Int32Array,
    "int64": pa.Int64Array,
    "float32": pa.FloatArray,
    "float64": pa.DoubleArray,
    "utf8": pa.StringArray,
    "binary": pa.BinaryArray,
}
#: struct codes of the fixed-width ABI types (little-endian when prefixed with "<").
STRUCT_CODES = {"bool": "?", "int32": "i", "int64": "q", "float32": "f", "float64": "d"}
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class ArrowArguments:
    """Call arguments as Arrow arrays of the parameter types, with errors that say which
    argument and what it was (shared by scalar and aggregate functions)."""

    name: str
    spec: FunctionSpec
    _arrow_params: list[pa.DataType]

    def _coerce(self, index: int, value: Any) -> pa.Array | pa.ChunkedArray:
        value = to_arrow(value)  # a pandas/polars Series
        target = self._arrow_params[index]
        if not isinstance(value, (pa.Array, pa.ChunkedArray)):
            try:
                value = pa.array(value, type=target)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
                raise self._type_error(index, f"a {type(value).__name__} ({exc})") from None
        if value.type != target:
            try:
                value = value.cast(target, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise self._type_error(index, f"{value.type} ({exc})") from None
        return value

    def _type_error(self, index: int, found: str) -> ArgumentTypeError:
        return ArgumentTypeError(
            f"`{self.name}` argument {index + 1} must be {self.spec.params[index].name}, got {found}"
        )


class ScalarFunction(ArrowArguments):
    """A scalar SQL function of a loaded module.

    Call it on pyarrow arrays (or anything ``pyarrow.array`` accepts) with one argument per
    parameter; it returns a ``pyarrow.Array``, or a ``pyarrow.ChunkedArray`` when an argument
    was chunked. Given pandas or polars Series it answers with a Series of the same kind.
    Rows are sent to the guest export in batches of up to ``BATCH_ROWS``.
    ``interrupted``, a callable, stops a running guest call within one epoch tick once it
    returns true (``CallInterrupted``).

    >>> mod.functions["add_i64"](pa.array([1, 2]), pa.array([10, None]))  # doctest: +SKIP
    <pyarrow.lib.Int64Array object at ...> [11, null]

    Raises:
        ArgumentTypeError: wrong number of arguments, or a value that cannot be converted
            to the parameter's type.
        GuestError: the guest trapped, failed, hit a limit or returned invalid data.
    """

    kind = "scalar"

    def __init__(self, module: Module, spec: FunctionSpec):
        self.module = module
        self.spec = spec
        self.name = spec.name
        self._arrow_params = [ARROW_TYPES[t.name] for t in spec.params]
        self._array_classes = [_ARRAY_CLASSES[t.name] for t in spec.params]
        self._param_codes = [(t.code, t.is_varlen) for t in spec.params]
        # Looked up once: the per-call path below runs for every DuckDB vector.
        self._pool = module._pool
        self._export = spec.export
        self._rcode = spec.returns.code
        self._strict = spec.strict
        self._utf8_result = spec.returns.name == "utf8"
        self._checks = [(cls, t.code, t.is_varlen) for cls, t in zip(self._array_classes, spec.params)]
        limit = module.limits.output_bytes
        self._output_limit = -1 if limit is None else limit
        self.return_type = ARROW_TYPES[spec.returns.name]
        fixed = not spec.returns.is_varlen and not any(t.is_varlen for t in spec.params)
        self._row_plan = RowPlan(spec, module.limits.output_bytes) if fixed and spec.params else None

    def __repr__(self) -> str:
        return f"<ScalarFunction {self.spec.signature()} from {self.module.label}>"

    # -- whole columns ---------------------------------------------------------------------

    def __call__(
        self, *args: Any, rows: int | None = None, interrupted: Callable[[], bool] | None = None
    ) -> pa.Array | pa.ChunkedArray:
        columns = self._direct_columns(args)
        if columns is not None:  # the common case, DuckDB's vectors among it
            return self._invoke(args, len(args[0]), interrupted, columns)
        if self._large_ok(args):  # long numeric columns: batches written into one result
            return self._call_large(args, interrupted)
        frames = frame_kind(args)
        if frames is not None:  # pandas/polars Series in: the same kind out
            result = self(*[to_arrow(a) for a in args], rows=rows, interrupted=interrupted)
            return from_arrow(frames[0], frames[1], result, self.name)
        if interrupted is not None:
            with self.module._pool.get(self.name).interruptible(interrupted):
                return self(*args, rows=rows)
        spec = self.spec
        if len(args) != len(spec.params):
            raise ArgumentTypeError(
                f"{spec.signature()} takes {len(spec.params)} arguments, {len(args)} given"
            )
        columns = [self._coerce(i, a) for i, a in enumerate(args)]
        if columns:
            n = len(columns[0])
            for i, c in enumerate(columns[1:], 1):
                if len(c) != n:
                    raise ArgumentTypeError(
                        f"`{self.name}`: argument {i + 1} has {len(c)} rows, argument 1 has {n}"
                    )
        elif rows is None:
            raise ArgumentTypeError(f"`{self.name}` takes no arguments: pass rows=N")
        else:
            n = rows
        chunked = any(isinstance(c, pa.ChunkedArray) for c in columns)
        pieces = [self._call_arrays(batch, m) for batch, m in _batches(columns, n)]
        if chunked:
            return pa.chunked_array(pieces, type=self.return_type)
        if len(pieces) == 1:
            return pieces[0]
        return pa.concat_arrays(pieces) if pieces else pa.array([], type=self.return_type)

    def _direct_columns(self, args: tuple[Any, ...]) -> list[tuple] | None:
        """When ``args`` can go to the guest as they are (one batch of plain arrays of the
        right types, no NULLs to strip for a strict function, no more varlen data than one
        call takes): their descriptions for the C accelerator, as :func:`arrow_columns`
        makes them (built here in the same pass as the checks: this runs for every vector)."""
        checks = self._checks
        if not args or len(args) != len(checks):
            return None
        n = len(args[0])
        if not 0 < n <= BATCH_ROWS:
            return None
        strict = self._strict
        varlen = 0
        columns = []
        for a, (cls, code, is_varlen) in zip(args, checks):
            # The exact class pins the Arrow type (an Int64Array is int64, never an extension).
            if type(a) is not cls or len(a) != n:
                return None
            column = arrow_column(a, code, is_varlen)
            if strict and column[2]:  # NULLs to strip first
                return None
            data = column[5]
            if data is not None:
                varlen += data.size
            columns.append(column)
        return columns if varlen <= BATCH_VARLEN_BYTES else None

    def _call_arrays(self, arrays: list[pa.Array], n: int) -> pa.Array:
        """Call on one batch of plain arrays, applying the function's NULL handling."""
        if self.spec.strict and any(a.null_count for a in arrays):
            mask = valid_rows(arrays, n)
            kept = pa.array(mask)
            result = self._call_dense([a.filter(kept) for a in arrays], int(mask.sum()))
            # Put the results back in place, NULL where a row was skipped.
            positions = pa.array(np.cumsum(mask) - 1, mask=~mask)
            return result.take(positions)
        return self._call_dense(arrays, n)

    def _large_ok(self, args: tuple[Any, ...]) -> bool:
        """Plain numeric arrays of the right types, longer than one batch, without NULLs, and
        a fixed-width result that is not bool: the case _call_large serves."""
        classes = self._array_classes
        if not args or len(args) != len(classes) or self.spec.returns.name in ("bool", "utf8", "binary"):
            return False
        n = len(args[0])
        if n <= BATCH_ROWS or _native.speedups is None:
            return False
        return all(
            type(a) is cls
            and cls not in _VARLEN_CLASSES
            and cls is not pa.BooleanArray
            and len(a) == n
            and not a.null_count
            for a, cls in zip(args, classes)
        )

    def _call_large(self, arrays: Sequence[pa.Array], interrupted: Callable[[], bool] | None) -> pa.Array:
        """Batch after batch into one preallocated result buffer: no per-batch arrays to
        concatenate afterwards (one copy of the result saved)."""
        n = len(arrays[0])
        width = self.return_type.bit_width // 8
        result = pa.allocate_buffer(n * width)
        window = memoryview(result)  # writable: the guest's output is copied straight in
        values = [a.buffers()[1] for a in arrays]
        nulls: list[tuple[int, int, bytes]] = []
        inst = self.module._pool.get(self.name)
        if inst.core is None:  # switched to the pure-Python path after this call began
            return self._call_dense(list(arrays), n)
        func = inst.func_addr(self.spec.export)
        try:
            for start in range(0, n, BATCH_ROWS):
                m = min(BATCH_ROWS, n - start)
                columns = [
                    (code, a.offset + start, 0, None, buf, None)
                    for a, buf, (code, _) in zip(arrays, values, self._param_codes)
                ]
                part = window[start * width : (start + m) * width]
                validity, _ = inst.core.call_batch(
                    func,
                    self.name,
                    m,
                    self.spec.returns.code,
                    self._output_limit,
                    lambda size, part=part: part,
                    columns,
                    0,
                    0,
                    interrupted,
                )
                if validity is not None:
                    nulls.append((start, m, validity))
        except GuestError:
            self.module._pool.discard()
            raise
        bitmap = _merge_validity(n, nulls) if nulls else None
        return pa.Array.from_buffers(self.return_type, n, [bitmap, result])

    def _call_dense(self, arrays: list[pa.Array], n: int) -> pa.Array:
        pieces = []
        for start, stop in row_ranges(arrays, n):
            part = arrays if stop - start == n else [a.slice(start, stop - start) for a in arrays]
            pieces.append(self._invoke(part, stop - start))
        if len(pieces) == 1:
            return pieces[0]
        return pa.concat_arrays(pieces) if pieces else pa.array([], type=self.return_type)

    def _invoke(
        self,
        arrays: Sequence[pa.Array],
        rows: int,
        interrupted: Callable[[], bool] | None = None,
        columns: list[tuple] | None = None,
    ) -> pa.Array:
        """One guest call on plain arrays of the parameter types, NULLs already handled
        (``columns``: their descriptions, when the caller has them)."""
        inst = self._pool.get(self.name)
        core = inst.core
        try:
            if core is not None and rows:
                # The C accelerator reads Arrow's buffers directly.
                result = core.call_batch(
                    inst.func_addr(self._export),
                    self.name,
                    rows,
                    self._rcode,
                    self._output_limit,
                    # A few rows' result is cheaper as bytes than as a buffer from Arrow's pool.
                    pa.allocate_buffer if rows > SMALL_RESULT_ROWS else None,
                    columns or arrow_columns(arrays, self._param_codes),
                    0,
                    0,
                    interrupted,
                )
                return result_array(inst, self.name, self.return_type, self._utf8_result, rows, result)
            cols = [input_column(a, t) for a, t in zip(arrays, self.spec.params)]
            with inst.interruptible(interrupted):
                frame = write_frame(inst, cols, self.spec.returns, rows, self.name)
                inst.status_call(self.spec.export, (frame.args, len(cols), frame.out), what=self.name)
                return read_output(inst, frame, self.name, self.module.limits.output_bytes)
        except GuestError:
            self.module._pool.discard()
            raise

    # -- one row (SQLite) ------------------------------------------------------------------

    def row_function(self, interrupted: Callable[[], bool] | None = None) -> Callable[..., Any]:
        """The callable a per-row engine (SQLite) should register: Python values in, one
        Python value out, like :meth:`call_row`. ``interrupted`` (e.g. the connection's
        "was the query interrupted") stops a running guest within one epoch tick.

        For a function whose parameters and result are all fixed-width this is the C
        accelerator's ``RowCaller`` when it is built: SQLite calls straight into C, which
        hands anything unusual (a NULL for a ``called`` function, a value of the wrong type)
        back to :meth:`call_row`.
        """
        speedups = _native.speedups
        fallback = (
            self.call_row
            if interrupted is None
            else functools.partial(self.call_row, interrupted=interrupted)
        )
        if speedups is None or self._row_plan is None:
            return fallback
        return speedups.RowCaller(
            self._bind_row,
            fallback,
            self.name,
            [t.code for t in self.spec.params],
            self.spec.strict,
            self.spec.returns.code,
            interrupted,
        )

    def _bind_row(self) -> tuple[Any, int]:
        inst = self.module._pool.get(self.name)
        if inst.core is None:
            raise RuntimeError("the C accelerator was switched off after this function was registered")
        return inst.core, inst.func_addr(self.spec.export)

    def call_row(self, *values: Any, interrupted: Callable[[], bool] | None = None) -> Any:
        """Call on one row of Python values (SQLite's per-row interface); returns a Python value.

        ``None`` is NULL. Integers are range-checked against int32/int64 parameters.
        """
        if interrupted is not None:
            with self.module._pool.get(self.name).interruptible(interrupted):
                return self.call_row(*values)
        spec = self.spec
        if spec.strict and None in values:
            return None
        if self._row_plan is not None and None not in values:
            try:
                data = self._row_plan.pack_args(values)
            except (struct.error, TypeError, OverflowError):
                pass  # the generic path below explains the value or converts it as Arrow would
            else:
                inst = self.module._pool.get(self.name)
                try:
                    return self._row_plan.call(inst, data)
                except GuestError:
                    self.module._pool.discard()
                    raise
        cols = [self._row_column(i, t, v) for i, (t, v) in enumerate(zip(spec.params, values))]
        inst = self.module._pool.get(self.name)
        try:
            return self._invoke_row(inst, cols)
        except GuestError:
            self.module._pool.discard()
            raise

    def _row_column(self, index: int, t: AbiType, v: Any) -> InputColumn:
        if v is None:
            width = t.width or 0
            values = HostBuffer.of(bytes(width)) if width else EMPTY
            offsets = HostBuffer.of(bytes(8)) if t.is_varlen else EMPTY
            return InputColumn(t, 1, 1, HostBuffer.of(b"\0"), offsets, values)
        name = t.name
        if name in ("int32", "int64"):
            if type(v) is not int and not isinstance(v, (int, np.integer)):
                raise self._type_error(index, f"{sql_type_name(v)} {v!r}")
            lo, hi = _INT_RANGES[name]
            if not lo <= v <= hi:
                raise ArgumentTypeError(f"`{self.name}` argument {index + 1} ({name}) is out of range: {v}")
            data = struct.pack("<" + STRUCT_CODES[name], v)
        elif name in ("float32", "float64"):
            if not isinstance(v, (int, float)):
                raise self._type_error(index, f"{sql_type_name(v)} {v!r}")
            try:
                x = float(v)
            except OverflowError:
                raise ArgumentTypeError(
                    f"`{self.name}` argument {index + 1} ({name}) is out of range: {v}"
                ) from None
            data = _pack_float(name, x)
        elif name == "bool":
            if not isinstance(v, int):
                raise self._type_error(index, f"{sql_type_name(v)} {v!r}")
            data = b"\1" if v else b"\0"
        elif name == "utf8":
            if not isinstance(v, str):
                raise self._type_error(index, f"{sql_type_name(v)} {v!r}")
            data = v.encode("utf-8", errors="surrogatepass")
        else:
            if not isinstance(v, (bytes, bytearray, memoryview)):
                raise self._type_error(index, f"{sql_type_name(v)} {v!r}")
            data = bytes(v)
        if t.is_varlen:
            offsets = HostBuffer.of(struct.pack("<II", 0, len(data)))
            return InputColumn(t, 1, 0, EMPTY, offsets, HostBuffer.of(data) if data else EMPTY)
        return InputColumn(t, 1, 0, EMPTY, EMPTY, HostBuffer.of(data))

    def _invoke_row(self, inst: Instance, cols: list[InputColumn]) -> Any:
        arr = self._invoke_on(inst, cols)
        return arr[0].as_py()

    def _invoke_on(self, inst: Instance, cols: list[InputColumn]) -> pa.Array:
        frame = write_frame(inst, cols, self.spec.returns, 1, self.name)
        inst.status_call(self.spec.export, (frame.args, len(cols), frame.out), what=self.name)
        return read_output(inst, frame, self.name, self.module.limits.output_bytes)


def _pack_float(name: str, x: float) -> bytes:
    try:
        return struct.pack("<" + STRUCT_CODES[name], x)
    except OverflowError:
        # Past float32's range: IEEE rounding gives +-inf, as C's conversion and Arrow's cast do.
        return struct.pack("<f", math.copysign(math.inf, x))


class RowPlan:
    """One-row calls of a function whose parameters and result are all fixed-width.

    SQLite calls once per row, so this path avoids pyarrow: the descriptors, the argument
    values and the output slots are laid out once and written with one memmove per row.
    Layout: [arg descriptors][out descriptor][one 8-byte slot per argument][out validity
    (8 bytes)][out value (8 bytes)].
    """

    _FORMATS = {"bool": "B7x", "int32": "i4x", "int64": "q", "float32": "f4x", "float64": "d"}

    def __init__(self, spec: FunctionSpec, output_limit: int | None):
        self.spec = spec
        self.nargs = len(spec.params)
        self.values_at = DESCRIPTOR_SIZE * (self.nargs + 1)
        self.out_validity_at = self.values_at + 8 * self.nargs
        self.out_value_at = self.out_validity_at + 8
        self.size = self.out_value_at + 8
        self.args_struct = struct.Struct("<" + "".join(self._FORMATS[t.name] for t in spec.params))
        self.bools = [i for i, t in enumerate(spec.params) if t.name == "bool"]
        self.result = struct.Struct("<32sB7x" + STRUCT_CODES[spec.returns.name])
        self._headers: dict[int, tuple[bytes, bytes]] = {}

    def pack_args(self, values: tuple[Any, ...]) -> bytes:
        if len(values) != self.nargs:
            raise TypeError("wrong number of arguments")
        if self.bools:
            if not all(isinstance(values[i], int) for i in self.bools):
                raise TypeError("a bool parameter needs an INTEGER")
            values = tuple(bool(v) if i in self.bools else v for i, v in enumerate(values))
        # struct refuses floats and out-of-range ints for 'i'/'q': those fall back to the
        # generic path, which names the problem.
        return self.args_struct.pack(*values)

    def _header(self, block: int) -> tuple[bytes, bytes]:
        found = self._headers.get(block)
        if found is None:
            parts = []
            for i, t in enumerate(self.spec.params):
                parts.append(DESCRIPTOR.pack(t.code, 1, 0, 0, 0, block + self.values_at + 8 * i, t.width, 0))
            r = self.spec.returns
            out = DESCRIPTOR.pack(
                r.code, 1, 0, block + self.out_validity_at, 0, block + self.out_value_at, r.width, 0
            )
            found = self._headers[block] = (b"".join(parts) + out, out)
        return found

    def call(self, inst: Instance, args: bytes) -> Any:
        name = self.spec.name
        block = inst.frame_block(self.size, what=name, fresh=False)
        header, out_desc = self._header(block)
        frame = header + args + b"\xff" + bytes(15)
        base, _ = inst.memory()
        ctypes.memmove(base + block, frame, len(frame))
        out_addr = block + self.nargs * DESCRIPTOR_SIZE
        inst.status_call(self.spec.export, (block, self.nargs, out_addr), what=name)
        base, _ = inst.memory()
        raw = ctypes.string_at(base + out_addr, self.size - self.nargs * DESCRIPTOR_SIZE)
        desc, valid, value = self.result.unpack_from(raw[:32] + raw[32 + 8 * self.nargs :])
        if desc[:8] != out_desc[:8] or desc[12:] != out_desc[12:]:  # only null_count may change
            got, want = DESCRIPTOR.unpack(desc), DESCRIPTOR.unpack(out_desc)
            field = next(i for i in range(len(want)) if i != F_NULL_COUNT and got[i] != want[i])
            raise inst.invalid_output(
                name,
                f"it changed the output descriptor's '{FIELD_NAMES[field]}' field from {want[field]} to {got[field]}",
            )
        if not valid & 1:
            return None
        if self.spec.returns.name == "bool":
            return value != 0
        return value


def sql_type_name(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool) or isinstance(v, int):
        return "INTEGER"
    if isinstance(v, float):
        return "REAL"
    if isinstance(v, str):
        return "TEXT"
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "BLOB"
    return type(v).__name__


def _batches(columns: Sequence[pa.Array | pa.ChunkedArray], n: int) -> Iterator[tuple[list[pa.Array], int]]:
    """Plain-array batches of at most BATCH_ROWS rows, aligned across the columns."""
    if not columns:
        for start in range(0, n, BATCH_ROWS):
            yield [], min(BATCH_ROWS, n - start)
        return
    if n == 0:
        yield [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns], 0
        return
    if n <= BATCH_ROWS:  # one batch: DuckDB's vectors, most direct calls
        yield [plain_array(c) for c in columns], n
        return
    for start in range(0, n, BATCH_ROWS):
        m = min(BATCH_ROWS, n - start)
        part = []
        for c in columns:
            s = c.slice(start, m)
            part.append(s.combine_chunks() if isinstance(s, pa.ChunkedArray) else s)
        yield part, m


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


def arrow_columns(arrays: Sequence[pa.Array], param_codes: Sequence[tuple[int, bool]]) -> list[tuple]:
    """Plain arrays as the C accelerator's column descriptions, in Arrow's own layout:
    (type code, offset, null count, validity, values or offsets, data)."""
    return [arrow_column(a, code, varlen) for a, (code, varlen) in zip(arrays, param_codes)]


def arrow_column(a: pa.Array, code: int, varlen: bool) -> tuple:
    """One plain array as :func:`arrow_columns` describes it."""
    bufs = a.buffers()
    nulls = a.null_count
    return (code, a.offset, nulls, bufs[0] if nulls else None, bufs[1], bufs[2] if varlen else None)


def result_array(
    inst: Instance, name: str, arrow_type: pa.DataType, utf8: bool, rows: int, result: tuple
) -> pa.Array:
    """The array of a C accelerator result (already checked there), its utf8 rows checked here."""
    validity = pa.py_buffer(result[0]) if result[0] is not None else None
    buffers = [b if type(b) is not bytes else pa.py_buffer(b) for b in result[1:]]
    arr = pa.Array.from_buffers(arrow_type, rows, [validity, *buffers])
    if utf8:
        try:
            arr.validate(full=True)
        except pa.ArrowInvalid as exc:
            raise inst.invalid_output(name, f"a utf8 result is not valid UTF-8 ({exc})") from None
    return arr


def row_ranges(arrays: list[pa.Array], n: int) -> Iterator[tuple[int, int]]:
    """Split [0, n) so no call carries more than BATCH_VARLEN_BYTES of variable-length input."""
    varlen = [a for a in arrays if pa.types.is_string(a.type) or pa.types.is_binary(a.type)]
    if n == 0 or sum(_data_bytes(a) for a in varlen) <= BATCH_VARLEN_BYTES:
        yield 0, n
        return
    sizes = np.zeros(n + 1, dtype=np.int64)
    for a in varlen:
        offs = np.frombuffer(a.buffers()[1], np.int32, count=n + 1, offset=a.offset * 4)
        sizes += offs.astype(np.int64) - int(offs[0])
    start = 0
    while start < n:
        limit = sizes[start] + BATCH_VARLEN_BYTES
        stop = int(np.searchsorted(sizes, limit, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def _merge_validity(n: int, parts: list[tuple[int, int, bytes]]) -> pa.Buffer:
    """One validity bitmap for ``n`` rows from the bitmaps of the batches that had NULLs."""
    bits = np.ones(n, dtype=bool)
    for start, rows, bitmap in parts:
        bits[start : start + rows] = np.unpackbits(
            np.frombuffer(bitmap, np.uint8), bitorder="little", count=rows
        )
    return pa.py_buffer(np.packbits(bits, bitorder="little"))


def _data_bytes(a: pa.Array) -> int:
    """An upper bound of a string/binary array's data bytes (its whole data buffer)."""
    data = a.buffers()[2]
    return 0 if data is None else data.size
