"""``register``: put a module's functions on a DuckDB or SQLite (apsw, ``sqlite3``) connection."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from .adapters import Adapter, NameTaken, adapter_for
from .errors import RegistrationError, RegistrationWarning
from .module import Module, Source, load


class Registration(list):
    """What :func:`register` did: the list of the SQL function names it registered (it is
    that list), and what is needed to undo it or to interrupt the connection's queries.

    Attributes:
        connection: the connection the functions were registered on.
        module: the loaded :class:`Module` they run in.
        path: how the engine calls them: on DuckDB "native" (its C extension API) or
            "python" (its Python UDF API); on SQLite "sqlite".
        path_reason: why that path: how the native extension was loaded, or why it could not be.
    """

    def __init__(
        self, connection: Any, module: Module, adapter: Adapter, functions: list[Any], path: tuple[str, str]
    ):
        super().__init__(fn.name for fn in functions)
        self.connection = connection
        self.module = module
        self.path, self.path_reason = path
        self._adapter = adapter
        self._functions = functions

    @property
    def names(self) -> list[str]:
        """The SQL function names, as a plain list."""
        return list(self)

    def unregister(self) -> None:
        """Remove these functions from the connection (names no longer there are skipped)."""
        _unregister_all(self._adapter, self.connection, self._functions)

    def interrupt(self) -> None:
        """Interrupt the connection's running query (see :func:`interrupt`)."""
        self._adapter.interrupt(self.connection)


def register(con: Any, source: Module | Source, *, replace: bool = False, **load_options: Any) -> Registration:
    """Register every function of a module on ``con``; returns a :class:`Registration`, the
    list of their SQL names.

    Args:
        con: a ``duckdb.DuckDBPyConnection``, an ``apsw.Connection`` or a ``sqlite3.Connection``.
        source: a loaded :class:`Module`, or a path / bytes passed to :func:`load`.
        replace: replace functions of the same name that exist on the connection
            (built-in functions are never replaced).
        **load_options: passed to :func:`load` (``limits``, ``grant``, ``config``, ...).

    Engine APIs used: DuckDB's C extension API where wasmudf's extension can be loaded into
    the connection's database (real scalar and aggregate functions; see
    :mod:`wasmudf.duckdb`), else ``create_function(type="arrow")`` (an aggregate ``f`` becomes
    ``f_list`` over ``list()`` plus a temporary macro ``f``); apsw ``create_scalar_function``,
    ``create_aggregate_function`` and, for window-capable aggregates, ``create_window_function``;
    ``sqlite3`` ``create_function``, ``create_aggregate`` and ``create_window_function``.

    Raises:
        RegistrationError: a name exists (and ``replace`` is False, or it is built in), or
            the engine cannot take a function's types; nothing is registered then.
        ModuleError, ManifestError, ExportError, PolicyError: from :func:`load`.
    """
    adapter = adapter_for(con)
    path = adapter.path_for(con)
    if isinstance(source, Module):
        if load_options:
            raise RegistrationError("load options were given with an already loaded Module")
        module = source
    else:
        module = load(source, **load_options)
    functions = list(module.functions.values())
    left_out = {fn.name: reason for fn in functions if (reason := adapter.left_out(fn)) is not None}
    if left_out and len(left_out) == len(functions):
        raise RegistrationError(f"{next(iter(left_out.values()))}: nothing of the module was registered")
    for reason in left_out.values():
        warnings.warn(f"{reason}; the module's other functions were registered", RegistrationWarning, stacklevel=2)
    functions = [fn for fn in functions if fn.name not in left_out]
    for fn in functions:
        adapter.check_supported(fn)
    occupied = [n for fn in functions for n in adapter.sql_names(fn, con)]
    existing = adapter.existing_functions(con, occupied)
    for name in occupied:
        if name.lower() in existing:
            _check_replaceable(adapter, name, existing[name.lower()], replace)
    done: list[Any] = []
    try:
        for fn in functions:
            for name in adapter.sql_names(fn, con):
                if name.lower() in existing:
                    adapter.unregister(con, name, len(fn.spec.params))
            _register_one(adapter, con, fn, replace)
            done.append(fn)
    except BaseException:
        _unregister_all(adapter, con, done)  # all or nothing
        raise
    return Registration(con, module, adapter, functions, path)


def _check_replaceable(adapter: Adapter, name: str, builtin: bool, replace: bool) -> None:
    """The one rule for a name that is taken: never a built-in, others with ``replace``."""
    if builtin:
        raise RegistrationError(
            f"`{name}` is a built-in {adapter.engine} function and cannot be replaced; rename the function "
            f"in the module (e.g. `udf_{name}`): nothing of the module was registered"
        )
    if not replace:
        raise RegistrationError(
            f"a function named `{name}` already exists on this {adapter.engine} connection; "
            "pass replace=True to replace it"
        )


def _register_one(adapter: Adapter, con: Any, fn: Any, replace: bool) -> None:
    create = {
        "scalar": adapter.register_scalar,
        "aggregate": adapter.register_aggregate,
        "table": adapter.register_table,
    }[fn.kind]
    try:
        create(con, fn)
    except NameTaken as taken:  # a name the adapter could only find by registering
        try:
            _check_replaceable(adapter, taken.name, taken.builtin, replace)
        except RegistrationError as exc:
            raise exc from None
        adapter.unregister(con, taken.name, len(fn.spec.params))
        create(con, fn)


def table(con: Any, name: str, *args: Any) -> Any:
    """The rows of one call of the table function ``name`` registered on ``con``, over
    ``args`` (Python values): on DuckDB a relation (``.fetchall()``, ``.df()``, or a view for
    SQL: ``con.register("v", rel)``), streamed from the guest through an Arrow record batch
    reader and so read once; on apsw a cursor over ``SELECT * FROM name(args)``.

    DuckDB's Python path has no table UDFs, so this is how its table functions are called
    (the native path has them in SQL too: ``SELECT * FROM name(...)``)."""
    return adapter_for(con).table(con, name, args)


def interrupt(con: Any) -> None:
    """Interrupt the query running on ``con`` (from another thread), stopping guest code that
    is running for it within one epoch tick (5 ms); the query fails with ``CallInterrupted``
    or the engine's own interruption error.

    On apsw this is ``con.interrupt()``, which wasmudf's functions also notice by themselves.
    On DuckDB's native path ``con.interrupt()`` works too (wasmudf hooks it): it stops the
    running calls of that connection's scalars and of its database's aggregates. On DuckDB's
    Python path and on ``sqlite3`` the engine's ``interrupt()`` is invisible to a running
    Python function, so there a guest call notices only this function; plain
    ``con.interrupt()`` takes effect when the running call returns (within
    ``Limits.timeout_ms``).
    """
    adapter_for(con).interrupt(con)


def unregister(con: Any, functions: Iterable[Any]) -> None:
    """Remove functions (function objects or FunctionSpecs) from ``con``; names that are not
    there are skipped. Built-in functions are never touched."""
    _unregister_all(adapter_for(con), con, functions)


def _unregister_all(adapter: Adapter, con: Any, functions: Iterable[Any]) -> None:
    for fn in functions:
        spec = getattr(fn, "spec", fn)
        for name in adapter.sql_names(fn, con):
            adapter.unregister(con, name, len(spec.params))
