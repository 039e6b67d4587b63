"""Engine-neutral function objects: a scalar is callable on pyarrow arrays.

The adapters hand these to DuckDB and SQLite; nothing here knows about either engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import nested, pyvalues
from .abi import AbiType, FunctionSpec
from .columns import (
    BATCH_VARLEN_BYTES,
    array_value,
    arrow_column,
    arrow_columns,
    merge_validity,
    plain_array,
    result_array,
    row_column,
    row_ranges,
    row_value,
    valid_rows,
    value_kind,
)
from .dataframes import from_arrow, is_scalar, nullable_pandas, series_kind, to_arrow
from .errors import ArgumentTypeError

if TYPE_CHECKING:
    from .instance import InstancePool

#: Rows handed to the guest per call.
BATCH_ROWS = 65_536
SMALL_RESULT_ROWS = 256  # up to this many rows, the core returns a result as bytes


def array_class(t: AbiType) -> type:
    """The pyarrow array class whose instances are exactly of ``t``'s Arrow type."""
    return type(pa.array([], type=t.arrow))


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

    def __init__(self, pool: InstancePool, spec: FunctionSpec):
        #: The module's instances, one per thread (``pool.spec.label`` names the module).
        self.pool = pool
        self.spec = spec
        self.name = spec.name
        self._arrow_params = [t.arrow for t in spec.params]
        self._array_classes = [array_class(t) for t in spec.params]
        # Looked up once: the per-call path below runs for every DuckDB vector.
        self._pool = pool
        self._export = spec.export
        self._rcode = spec.returns.code
        self._strict = spec.strict
        # A timestamp's class does not pin its unit and zone, nor a decimal's its precision
        # and scale: those types are compared too.
        self._checks = [
            (cls, t.code, t.is_varlen, t.arrow if t.temporal or t.is_decimal else None)
            for cls, t in zip(self._array_classes, spec.params)
        ]
        #: A list or struct among its types: calls lay out their frames in nested.py.
        self._nested = any(t.is_nested for t in (*spec.params, spec.returns))
        limit = pool.spec.limits.output_bytes
        #: Limits.output_bytes for a variable-length result; -1: none.
        self.output_limit = self._output_limit = -1 if limit is None else limit
        self.return_type = spec.returns.arrow

    def __repr__(self) -> str:
        return f"<ScalarFunction {self.spec.signature()} from {self.pool.spec.label}>"

    # -- whole columns ---------------------------------------------------------------------

    def __call__(
        self, *args: Any, rows: int | None = None, interrupted: Callable[[], bool] | None = None
    ) -> pa.Array | pa.ChunkedArray:
        columns = self._direct_columns(args)
        if columns is not None:  # the common case, DuckDB's vectors among it
            return self._invoke(args, len(args[0]), interrupted, columns)
        if self._large_ok(args):  # long numeric columns: batches written into one result
            return self._call_large(args, interrupted)
        series = series_kind(args)
        if series is not None:  # pandas/polars Series in: the same kind out
            result = self(*[to_arrow(a) for a in args], rows=rows, interrupted=interrupted)
            return from_arrow(series[0], series[1], result, self.name, nullable_pandas(args))
        if args and any(is_scalar(a) for a in args):
            return self._broadcast(args, rows, interrupted)
        if interrupted is not None:
            with self._pool.get(self.name).interruptible(interrupted):
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

    def _broadcast(
        self, args: tuple[Any, ...], rows: int | None, interrupted: Callable[[], bool] | None
    ) -> pa.Array | pa.ChunkedArray | pa.Scalar:
        """Single values repeated over the other arguments' rows, as pyarrow.compute does;
        called with single values only, the answer is a single value (a pyarrow Scalar)."""
        lengths = {len(a) for a in args if not is_scalar(a)}
        if len(lengths) > 1:
            raise ArgumentTypeError(f"`{self.name}`: the array arguments differ in length ({sorted(lengths)})")
        n = lengths.pop() if lengths else rows if rows is not None else 1
        spread = [
            self._repeat(i, a, n) if is_scalar(a) else a for i, a in enumerate(args)
        ]
        result = self(*spread, interrupted=interrupted)
        return result[0] if not lengths and rows is None and all(is_scalar(a) for a in args) else result

    def _repeat(self, index: int, value: Any, n: int) -> pa.Array:
        if len(self.spec.params) <= index:
            raise ArgumentTypeError(f"{self.spec.signature()} takes {len(self.spec.params)} arguments")
        one = self._coerce(index, [value.as_py() if isinstance(value, pa.Scalar) else value])
        return pa.repeat(one[0], n) if n != 1 else one

    def _direct_columns(self, args: tuple[Any, ...]) -> list[tuple] | None:
        """When ``args`` can go to the guest as they are (one batch of plain arrays of the
        right types, no NULLs to strip for a strict function, no more varlen data than one
        call takes): their descriptions for the C accelerator, as :func:`arrow_columns`
        makes them (built here in the same pass as the checks: this runs for every vector)."""
        checks = self._checks
        if not args or len(args) != len(checks) or type(args[0]) is not checks[0][0] or self._nested:
            return None
        n = len(args[0])
        if not 0 < n <= BATCH_ROWS:
            return None
        strict = self._strict
        varlen = 0
        columns = []
        for a, (cls, code, is_varlen, exact) in zip(args, checks):
            # The exact class pins the Arrow type (an Int64Array is int64, never an extension).
            if type(a) is not cls or len(a) != n or (exact is not None and a.type != exact):
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
        returns = self.spec.returns
        if not args or len(args) != len(classes) or not returns.is_plain or returns.is_varlen or returns.is_bits:
            return False
        if type(args[0]) is not classes[0]:
            return False
        n = len(args[0])
        if n <= BATCH_ROWS:
            return False
        return all(
            type(a) is cls
            and not t.is_varlen
            and t.is_plain
            and not t.is_bits
            and len(a) == n
            and not a.null_count
            for a, cls, t in zip(args, classes, self.spec.params)
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
        inst = self._pool.get(self.name)
        func = inst.func_addr(self.spec.export)
        for start in range(0, n, BATCH_ROWS):
            m = min(BATCH_ROWS, n - start)
            columns = [
                (t.code, a.offset + start, 0, None, buf, None)
                for a, buf, t in zip(arrays, values, self.spec.params)
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
        bitmap = merge_validity(n, nulls) if nulls else None
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
        if self._nested:
            spec = self.spec
            return nested.call_batch(
                inst, inst.func_addr(self._export), self.name, rows, spec.returns, self._output_limit,
                arrays, spec.params, interrupted=interrupted,
            )
        result = inst.core.call_batch(
            inst.func_addr(self._export),
            self.name,
            rows,
            self._rcode,
            self._output_limit,
            # A few rows' result is cheaper as bytes than as a buffer from Arrow's pool.
            pa.allocate_buffer if rows > SMALL_RESULT_ROWS else None,
            columns or arrow_columns(arrays, self.spec.params),
            0,
            0,
            interrupted,
        )
        return result_array(inst, self.name, self.spec.returns, rows, result)

    # -- one row ---------------------------------------------------------------------------

    def thread_core(self) -> tuple[Any, int]:
        """This thread's core and the export's address in it (for per-row callers in C)."""
        inst = self._pool.get(self.name)
        return inst.core, inst.func_addr(self._export)

    def call_row(self, *values: Any, interrupted: Callable[[], bool] | None = None) -> Any:
        """Call on one row of Python values; returns a Python value. ``None`` is NULL.

        A parameter takes the values its type accepts (``AbiType.accepts``); integers are
        range-checked, floats past float32's range become infinities.
        """
        spec = self.spec
        if len(values) != len(spec.params):
            raise ArgumentTypeError(f"{spec.signature()} takes {len(spec.params)} arguments, {len(values)} given")
        if spec.strict and None in values:
            return None
        columns = []
        for i, (t, v) in enumerate(zip(spec.params, values)):
            try:
                if self._nested:
                    columns.append(pyvalues.arrow_array(t, [pyvalues.check(t, v)]))
                else:
                    columns.append(row_column(t, v))
            except TypeError:
                raise self._type_error(i, f"{value_kind(v)} {v!r}") from None
            except OverflowError:
                raise ArgumentTypeError(f"`{self.name}` argument {i + 1} ({t.name}) is out of range: {v}") from None
            except ValueError as exc:
                raise ArgumentTypeError(f"`{self.name}` argument {i + 1} ({t.name}): {exc}") from None
        inst = self._pool.get(self.name)
        if self._nested:
            array = nested.call_batch(
                inst, inst.func_addr(self._export), self.name, 1, spec.returns, self._output_limit,
                columns, spec.params, interrupted=interrupted,
            )
            return array_value(inst, self.name, spec.returns, array)
        result = inst.core.call_batch(
            inst.func_addr(self._export), self.name, 1, self._rcode, self._output_limit, None, columns, 0, 0, interrupted
        )
        return row_value(inst, self.name, spec.returns, result)


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
