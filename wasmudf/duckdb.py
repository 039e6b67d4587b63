"""DuckDB connections that run wasmudf's functions natively from the start.

:func:`wasmudf.register` loads wasmudf's DuckDB extension into any connection it can (see
:mod:`wasmudf.adapters.duckdb_native`); :func:`connect` opens a connection that has it
already, by the route that needs no extension repository: it connects with
``allow_unsigned_extensions``, loads the extension and switches that setting off at once, so
no other unsigned extension can be loaded into the database afterwards.
"""

from __future__ import annotations

from typing import Any

from .adapters import duckdb as duckdb_adapter


def connect(database: str = ":memory:", read_only: bool = False, config: dict[str, Any] | None = None) -> Any:
    """``duckdb.connect(database, read_only, config)`` with wasmudf's extension loaded.

    When the extension cannot be loaded (not built, or the database file is already open in
    this process with another configuration), this is a plain connection and
    :func:`wasmudf.register` takes the signed route or the Python path on it, as on any
    other; ``Registration.path_reason`` says which and why.
    """
    return duckdb_adapter.connect_with_extension(database, read_only, config)
