"""Engine-neutral aggregate functions (ABI §5): states in the guest, rows fed in batches.

An :class:`AggregateFunction` makes :class:`AggregateState` objects, one per group. A state
lives in the calling thread's instance; rows reach the guest's ``__update`` in batches of up
to ``BATCH_ROWS`` whatever the caller hands over (Arrow columns, rows of Python values, or
the core's column descriptions), so guest memory for the input stays bounded however large
a group is. How an engine steps rows in (SQLite's one at a time) is its adapter's business.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator, Sequence, Set
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import nested, pyvalues, temporal
from .abi import TYPES, FunctionSpec
from .columns import array_value, arrow_columns, plain_array, row_ranges, row_value, valid_rows, value_kind
from .errors import ArgumentTypeError, GuestError, GuestFailure, UsageError
from .functions import BATCH_ROWS, ArrowArguments
from .pycore import SHAPE_FOLD as _SHAPE_FOLD
from .pycore import SHAPE_RESULT as _SHAPE_RESULT

if TYPE_CHECKING:
    from .instance import Instance, InstancePool

BINARY = TYPES["binary"]


class AggregateFunction(ArrowArguments):
    """An aggregate SQL function of a loaded module.

    >>> geo = mod.functions["geo_mean"]                                    # doctest: +SKIP
    >>> geo.aggregate(pa.array([1.0, 4.0]))                                # doctest: +SKIP
    2.0
    >>> geo.group_by(pa.array(["a", "b", "a"]), pa.array([1.0, 5.0, 4.0])) # doctest: +SKIP
    pyarrow.Table  key: ["a", "b"]  geo_mean: [2.0, 5.0]

    ``start()`` gives a state to feed step by step (``update``, ``inverse`` for window
    functions, ``value``, ``finish``), which is what the engine adapters use.
    """

    kind = "aggregate"

    def __init__(self, pool: InstancePool, spec: FunctionSpec, *, optional_parts: Set[str] = frozenset()):
        #: The module's instances, one per thread (``pool.spec.label`` names the module).
        self.pool = pool
        self.spec = spec
        self.name = spec.name
        self.window = spec.window
        #: The optional exports it has among merge, serialize and deserialize.
        self.optional_parts = frozenset(optional_parts)
        self.has_merge = "merge" in self.optional_parts
        #: True when states can leave an instance as bytes and come back in another
        #: (``__serialize``/``__deserialize``; ``__merge`` then combines them).
        self.movable = self.optional_parts >= {"merge", "serialize", "deserialize"}
        self.return_type = spec.returns.arrow
        self._arrow_params = [t.arrow for t in spec.params]
        #: A list or struct among its types: calls lay out their frames in nested.py.
        self.nested = any(t.is_nested for t in (*spec.params, spec.returns))
        limit = pool.spec.limits.output_bytes
        #: Limits.output_bytes for a variable-length result; -1: none.
        self.output_limit = self._output_limit = -1 if limit is None else limit

    def __repr__(self) -> str:
        return f"<AggregateFunction {self.spec.signature()} from {self.pool.spec.label}>"

    def thread_exports(self) -> tuple[Any, ...]:
        """This thread's core, the addresses of ``__init``, ``__update`` and ``__finalize`` in
        it, what raises the error for an ``__init`` (or ``__deserialize``) that returned 0, and
        then those of ``__merge``, ``__serialize`` and ``__deserialize`` (0 when the module does
        not move states). For callers in C."""
        inst = self.pool.get(self.name)
        export = self.spec.export
        moving = [inst.func_addr(f"{export}__{p}") if self.movable else 0 for p in ("merge", "serialize", "deserialize")]
        return (
            inst.core,
            inst.func_addr(f"{export}__init"),
            inst.func_addr(f"{export}__update"),
            inst.func_addr(f"{export}__finalize"),
            lambda part="__init": _raise_init_failed(self, inst, part),
            *moving,
        )

    def start(self, interrupted: Callable[[], bool] | None = None) -> AggregateState:
        """A new, empty group (``__init``) in this thread's instance; ``interrupted`` stops a
        running guest call of this state within one epoch tick once it returns true."""
        return AggregateState(self, interrupted)

    def restore(self, data: bytes, interrupted: Callable[[], bool] | None = None) -> AggregateState:
        """A state rebuilt (``__deserialize``) in this thread's instance from the bytes that
        :meth:`AggregateState.serialize` gave, in this or another instance of the module."""
        self._require_movable()
        return AggregateState(self, interrupted, serialized=bytes(data))

    def _require_movable(self) -> None:
        if not self.movable:
            missing = sorted({"merge", "serialize", "deserialize"} - self.optional_parts)
            raise UsageError(
                f"`{self.name}` cannot move its states between instances: the module lacks "
                + ", ".join(f"{self.spec.export}__{p}" for p in missing)
            )

    def aggregate(self, *args: Any) -> Any:
        """Aggregate every row of the arguments (arrays, chunked arrays or sequences, one per
        parameter) into one Python value; no rows is an empty group."""
        state = self.start()
        try:
            state.update(*args)
        except BaseException:
            state.abandon()
            raise
        return state.finish()

    def aggregate_lists(
        self, *lists: pa.Array | pa.ChunkedArray, interrupted: Callable[[], bool] | None = None
    ) -> pa.Array:
        """One result per row of list arrays, one list array per parameter: row i holds
        group i's values, a NULL list is an empty group."""
        columns = [plain_array(c) for c in lists]
        nparams = len(self._arrow_params)
        for i, c in enumerate(columns):
            if not (pa.types.is_list(c.type) or pa.types.is_large_list(c.type)):
                raise ArgumentTypeError(f"`{self.name}` argument {i + 1} must be a list array, not {c.type}")
        if len(columns) != nparams:
            raise ArgumentTypeError(f"`{self.name}` takes {nparams} arguments, {len(columns)} given")
        groups = len(columns[0]) if columns else 0
        if any(len(c) != groups for c in columns):
            raise ArgumentTypeError(f"`{self.name}`: the list arguments differ in length")
        offsets = [c.offsets.to_numpy() for c in columns]
        values = [self._coerce(i, c.values) for i, c in enumerate(columns)]
        present = np.zeros(groups, dtype=bool)
        for c in columns:
            present |= c.is_valid().to_numpy(zero_copy_only=False)
        with self.pool.get(self.name).interruptible(interrupted):
            return self._groups(offsets, values, present, groups, interrupted)

    def lists_per_parameter(self, lists: Sequence[Any]) -> list[pa.Array]:
        """List arguments as one list array per parameter, for :meth:`aggregate_lists`: an
        aggregate of several parameters is given one list of structs (DuckDB's
        ``list({'a0': x, 'a1': w})``, Spark's ``collect_list(struct(x, w))``, which keeps each
        row's values together where separate lists would drop NULLs apart), split here."""
        columns = [plain_array(c) for c in lists]
        nparams = len(self.spec.params)
        if len(columns) != 1 or nparams == 1:
            return columns
        lists_of_structs = columns[0]
        if not pa.types.is_list(lists_of_structs.type) or not pa.types.is_struct(lists_of_structs.type.value_type):
            raise ArgumentTypeError(f"`{self.name}` takes a list of structs of {nparams} fields")
        struct_values = lists_of_structs.values
        if struct_values.type.num_fields != nparams:
            raise ArgumentTypeError(f"`{self.name}` takes structs of {nparams} fields")
        fields = struct_values.flatten()  # parent NULLs become NULL fields
        # A NULL list (an empty group) stays NULL in every per-parameter list.
        return [pa.ListArray.from_arrays(lists_of_structs.offsets, f, mask=lists_of_structs.is_null()) for f in fields]

    def _groups(
        self,
        offsets: list[np.ndarray],
        values: list[pa.Array],
        present: np.ndarray,
        groups: int,
        interrupted: Callable[[], bool] | None,
    ) -> pa.Array:
        fast = self._fast_groups(offsets, values, present, groups)
        if fast is not None:
            return fast
        results = []
        for g in range(groups):
            bounds = [(int(o[g]), int(o[g + 1])) for o in offsets]
            state = self.start(interrupted)
            try:
                if present[g]:
                    if len({b - a for a, b in bounds}) != 1:
                        raise ArgumentTypeError(f"`{self.name}`: the argument lists of group {g} differ in length")
                    state.update(*[v.slice(a, b - a) for v, (a, b) in zip(values, bounds)])
            except BaseException:
                state.abandon()
                raise
            results.append(state.finish())
        return pa.array(results, type=self.return_type)

    def _fast_groups(
        self, offsets: list[np.ndarray], values: list[pa.Array], present: np.ndarray, groups: int
    ) -> pa.Array | None:
        """aggregate_lists for the common case, three C calls per group and no per-group
        pyarrow objects: the C accelerator, fixed-width types, no NULL values to skip, groups
        within one batch. None when the case does not apply (the general path runs)."""
        spec = self.spec
        if self.nested or spec.returns.is_varlen or any(t.is_varlen for t in spec.params):
            return None
        values = [plain_array(v) for v in values]
        if any(v.null_count for v in values) or any(t.is_bits for t in spec.params):
            return None
        if any(not np.array_equal(o, offsets[0]) for o in offsets[1:]):
            return None
        bounds = offsets[0]
        if groups and int(np.max(np.diff(bounds), initial=0)) > BATCH_ROWS:
            return None
        inst = self.pool.get(self.name)
        core = inst.core
        export, name = spec.export, self.name
        init_f = inst.func_addr(f"{export}__init")
        update_f = inst.func_addr(f"{export}__update")
        final_f = inst.func_addr(f"{export}__finalize")
        bufs = [(t.code, v.offset, v.buffers()[1]) for t, v in zip(spec.params, values)]
        rcode, limit = spec.returns.code, self._output_limit
        results: list[Any] = []
        try:
            for g in range(groups):
                handle = core.call(init_f, name)
                if not handle:
                    return None  # let the general path report it, with the guest's message
                inst.live_states += 1
                start, stop = int(bounds[g]), int(bounds[g + 1])
                if present[g] and stop > start:
                    cols = [(code, off + start, 0, None, buf, None) for code, off, buf in bufs]
                    core.call_batch(update_f, name, stop - start, 0, -1, None, cols, _SHAPE_FOLD, handle)
                inst.live_states -= 1
                result = core.call_batch(final_f, name, 1, rcode, limit, None, (), _SHAPE_RESULT, handle)
                results.append(row_value(inst, name, spec.returns, result))
        except GuestError:
            inst.live_states = 0  # the instance and every state in it are gone
            raise
        return pa.array(results, type=self.return_type)

    def group_by(self, keys: Any, *args: Any) -> pa.Table:
        """Aggregate per distinct key (NULL is a key of its own): a table of ``key`` and the
        function's result, keys in order of first appearance."""
        keys = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(keys)
        columns = {"key": keys}
        for i, a in enumerate(args):
            columns[f"arg{i}"] = self._coerce(i, a)
        table = pa.table(columns)
        grouped = table.group_by("key", use_threads=False).aggregate([(f"arg{i}", "list") for i in range(len(args))])
        lists = [grouped[f"arg{i}_list"] for i in range(len(args))]
        return pa.table({"key": grouped["key"], self.name: self.aggregate_lists(*lists)})


def _raise_init_failed(fn: AggregateFunction, inst: Instance, part: str = "__init") -> None:
    """An ``__init`` (or ``__deserialize``) returned 0: the instance is suspect, and the error
    says so."""
    raise inst.no_state(fn.name, f"{fn.spec.export}{part} returned 0, no state")


class AggregateState:
    """One group's state inside one instance. Not thread-safe: use it on the thread that
    started it. Every state ends with :meth:`finish` (or :meth:`abandon`)."""

    def __init__(
        self, fn: AggregateFunction, interrupted: Callable[[], bool] | None = None, serialized: bytes | None = None
    ):
        self.fn = fn
        self._interrupted = interrupted
        self._pool = fn.pool
        self._export = fn.spec.export
        self._open = False
        inst = self._pool.get(fn.name)
        _release_orphans(inst)
        if serialized is None:
            handle = self._guest(inst, lambda: inst.call(f"{self._export}__init", (), what=fn.name))
        else:
            handle = self._guest(inst, lambda: _deserialize(inst, self._export, fn.name, serialized))
        if not handle:
            _raise_init_failed(fn, inst, "__init" if serialized is None else "__deserialize")
        self._inst: Instance = inst
        self._handle = handle
        self._open = True
        inst.live_states += 1

    @property
    def is_open(self) -> bool:
        """False once finished, abandoned, or lost to a failure."""
        return self._open

    # -- feeding rows ---------------------------------------------------------------------

    def update(self, *args: Any) -> None:
        """Fold rows in: one array (or sequence) per parameter."""
        self._fold("update", args)

    def inverse(self, *args: Any) -> None:
        """Take rows out again (window functions): rows that were given to :meth:`update`."""
        self._require_window()
        self._fold("inverse", args)

    def fold_rows(self, rows: Sequence[tuple[Any, ...]], inverse: bool = False) -> None:
        """Fold in (or take out) rows of Python values, ``None`` for NULL, each value held to
        the type rules of a one-row scalar call (``AbiType.accepts``)."""
        fn = self.fn
        if inverse:
            self._require_window()
        if fn.spec.strict:
            # A row with a NULL is skipped before its other values are looked at, as a
            # strict scalar does not look at them either.
            rows = [r for r in rows if None not in r]
        if not rows:
            return
        nparams = len(fn._arrow_params)
        if any(len(r) != nparams for r in rows):
            raise ArgumentTypeError(f"`{fn.name}` takes {nparams} arguments")
        values = [[r[i] for r in rows] for i in range(nparams)]
        for i, column in enumerate(values):
            _check_value_types(fn, i, column)
        self._fold("inverse" if inverse else "update", [_values_column(fn, i, c) for i, c in enumerate(values)])

    def fold_columns(self, columns: list[tuple], rows: int, inverse: bool = False) -> None:
        """Fold in (or take out) ``rows`` rows given as the core's column descriptions
        (see columns.py), which the core checks against their buffers."""
        if inverse:
            self._require_window()
        self._check_alive()
        if self.fn.nested:
            raise ValueError("fold_columns takes plain types; a list or struct goes through update")
        inst, name = self._inst, self.fn.name
        func = inst.func_addr(f"{self._export}__{'inverse' if inverse else 'update'}")
        self._guest(inst, lambda: inst.core.call_batch(func, name, rows, 0, -1, None, columns, _SHAPE_FOLD, self._handle))

    # -- results --------------------------------------------------------------------------

    def value(self) -> Any:
        """The current result, the state staying open (window functions)."""
        self._require_window()
        return self._result("value")

    def finish(self) -> Any:
        """The result; the state is released (also when this fails)."""
        return self._result("finalize")

    def serialize(self) -> bytes:
        """The state as bytes (``__serialize``), for :meth:`AggregateFunction.restore` in any
        instance of the module; the state is released (also when this fails)."""
        self.fn._require_movable()
        self._check_alive()
        self._open = False
        self._inst.live_states -= 1
        inst, name = self._inst, self.fn.name
        func = inst.func_addr(f"{self._export}__serialize")
        result = self._guest(
            inst,
            lambda: inst.core.call_batch(func, name, 1, BINARY.code, self.fn._output_limit, None, (), _SHAPE_RESULT, self._handle),
        )
        data = row_value(inst, name, BINARY, result)
        if data is None:
            raise inst.invalid_output(name, f"{self._export}__serialize returned NULL, not the state's bytes")
        return data

    def abandon(self) -> None:
        """Release the state without a result (after a failure); never raises."""
        if not self._open:
            return
        self._open = False
        self._inst.live_states -= 1
        self._finalize_quietly()

    def _finalize_quietly(self) -> None:
        if self._inst.broken:
            return  # the instance, and every state in it, is gone already
        with contextlib.suppress(GuestError):  # the instance let go of itself
            self._call_result("finalize")

    def __del__(self) -> None:
        # Dropped while still open: SQLite does not call `final` for a group's other
        # aggregates once one of them failed, and a caller may simply forget a state. The
        # guest's memory is given back by the instance's own thread when it next starts a
        # state (_release_orphans), not here: a finalizer can run on any thread, even in the
        # middle of a guest call. Appending self keeps the object alive until then.
        if self.__dict__.get("_open"):
            self._open = False
            self._inst.live_states -= 1
            self._inst.orphaned_states.append(self)

    def merge(self, other: AggregateState) -> None:
        """Fold ``other`` (of the same function and thread) into this state; ``other`` ends."""
        if not self.fn.has_merge:
            raise UsageError(f"`{self.fn.name}` has no {self._export}__merge export")
        if other.fn is not self.fn or other._inst is not self._inst:
            raise UsageError("only states of the same function in the same instance can merge")
        self._check_alive()
        other._check_alive()
        inst = self._inst
        other._open = False
        inst.live_states -= 1
        self._guest(
            inst,
            lambda: inst.status_call(f"{self._export}__merge", (self._handle, other._handle), what=self.fn.name),
        )

    # -- internals ------------------------------------------------------------------------

    def _require_window(self) -> None:
        if not self.fn.window:
            raise UsageError(f"`{self.fn.name}` is not a window function (its manifest says window: false)")

    def _check_alive(self) -> None:
        if not self._open:
            raise UsageError(f"this `{self.fn.name}` state has already finished")
        if self._inst.broken:
            self._open = False
            self._inst.live_states -= 1
            raise GuestFailure(
                f"`{self.fn.name}` in {self._inst.label}: its state was lost when the instance was "
                "discarded after an earlier failure",
                function=self.fn.name,
                module=self._inst.label,
            )

    def _guest(self, inst: Instance, call: Any) -> Any:
        """Run a guest call; on failure the instance (and its states) is discarded."""
        try:
            with inst.interruptible(self._interrupted):
                return call()
        except GuestError:
            if self._open:
                self._open = False
                inst.live_states -= 1
            raise

    def _fold(self, part: str, args: Sequence[Any]) -> None:
        fn = self.fn
        if len(args) != len(fn._arrow_params):
            raise ArgumentTypeError(
                f"`{fn.name}` takes {len(fn._arrow_params)} arguments, {len(args)} given"
            )
        arrays = [plain_array(fn._coerce(i, a)) for i, a in enumerate(args)]
        n = len(arrays[0]) if arrays else 0
        if any(len(a) != n for a in arrays):
            raise ArgumentTypeError(f"`{fn.name}`: the arguments differ in length")
        if fn.spec.strict and any(a.null_count for a in arrays):
            mask = valid_rows(arrays, n)
            kept = pa.array(mask)
            arrays = [a.filter(kept) for a in arrays]
            n = int(mask.sum())
        self._check_alive()
        for start, stop in _batches(arrays, n):
            part_arrays = [a.slice(start, stop - start) for a in arrays]
            self._guest(self._inst, lambda p=part_arrays, m=stop - start: self._call_fold(part, p, m))

    def _call_fold(self, part: str, arrays: list[pa.Array], rows: int) -> None:
        inst, name = self._inst, self.fn.name
        func = inst.func_addr(f"{self._export}__{part}")
        if self.fn.nested:
            nested.call_batch(inst, func, name, rows, None, -1, arrays, self.fn.spec.params, _SHAPE_FOLD, self._handle)
            return
        columns = arrow_columns(arrays, self.fn.spec.params)
        inst.core.call_batch(func, name, rows, 0, -1, None, columns, _SHAPE_FOLD, self._handle)

    def _result(self, part: str) -> Any:
        self._check_alive()
        if part == "finalize":
            self._open = False
            self._inst.live_states -= 1
        return self._call_result(part)

    def _call_result(self, part: str) -> Any:
        inst, name, fn = self._inst, self.fn.name, self.fn
        func = inst.func_addr(f"{self._export}__{part}")
        rtype = fn.spec.returns
        if fn.nested:
            array = nested.call_batch(inst, func, name, 1, rtype, fn._output_limit, (), (), _SHAPE_RESULT, self._handle)
            return array_value(inst, name, rtype, array)
        result = inst.core.call_batch(func, name, 1, rtype.code, fn._output_limit, None, (), _SHAPE_RESULT, self._handle)
        return row_value(inst, name, rtype, result)


def _deserialize(inst: Instance, export: str, name: str, data: bytes) -> int | None:
    """``__deserialize`` over ``data`` copied into the arena: the new state's handle."""
    core = inst.core
    at = core.frame_block(max(len(data), 1), name, True)
    base, _ = core.memory()
    ctypes.memmove(base + at, data, len(data))
    return inst.call(f"{export}__deserialize", (at, len(data)), what=name)


def _release_orphans(inst: Instance) -> None:
    """Finalize the states dropped while open in ``inst`` (on its own thread)."""
    while inst.orphaned_states:
        inst.orphaned_states.pop()._finalize_quietly()


def _batches(arrays: list[pa.Array], n: int) -> Iterator[tuple[int, int]]:
    """Row ranges of at most BATCH_ROWS rows and BATCH_VARLEN_BYTES of varlen data each."""
    for start in range(0, n, BATCH_ROWS):
        stop = min(n, start + BATCH_ROWS)
        part = [a.slice(start, stop - start) for a in arrays]
        for s, e in row_ranges(part, stop - start):
            yield start + s, start + e


def _check_value_types(fn: AggregateFunction, index: int, values: list[Any]) -> None:
    """Python values for one parameter, held to the scalar row path's type rules."""
    accepted = fn.spec.params[index].accepts
    for v in values:
        if v is not None and not isinstance(v, accepted):
            raise fn._type_error(index, f"{value_kind(v)} {v!r}")


def _values_column(fn: AggregateFunction, index: int, values: list[Any]) -> pa.Array:
    """Python values (already type-checked) as one Arrow column."""
    t = fn.spec.params[index]
    if not t.is_plain:
        try:
            return pyvalues.arrow_array(t, [pyvalues.check(t, v) for v in values])
        except TypeError as exc:
            raise fn._type_error(index, str(exc)) from None
        except (ValueError, OverflowError) as exc:
            raise ArgumentTypeError(f"`{fn.name}` argument {index + 1} ({t.name}): {exc}") from None
    if t.is_bits:
        values = [None if v is None else bool(v) for v in values]
    elif t.is_float:
        values = [None if v is None else float(v) for v in values]
    elif t.temporal:
        try:
            raw = [None if v is None else temporal.to_raw(t.temporal, v) for v in values]
        except TypeError:
            raise fn._type_error(index, "text that is not ISO-8601") from None
        storage = pa.int32() if t.width == 4 else pa.int64()
        return pa.array(raw, type=storage).view(t.arrow)
    try:
        return pa.array(values, type=t.arrow)
    except (pa.ArrowInvalid, OverflowError) as exc:
        raise ArgumentTypeError(f"`{fn.name}` argument {index + 1} ({t.name}) is out of range ({exc})") from None
