"""Run the same query on DuckDB or SQLite (apsw, sqlite3) and get plain Python rows back;
what each engine can and cannot do is written here once (ENGINE_TRAITS), and tests ask
these traits rather than the engine's name."""

from __future__ import annotations

import datetime
import decimal
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class Traits:
    sql: bool = True
    #: A float NaN survives a round trip through a table and a function result (SQLite
    #: stores NaN as NULL).
    keeps_nan: bool = False
    #: A function's error reaches the caller with its own text (Python's sqlite3 replaces it
    #: with "user-defined function raised exception").
    error_text: bool = True
    #: An aggregate over no rows at all is the guest's finalize of an empty state (Python's
    #: sqlite3 answers NULL without creating the aggregate).
    finalizes_empty_groups: bool = True


ENGINE_TRAITS = {
    "direct": Traits(sql=False, keeps_nan=True),
    "duckdb": Traits(keeps_nan=True),  # native, through DuckDB's C extension API
    "duckdb_python": Traits(keeps_nan=True),  # DuckDB's Python UDFs
    "sqlite": Traits(),  # apsw
    "sqlite3": Traits(error_text=False, finalizes_empty_groups=False),
}


def duckdb_python_path(database: str = ":memory:") -> Any:
    """A DuckDB connection wasmudf registers on through DuckDB's Python UDFs: one whose
    database forbids extension repositories, as a locked-down deployment would."""
    import duckdb

    con = duckdb.connect(database)
    con.execute("SET allow_extension_repositories = 'forbidden'").fetchall()
    return con


def engine_name(con: Any) -> str:
    package = type(con).__module__.split(".")[0]
    return {"_duckdb": "duckdb", "duckdb": "duckdb", "apsw": "sqlite", "sqlite3": "sqlite3"}[package]


def traits(con: Any) -> Traits:
    return ENGINE_TRAITS[engine_name(con)]


def is_duckdb(con: Any) -> bool:
    return engine_name(con) == "duckdb"


def guest_error(con: Any, error: type[BaseException]) -> type[BaseException]:
    """What a statement raises when a wasmudf function in it raised ``error``: apsw passes
    the Python exception through; DuckDB wraps its text in an InvalidInputException; Python's
    sqlite3 replaces it with an OperationalError."""
    if is_duckdb(con):
        import duckdb

        return duckdb.InvalidInputException
    if engine_name(con) == "sqlite3":
        import sqlite3

        return sqlite3.OperationalError
    return error


def missing_function_error(con: Any) -> type[BaseException]:
    """What a statement calling a function the connection does not have raises: on DuckDB's
    native path a function wasmudf unregistered is still in the catalog (its C API cannot drop
    one) and fails when bound (a scalar) or run (an aggregate)."""
    if is_duckdb(con):
        import duckdb

        return (duckdb.CatalogException, duckdb.BinderException, duckdb.InvalidInputException)
    if engine_name(con) == "sqlite3":
        import sqlite3

        return sqlite3.OperationalError
    import apsw

    return apsw.SQLError


def interrupted_error(con: Any) -> tuple[type[BaseException], ...]:
    """What an interrupted statement raises: the engine's own interruption, or the guest
    call's CallInterrupted as the engine reports a function's error (whichever sees it first)."""
    import wasmudf

    if is_duckdb(con):
        import duckdb

        return (duckdb.InterruptException, duckdb.InvalidInputException)
    import apsw

    return (apsw.InterruptError, wasmudf.CallInterrupted)


def query(con: Any, sql: str, params: tuple = ()) -> list[tuple]:
    if is_duckdb(con):
        return con.execute(sql, list(params)).fetchall()
    return [tuple(r) for r in con.execute(sql, params)]


def load_table(con: Any, name: str, table: pa.Table, sql_types: list[str]) -> None:
    """Create table ``name`` (id plus the columns of ``table``) on either engine."""
    rows = [(i, *r.values()) for i, r in enumerate(table.to_pylist())]
    if not is_duckdb(con):
        # SQLite keeps dates and timestamps as ISO-8601 text, decimals as exact text, lists
        # and structs as JSON text, in TEXT columns (a DECIMAL column's affinity would make
        # numbers of them).
        sql_types = ["TEXT" if t.startswith("DECIMAL") or t.endswith("]") or t.startswith("STRUCT") else t for t in sql_types]
        rows = [tuple(_sqlite_text(v) for v in r) for r in rows]
    cols = ", ".join(f"{c} {t}" for c, t in zip(table.column_names, sql_types))
    query(con, f"DROP TABLE IF EXISTS {name}")
    query(con, f"CREATE TABLE {name} (id INTEGER, {cols})")
    marks = ", ".join("?" for _ in range(len(table.column_names) + 1))
    if not rows:
        return
    if is_duckdb(con):
        con.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
    else:
        with con:
            con.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)


def _sqlite_text(v: Any) -> Any:
    """A value as the SQLite tests store it (see load_table)."""
    from wasmudf import temporal

    if isinstance(v, datetime.date):
        return temporal.iso_text(v)
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


def call_over_rows(con: Any, fn: str, table: pa.Table, sql_types: list[str]) -> list[Any]:
    """``fn(col0, col1, ...)`` for every row of ``table``, in row order."""
    load_table(con, "t", table, sql_types)
    args = ", ".join(table.column_names)
    out = [r[0] for r in query(con, f"SELECT {fn}({args}) FROM t ORDER BY id")]
    query(con, "DROP TABLE t")
    return out


def outcome(con: Any, sql: str, values: tuple[Any, ...]) -> tuple[str, Any]:
    """("ok", the single value) or ("error", the wasmudf error's class name) of a one-row
    query on an apsw connection, NaN as "nan" so that two outcomes compare equal."""
    import math

    import wasmudf

    try:
        (value,) = con.execute(sql, values).fetchall()[0]
    except wasmudf.WasmUdfError as exc:
        return ("error", type(exc).__name__)
    if isinstance(value, float) and math.isnan(value):
        return ("ok", "nan")
    return ("ok", value)
