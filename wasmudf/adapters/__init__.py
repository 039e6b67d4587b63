"""Engine adapters: thin translations of function objects into one engine's API."""

from __future__ import annotations

from typing import Any

from ..errors import RegistrationError


class NameTaken(Exception):
    """The engine refused a name that already exists (found only when registering)."""

    def __init__(self, name: str, builtin: bool):
        super().__init__(name)
        self.name = name
        self.builtin = builtin


def engine_of(con: Any) -> str:
    """``"duckdb"`` or ``"sqlite"`` for a supported connection object."""
    cls = type(con)
    module = cls.__module__ or ""
    if module.split(".")[0] in ("duckdb", "_duckdb") and hasattr(con, "create_function"):
        return "duckdb"
    if module.split(".")[0] == "apsw" and hasattr(con, "create_scalar_function"):
        return "sqlite"
    raise RegistrationError(
        f"cannot register on a {module}.{cls.__name__}: wasmudf supports "
        "duckdb.DuckDBPyConnection and apsw.Connection"
    )
