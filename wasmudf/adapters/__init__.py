"""Engine adapters: each translates function objects into one engine's API.

An adapter is an object with the :class:`Adapter` methods; :func:`adapter_for` finds the one
for a connection by its type, :func:`adapter_named` the one for an engine name (the CLI's
``--engine``). Adding an engine is one module here and one line in ``_ADAPTERS``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from importlib import import_module
from typing import Any, Protocol

from ..errors import RegistrationError, WasmUdfError


class NameTaken(Exception):
    """The engine refused a name that already exists (found only when registering)."""

    def __init__(self, name: str, builtin: bool):
        super().__init__(name)
        self.name = name
        self.builtin = builtin


class Adapter(Protocol):
    """What wasmudf needs from an engine."""

    #: The engine's name in messages and on the CLI: "duckdb" or "sqlite".
    engine: str

    def connection_types(self) -> tuple[type, ...]:
        """The connection classes this adapter serves."""

    # -- registration ------------------------------------------------------------------

    def check_supported(self, fn: Any) -> None:
        """Raise RegistrationError if the engine cannot take ``fn`` (its kind or types)."""

    def left_out(self, fn: Any) -> str | None:
        """Why ``fn`` is left out on this engine (its kind has no place there), or None.
        ``register`` registers the module's other functions and warns about it."""

    def path_for(self, con: Any) -> tuple[str, str]:
        """How functions registered on ``con`` are called, and why: (path, reason)."""

    def sql_names(self, fn: Any, con: Any = None) -> list[str]:
        """The SQL names ``fn`` (a function object or FunctionSpec) occupies (on ``con``)."""

    def existing_functions(self, con: Any, names: list[str]) -> dict[str, bool]:
        """Which of ``names`` exist on ``con`` (lower-cased) → "is built in". An adapter may
        leave names out that it can only find by registering: it raises NameTaken then."""

    def register_scalar(self, con: Any, fn: Any) -> None: ...

    def register_aggregate(self, con: Any, fn: Any) -> None:
        """Register an aggregate; a ``window`` one is also usable with OVER."""

    def register_table(self, con: Any, fn: Any) -> None:
        """Register a table function (``SELECT * FROM f(...)``) where the engine can."""

    def table(self, con: Any, name: str, args: tuple) -> Any:
        """The rows of one call of a table function registered on ``con``, in the engine's
        form (a DuckDB relation, an apsw cursor)."""

    def unregister(self, con: Any, name: str, numargs: int) -> None:
        """Remove the function of that name (and arity) wasmudf registered, if any."""

    def interrupt(self, con: Any) -> None:
        """Interrupt ``con``'s query and stop its running guest calls within one tick."""

    # -- databases: the catalog and the CLI --------------------------------------------

    def connect(self, database: str | None) -> Any:
        """A connection to a database file, or to memory for None."""

    def owns_file(self, header: bytes) -> bool:
        """Whether a database file starting with ``header`` (16 bytes) is this engine's."""

    def query(self, con: Any, sql: str, params: tuple = ()) -> tuple[list[str], list[tuple]]:
        """Run one statement: its column names and rows."""

    def transaction(self, con: Any) -> AbstractContextManager[None]:
        """A block committed at its end, rolled back on an exception."""

    def has_table(self, con: Any, name: str) -> bool: ...

    def is_engine_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the engine's own error (reported as such by the CLI)."""

    def wasmudf_error(self, exc: BaseException) -> WasmUdfError | None:
        """The wasmudf error behind an engine error ``exc`` raised by a statement, if any."""


#: (the package a connection's type comes from, the adapter module serving it).
_ADAPTERS = (("duckdb", "duckdb"), ("apsw", "sqlite_apsw"), ("sqlite3", "sqlite_stdlib"))
_BY_TYPE: dict[type, Adapter] = {}


def _adapters(loaded_only: bool) -> Iterator[Adapter]:
    for package, module in _ADAPTERS:
        # A connection exists only once its engine's package is imported: no other is loaded.
        if loaded_only and package not in sys.modules:
            continue
        try:
            yield import_module(f".{module}", __name__).ADAPTER
        except ImportError:  # the engine is not installed
            continue


@contextmanager
def sql_transaction(con: Any, begin: str = "BEGIN") -> Iterator[None]:
    """A transaction by statements, for a connection that has no context manager for one."""
    con.execute(begin)
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def adapter_for(con: Any) -> Adapter:
    """The adapter serving ``con``'s type.

    Raises:
        RegistrationError: no adapter serves it.
    """
    cls = type(con)
    found = _BY_TYPE.get(cls)
    if found is None:
        for adapter in _adapters(loaded_only=True):
            if issubclass(cls, adapter.connection_types()):
                found = _BY_TYPE[cls] = adapter
                break
        else:
            raise RegistrationError(
                f"cannot register on a {cls.__module__}.{cls.__name__}: wasmudf supports "
                "duckdb.DuckDBPyConnection, apsw.Connection and sqlite3.Connection"
            )
    return found


def adapter_named(engine: str) -> Adapter:
    """The adapter of an engine by name ("duckdb" or "sqlite": apsw serves SQLite files)."""
    for adapter in _adapters(loaded_only=False):
        if adapter.engine == engine:
            return adapter
    raise RegistrationError(f"no installed adapter for {engine!r}")


def file_engine(header: bytes) -> str | None:
    """The engine whose database file starts with ``header``, or None."""
    for adapter in _adapters(loaded_only=False):
        if adapter.owns_file(header):
            return adapter.engine
    return None


def is_engine_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an error of one of the engines (not of wasmudf or Python)."""
    return any(adapter.is_engine_error(exc) for adapter in _adapters(loaded_only=True))


def error_from(exc: BaseException) -> WasmUdfError | None:
    """The wasmudf error behind an exception a statement raised, whatever the engine made of
    it: itself on apsw (which passes it through), rebuilt from DuckDB's message (its class
    and text), the last one of this thread on Python's ``sqlite3`` (which drops the text);
    None when no wasmudf function failed."""
    if isinstance(exc, WasmUdfError):
        return exc
    for adapter in _adapters(loaded_only=True):
        found = adapter.wasmudf_error(exc)
        if found is not None:
            return found
    return None
