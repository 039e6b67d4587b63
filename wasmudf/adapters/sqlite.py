"""SQLite (apsw): scalars become per-row functions, aggregates apsw aggregate functions, and
window-capable aggregates apsw window functions. Rows SQLite steps in one at a time are
buffered by the AggregateState and reach the guest in batches."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import apsw

from .. import _native
from ..aggregates import ROW_BUFFER, AggregateFunction, AggregateState
from ..errors import RegistrationError
from ..functions import ScalarFunction


def existing_functions(con: Any, names: list[str]) -> dict[str, bool]:
    """Which of ``names`` exist on the connection (lower-cased), mapped to "is built in"."""
    wanted = {n.lower() for n in names}
    rows = con.execute("SELECT lower(name), max(builtin) FROM pragma_function_list GROUP BY 1")
    return {name: bool(builtin) for name, builtin in rows if name in wanted}


def check_supported(fn: Any) -> None:
    if not isinstance(fn, (ScalarFunction, AggregateFunction)):
        raise RegistrationError(f"`{fn.name}`: SQLite cannot register a {type(fn).__name__}")


def sql_names(fn: Any) -> list[str]:
    """The SQL names a function occupies on the connection."""
    return [fn.name]


def unregister(con: Any, name: str, numargs: int = -1) -> None:
    # Registering again with None as the callable removes the function of that name and
    # arity (whatever its kind); a new registration of the same arity replaces it anyway.
    con.create_scalar_function(name, None, numargs=numargs)


def register_function(con: Any, fn: ScalarFunction | AggregateFunction) -> None:
    """Create the SQLite function; SQLite replaces one of the same name and arity."""
    spec = fn.spec
    flags = apsw.SQLITE_DETERMINISTIC if spec.deterministic else 0
    interrupted = _interrupt_check(con)
    if isinstance(fn, ScalarFunction):
        row = fn.row_function(interrupted)
        speedups = _native.speedups
        if speedups is not None and isinstance(row, speedups.RowCaller) and _sqlite_api_loaded(con):
            speedups.sqlite_register(con.sqlite3pointer(), spec.name, spec.deterministic, row)
        else:
            con.create_scalar_function(spec.name, row, numargs=len(spec.params), deterministic=spec.deterministic)
    elif fn.window:
        con.create_window_function(spec.name, _factory(fn, interrupted), numargs=len(spec.params), flags=flags)
    else:
        con.create_aggregate_function(spec.name, _factory(fn, interrupted), numargs=len(spec.params), flags=flags)


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


# Parameter types whose values the accelerator's RowBuffer packs as SQLite steps them in.
_PACKED_TYPES = {"int32", "int64", "float32", "float64"}


def _factory(fn: AggregateFunction, interrupted: Callable[[], bool]) -> Callable[[], Any]:
    """apsw's factory for one group (or window) of ``fn``.

    With the C accelerator and numeric parameters, apsw's tuple form: the context is a
    ``RowBuffer`` that packs each row as it comes, and ``step``/``inverse`` are C functions,
    so a row costs no Python call of ours. Otherwise the class form over AggregateState."""
    speedups = _native.speedups
    codes = [t.code for t in fn.spec.params]
    if speedups is None or not codes or any(t.name not in _PACKED_TYPES for t in fn.spec.params):
        return (lambda: _Window(fn.start(interrupted))) if fn.window else (lambda: _Aggregate(fn.start(interrupted)))

    def packed_group() -> tuple[Any, ...]:
        state = fn.start(interrupted)
        rows = speedups.RowBuffer(codes, fn.spec.strict, state.fold_packed, state.fold_row, ROW_BUFFER)
        final = functools.partial(_packed_final, state)
        if fn.window:
            value = functools.partial(_packed_value, state)
            return (rows, speedups.buffer_step, final, value, speedups.buffer_inverse)
        return (rows, speedups.buffer_step, final)

    return packed_group


def _packed_final(state: AggregateState, rows: Any) -> Any:
    if not state.is_open:
        return None  # a step failed and the statement reports that error
    rows.flush()  # a failing batch releases the state itself (fold_packed)
    return state.finish()


def _packed_value(state: AggregateState, rows: Any) -> Any:
    rows.flush()
    return state.value_row()


class _Aggregate:
    """apsw's aggregate protocol over one AggregateState. SQLite calls ``final`` even after
    ``step`` failed, so the state is always released there."""

    __slots__ = ("state",)

    def __init__(self, state: AggregateState):
        self.state = state

    def step(self, *values: Any) -> None:
        self.state.step_row(*values)

    def final(self) -> Any:
        if not self.state.is_open:
            return None  # a step failed and the statement reports that error
        return self.state.finish()


class _Window(_Aggregate):
    __slots__ = ()

    def inverse(self, *values: Any) -> None:
        self.state.inverse_row(*values)

    def value(self) -> Any:
        return self.state.value_row()
