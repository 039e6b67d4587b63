"""``register``: put a module's functions on a DuckDB or SQLite (apsw) connection."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from typing import Any

from .adapters import NameTaken, engine_of
from .errors import RegistrationError
from .module import Module, Source, load


def register(con: Any, source: Module | Source, *, replace: bool = False, **load_options: Any) -> list[str]:
    """Register every function of a module on ``con`` and return their SQL names.

    Args:
        con: a ``duckdb.DuckDBPyConnection`` or an ``apsw.Connection``.
        source: a loaded :class:`Module`, or a path / bytes passed to :func:`load`.
        replace: replace functions of the same name that exist on the connection
            (built-in functions are never replaced).
        **load_options: passed to :func:`load` (``limits``, ``grant``, ``config``, ...).

    Engine APIs used: DuckDB ``create_function(type="arrow")`` (an aggregate ``f`` becomes
    ``f_list`` over ``list()`` plus a temporary macro ``f``); apsw ``create_scalar_function``,
    ``create_aggregate_function`` and, for window-capable aggregates, ``create_window_function``.

    Raises:
        RegistrationError: a name exists (and ``replace`` is False, or it is built in), or
            the engine cannot take a function's types; nothing is registered then.
        ModuleError, ManifestError, ExportError, PolicyError: from :func:`load`.
    """
    engine = engine_of(con)
    if isinstance(source, Module):
        if load_options:
            raise RegistrationError("load options were given with an already loaded Module")
        module = source
    else:
        module = load(source, **load_options)
    adapter = import_module(f".adapters.{engine}", __package__)
    functions = list(module.functions.values())
    for fn in functions:
        adapter.check_supported(fn)
    names = [fn.name for fn in functions]
    occupied = [n for fn in functions for n in adapter.sql_names(fn)]
    existing = adapter.existing_functions(con, occupied)
    for name in occupied:
        builtin = existing.get(name.lower())
        if builtin is None:
            continue
        if builtin:
            raise RegistrationError(f"`{name}` is a built-in {engine} function and cannot be replaced")
        if not replace:
            raise RegistrationError(
                f"a function named `{name}` already exists on this {engine} connection; "
                "pass replace=True to replace it"
            )
    done: list[Any] = []
    try:
        for fn in functions:
            for name in adapter.sql_names(fn):
                if name.lower() in existing:
                    adapter.unregister(con, name, numargs=len(fn.spec.params))
            _register_one(adapter, con, fn, replace, engine)
            done.append(fn)
    except BaseException:
        unregister(con, done)  # all or nothing
        raise
    return names


def _register_one(adapter: Any, con: Any, fn: Any, replace: bool, engine: str) -> None:
    try:
        adapter.register_function(con, fn)
    except NameTaken as taken:
        if taken.builtin:
            raise RegistrationError(
                f"`{taken.name}` is a built-in {engine} function and cannot be replaced"
            ) from None
        if not replace:
            raise RegistrationError(
                f"a function named `{taken.name}` already exists on this {engine} connection; "
                "pass replace=True to replace it"
            ) from None
        adapter.unregister(con, taken.name, numargs=len(fn.spec.params))
        adapter.register_function(con, fn)


def interrupt(con: Any) -> None:
    """Interrupt the query running on ``con`` (from another thread), stopping guest code that
    is running for it within one epoch tick (5 ms); the query fails with ``CallInterrupted``
    or the engine's own interruption error.

    On SQLite this is ``con.interrupt()``, which wasmudf's functions also notice by
    themselves. DuckDB's ``interrupt()`` is invisible to a running Python UDF, so there a
    guest call notices only this function; plain ``con.interrupt()`` takes effect when the
    running call returns (within ``Limits.timeout_ms``).
    """
    engine = engine_of(con)
    if engine == "duckdb":
        from .adapters.duckdb import interrupt as duckdb_interrupt

        duckdb_interrupt(con)
    else:
        con.interrupt()


def unregister(con: Any, functions: Iterable[Any]) -> None:
    """Remove functions (function objects or FunctionSpecs) from ``con``; names that are not
    there are skipped. Built-in functions are never touched."""
    engine = engine_of(con)
    adapter = import_module(f".adapters.{engine}", __package__)
    for fn in functions:
        spec = getattr(fn, "spec", fn)
        for name in adapter.sql_names(fn):
            adapter.unregister(con, name, numargs=len(spec.params))
