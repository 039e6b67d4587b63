"""SQLite through apsw: scalars become per-row functions, aggregates apsw aggregate functions,
and window-capable aggregates apsw window functions (SQLite's rules: sqlite_rows.py).

With the C accelerator this adapter's C part (``adapters/_sqlite.c``) serves the rows: a
scalar is a ``RowCaller`` and an aggregate a group of apsw's tuple form around a
``RowBuffer``, both registered with SQLite itself when the accelerator holds SQLite's API, so
a row of any ABI type costs no Python object and no GIL (an aggregate's rows are packed from
SQLite's values and reach the guest 4,096 at a time). Without that API, apsw calls the same
objects.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import apsw

from .. import _native
from ..aggregates import AggregateFunction
from ..errors import UsageError, WasmUdfError
from ..functions import ScalarFunction
from ..tables import TableFunction
from .sqlite_rows import ROW_BUFFER, RowFeeder, SqliteAdapterBase, needs_python_rows, sqlite_value
from .sqlite_tables import TableModule

#: The table functions (virtual table modules) wasmudf registered, per connection.
_TABLE_MODULES: weakref.WeakKeyDictionary[Any, dict[str, TableModule]] = weakref.WeakKeyDictionary()

#: Whether aggregates take the accelerator's RowBuffer when it is built (tests switch it off
#: to compare with the class form).
PACK_ROWS = True


class ApswAdapter(SqliteAdapterBase):
    engine_package = "apsw"

    def connection_types(self) -> tuple[type, ...]:
        return (apsw.Connection,)

    # -- registration ------------------------------------------------------------------

    def unregister(self, con: Any, name: str, numargs: int = -1) -> None:
        module = _TABLE_MODULES.get(con, {}).get(name.lower())
        if module is not None and module.enabled:
            con.create_module(name, None)  # None drops the module
            module.enabled = False
            return
        # Registering again with None as the callable removes the function of that name and
        # arity (whatever its kind); a new registration of the same arity replaces it anyway.
        con.create_scalar_function(name, None, numargs=numargs)

    def register_table(self, con: Any, fn: TableFunction) -> None:
        modules = _TABLE_MODULES.setdefault(con, {})
        module = TableModule(fn, _interrupt_check(con))
        previous = modules.get(fn.name.lower())
        if previous is not None and previous.schema == module.schema:
            previous.fn, previous.enabled = fn, True  # cached statements that use it go on
            module = previous
        con.create_module(fn.name, module, use_bestindex_object=True, eponymous_only=True, read_only=True)
        modules[fn.name.lower()] = module

    def table_modules(self, con: Any) -> set[str]:
        return {name for name, module in _TABLE_MODULES.get(con, {}).items() if module.enabled}

    def table(self, con: Any, name: str, args: tuple) -> Any:
        """A cursor over ``SELECT * FROM name(args...)``."""
        if name.lower() not in self.table_modules(con):
            raise UsageError(f"no table function `{name}` was registered on this SQLite connection")
        return con.execute(f'SELECT * FROM "{name}"({", ".join("?" for _ in args)})', args)

    def register_scalar(self, con: Any, fn: ScalarFunction) -> None:
        spec = fn.spec
        row = row_function(fn, _interrupt_check(con))
        speedups = _native.speedups
        if speedups is not None and isinstance(row, speedups.RowCaller) and _sqlite_api_loaded(con):
            speedups.sqlite_register(con.sqlite3pointer(), spec.name, spec.deterministic, row)
        else:
            con.create_scalar_function(spec.name, row, numargs=len(spec.params), deterministic=spec.deterministic)

    def register_aggregate(self, con: Any, fn: AggregateFunction) -> None:
        spec = fn.spec
        factory = _factory(fn, _interrupt_check(con))
        speedups = _native.speedups
        if getattr(factory, "packed", False) and _sqlite_api_loaded(con):
            # Registered with SQLite itself: each row is packed from SQLite's values in C,
            # without a Python object or the GIL; the group's tuple is apsw's tuple form.
            speedups.sqlite_register_aggregate(
                con.sqlite3pointer(), spec.name, len(spec.params), spec.deterministic, fn.window, factory, spec.name
            )
            return
        flags = apsw.SQLITE_DETERMINISTIC if spec.deterministic else 0
        create = con.create_window_function if fn.window else con.create_aggregate_function
        create(spec.name, factory, numargs=len(spec.params), flags=flags)

    def interrupt(self, con: Any) -> None:
        con.interrupt()

    # -- databases ---------------------------------------------------------------------

    def connect(self, database: str | None) -> Any:
        return apsw.Connection(database or ":memory:")

    def query(self, con: Any, sql: str, params: tuple = ()) -> tuple[list[str], list[tuple]]:
        cursor = con.execute(sql, params)
        try:
            columns = [d[0] for d in cursor.get_description()]
        except apsw.ExecutionCompleteError:  # a statement that returns no rows
            columns = []
        return columns, [tuple(r) for r in cursor]

    @contextmanager
    def transaction(self, con: Any) -> Iterator[None]:
        with con:
            yield

    def is_engine_error(self, exc: BaseException) -> bool:
        return isinstance(exc, apsw.Error)

    def wasmudf_error(self, exc: BaseException) -> WasmUdfError | None:
        return None  # apsw raises a function's own exception: nothing is hidden


ADAPTER = ApswAdapter()


def row_function(fn: ScalarFunction, interrupted: Callable[[], bool] | None = None) -> Callable[..., Any]:
    """The callable SQLite calls per row: with the C accelerator its ``RowCaller``, which
    SQLite calls straight into C and which hands anything unusual (a value of the wrong type,
    text that is not UTF-8) back to :meth:`ScalarFunction.call_row`."""
    fallback = fn.call_row if interrupted is None else functools.partial(fn.call_row, interrupted=interrupted)
    speedups = _native.speedups
    spec = fn.spec
    if needs_python_rows(fn):
        return lambda *values: sqlite_value(spec.returns, fallback(*values))
    if speedups is None or not spec.params:
        return fallback
    limit = fn.pool.spec.limits.output_bytes
    return speedups.RowCaller(
        fn.thread_core,
        fallback,
        fn.name,
        [t.code for t in spec.params],
        spec.strict,
        spec.returns.code,
        interrupted,
        -1 if limit is None else limit,
    )


def _sqlite_api_loaded(con: Any) -> bool:
    """Whether the C accelerator has SQLite's API table, so a fixed-width scalar can be
    registered with SQLite directly (rows then reach the guest without Python objects).

    SQLite gives its table to any loadable extension, and the accelerator is one: loading it
    once per process is enough (apsw carries one SQLite library). Only the C-level loading
    is switched on, for that moment, and then put back as it was; SQL's load_extension()
    stays off.
    """
    speedups = _native.speedups
    if speedups is None or not hasattr(speedups, "sqlite_ready"):
        return False  # built without SQLite's header
    if speedups.sqlite_ready():
        return True
    option = apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION
    was = con.config(option, -1)
    try:
        con.config(option, 1)
        con.load_extension(speedups.__file__, "wasmudf_sqlite_init")
    except apsw.Error:
        return False  # an SQLite built without extension loading: apsw calls the RowCaller
    finally:
        con.config(option, was)
    return bool(speedups.sqlite_ready())


def _interrupt_check(con: Any) -> Callable[[], bool]:
    """``Connection.interrupt()`` as the guest sees it: a running call stops within one tick.
    A weak reference, so the function registered on the connection does not keep it alive."""
    ref = weakref.ref(con)

    def interrupted() -> bool:
        c = ref()
        return c is not None and c.is_interrupted

    return interrupted


def _factory(fn: AggregateFunction, interrupted: Callable[[], bool]) -> Callable[[], Any]:
    """apsw's factory for one group (or window) of ``fn``.

    With the C accelerator, apsw's tuple form: the context is a ``RowBuffer`` that packs each
    row as it comes, and ``step``/``inverse`` are C functions, so a row costs no Python call
    of ours. Otherwise the class form over a RowFeeder."""
    speedups = _native.speedups
    codes = [t.code for t in fn.spec.params]
    if speedups is None or not codes or not PACK_ROWS or needs_python_rows(fn):
        return lambda: _Group(RowFeeder(fn.start(interrupted)))

    def packed_group() -> tuple[Any, ...]:
        feeder = RowFeeder(fn.start(interrupted))
        rows = speedups.RowBuffer(codes, fn.spec.strict, feeder.fold_packed, feeder.fold_row, ROW_BUFFER)
        final = functools.partial(_packed_final, feeder)
        if fn.window:
            value = functools.partial(_packed_value, feeder)
            return (rows, speedups.buffer_step, final, value, speedups.buffer_inverse)
        return (rows, speedups.buffer_step, final)

    packed_group.packed = True  # type: ignore[attr-defined]
    return packed_group


def _packed_final(feeder: RowFeeder, rows: Any) -> Any:
    if not feeder.state.is_open:
        return None  # a step failed and the statement reports that error
    rows.flush()  # a failing batch releases the state itself (fold_packed)
    return feeder.final()


def _packed_value(feeder: RowFeeder, rows: Any) -> Any:
    rows.flush()
    return feeder.value()


class _Group:
    """apsw's aggregate and window protocol over a RowFeeder. SQLite calls ``final`` even
    after ``step`` failed; the feeder answers NULL then."""

    __slots__ = ("step", "inverse", "value", "final")

    def __init__(self, feeder: RowFeeder):
        self.step, self.inverse, self.value, self.final = feeder.step, feeder.inverse, feeder.value, feeder.final
