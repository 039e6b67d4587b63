"""SQLite through Python's standard ``sqlite3``: ``create_function``, ``create_aggregate``
and ``create_window_function`` (SQLite's rules: sqlite_rows.py).

``sqlite3`` gives no native handle, so rows take the Python path (``call_row``), and no
way to see ``Connection.interrupt()`` from a running function: ``wasmudf.interrupt(con)``
stops a running guest call, plain ``interrupt()`` takes effect when it returns. Two limits of
the module itself: an error raised by a function reaches SQL as ``sqlite3.OperationalError``
("user-defined function raised exception") without its text (``wasmudf.error_from`` gives
it back), and a function cannot be
removed on Python < 3.13, so unregistering replaces it with one that refuses to run.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from ..aggregates import AggregateFunction
from ..errors import RegistrationError, UsageError, WasmUdfError
from ..functions import ScalarFunction
from . import sql_transaction
from .sqlite_rows import RowFeeder, SqliteAdapterBase, sqlite_value

#: When wasmudf.interrupt(con) last ran, per connection (sqlite3 has no is_interrupted).
#: Keyed by id(): a sqlite3.Connection takes no weak reference. An entry is a few dozen
#: bytes per connection that ever had functions registered; an id reused by a later
#: connection brings a stamp from before any of its calls began, which interrupts nothing.
_INTERRUPTED_AT: dict[int, list[float]] = {}


class StdlibSqliteAdapter(SqliteAdapterBase):
    engine_package = "sqlite3"

    def connection_types(self) -> tuple[type, ...]:
        return (sqlite3.Connection,)

    # -- registration ------------------------------------------------------------------

    def left_out(self, fn: Any) -> str | None:
        if fn.kind != "table":
            return None
        return (
            f"`{fn.name}` is a table function, and Python's sqlite3 module has no virtual tables to make one "
            "from; register the module on an apsw connection (SQLite's own, with virtual tables), or call "
            f"mod.functions[{fn.name!r}](...) for its rows"
        )

    def register_table(self, con: Any, fn: Any) -> None:
        raise RegistrationError(self.left_out(fn))

    def table(self, con: Any, name: str, args: tuple) -> Any:
        raise UsageError("Python's sqlite3 module has no virtual tables, so it has no table functions; use apsw")

    def unregister(self, con: Any, name: str, numargs: int = -1) -> None:
        if sys.version_info >= (3, 13):
            con.create_function(name, numargs, None)  # None removes the function
            return

        def unregistered(*_: Any) -> None:
            raise UsageError(f"`{name}` was unregistered from this connection")

        con.create_function(name, numargs, unregistered)

    def register_scalar(self, con: Any, fn: ScalarFunction) -> None:
        spec = fn.spec
        check = _interrupt_check(con)

        def row(*values: Any) -> Any:
            with _kept_for_error_from():
                return sqlite_value(spec.returns, fn.call_row(*values, interrupted=check()))

        con.create_function(spec.name, len(spec.params), row, deterministic=spec.deterministic)

    def register_aggregate(self, con: Any, fn: AggregateFunction) -> None:
        check = _interrupt_check(con)

        class Group:
            """sqlite3's aggregate (and window) protocol over a RowFeeder."""

            def __init__(self) -> None:
                with _kept_for_error_from():
                    self.feeder = RowFeeder(fn.start(check()))

            def step(self, *values: Any) -> None:
                with _kept_for_error_from():
                    self.feeder.step(*values)

            def inverse(self, *values: Any) -> None:
                with _kept_for_error_from():
                    self.feeder.inverse(*values)

            def value(self) -> Any:
                with _kept_for_error_from():
                    return self.feeder.value()

            def finalize(self) -> Any:
                with _kept_for_error_from():
                    return self.feeder.final()

        nargs = len(fn.spec.params)
        if fn.window:
            con.create_window_function(fn.name, nargs, Group)
        else:
            con.create_aggregate(fn.name, nargs, Group)

    def interrupt(self, con: Any) -> None:
        _INTERRUPTED_AT.setdefault(id(con), [0.0])[0] = time.monotonic()
        con.interrupt()

    # -- databases ---------------------------------------------------------------------

    def connect(self, database: str | None) -> Any:
        return sqlite3.connect(database or ":memory:", isolation_level=None)

    def query(self, con: Any, sql: str, params: tuple = ()) -> tuple[list[str], list[tuple]]:
        cursor = con.execute(sql, params)
        columns = [d[0] for d in cursor.description or []]
        return columns, [tuple(r) for r in cursor.fetchall()]

    def transaction(self, con: Any) -> AbstractContextManager[None]:
        return sql_transaction(con)

    def is_engine_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def wasmudf_error(self, exc: BaseException) -> WasmUdfError | None:
        """sqlite3 reports "user-defined function raised exception" and drops the exception:
        the last one a wasmudf function raised on this thread is kept for this."""
        if not isinstance(exc, sqlite3.OperationalError) or "user-defined" not in str(exc):
            return None
        return getattr(_LAST_ERROR, "error", None)


ADAPTER = StdlibSqliteAdapter()

#: The last WasmUdfError a function raised on each thread (see wasmudf_error).
_LAST_ERROR = threading.local()


@contextmanager
def _kept_for_error_from() -> Iterator[None]:
    try:
        yield
    except WasmUdfError as exc:
        _LAST_ERROR.error = exc
        raise


def _interrupt_check(con: Any) -> Callable[[], Callable[[], bool]]:
    """A factory of per-call checks: a call is interrupted by a wasmudf.interrupt() made
    after it began."""
    stamp = _INTERRUPTED_AT.setdefault(id(con), [0.0])

    def for_call() -> Callable[[], bool]:
        started = time.monotonic()
        return lambda: stamp[0] >= started

    return for_call
