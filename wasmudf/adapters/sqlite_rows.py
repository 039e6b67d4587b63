"""SQLite's rules, shared by its adapters (apsw and the standard ``sqlite3``).

SQLite calls a function once per row with Python values, steps an aggregate's rows in one at
a time and asks for its result at the end (``final``) or, for a window, after each frame
move (``value``). :class:`RowFeeder` turns that into batches for an AggregateState: rows are
buffered and reach the guest ``ROW_BUFFER`` at a time, in order (an inverse after updates
sends the updates first). SQLite does not tell an aggregate that a step failed, so a state
whose step failed is released at once and its ``final`` answers NULL (the statement reports
the step's error).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .. import decimals, pyvalues, temporal
from ..abi import AbiType
from ..aggregates import AggregateFunction, AggregateState
from ..errors import RegistrationError
from ..functions import ScalarFunction
from ..tables import TableFunction

#: Rows SQLite hands over one at a time are buffered and sent to the guest this many at once.
ROW_BUFFER = 4096


#: SQLite's table-valued functions that pragma_module_list does not show (they are made on
#: first use, or compiled in by some builds); the pragma_* ones are matched by prefix.
BUILTIN_TABLE_FUNCTIONS = frozenset(
    {"json_each", "json_tree", "jsonb_each", "jsonb_tree", "generate_series", "carray", "dbstat", "sqlite_dbpage",
     "sqlite_stmt", "sqlite_memstat", "fts3tokenize", "fts5vocab", "completion", "zipfile", "bytecode", "tables_used"}
)


def sqlite_value(t: AbiType, value: Any) -> Any:
    """A result as SQLite stores it: dates and timestamps as ISO-8601 text (temporal.py),
    decimals as exact text (decimals.py), lists and structs as JSON text (pyvalues.py)."""
    if value is None:
        return None
    if t.temporal:
        return temporal.iso_text(value)
    if t.is_decimal:
        return decimals.exact_text(value)
    if t.is_nested:
        return pyvalues.json_text(t, value)
    return value


def needs_python_rows(fn: Any) -> bool:
    """Whether SQLite must reach ``fn`` through Python: a date, a timestamp or a decimal is
    text there, a list or struct JSON text, parsed and formatted in Python (the C row path
    knows the plain types only)."""
    spec = fn.spec
    return any(t.temporal or not t.is_plain for t in (*spec.params, *([spec.returns] if spec.returns else [])))


class SqliteAdapterBase:
    """What every SQLite adapter does the same way, whatever module reaches SQLite."""

    engine = "sqlite"
    #: The Python module that reaches SQLite ("apsw" or "sqlite3").
    engine_package = ""

    def check_supported(self, fn: Any) -> None:
        if not isinstance(fn, (ScalarFunction, AggregateFunction, TableFunction)):
            raise RegistrationError(f"`{fn.name}`: SQLite cannot register a {type(fn).__name__}")

    def left_out(self, fn: Any) -> str | None:
        return None

    def path_for(self, con: Any) -> tuple[str, str]:
        return "sqlite", f"SQLite's function API through {self.engine_package}"

    def sql_names(self, fn: Any, con: Any = None) -> list[str]:
        return [fn.name]

    def existing_functions(self, con: Any, names: list[str]) -> dict[str, bool]:
        """Which of ``names`` exist on the connection (lower-cased), mapped to "is built in":
        functions, and the virtual table modules that table functions are (a module wasmudf
        did not make counts as built in)."""
        wanted = {n.lower() for n in names}
        rows = con.execute("SELECT lower(name), max(builtin) FROM pragma_function_list GROUP BY 1")
        found = {name: bool(builtin) for name, builtin in rows if name in wanted}
        ours = {n.lower() for n in self.table_modules(con)}
        modules = {name for (name,) in con.execute("SELECT lower(name) FROM pragma_module_list")}
        for name in wanted & (modules | ours):
            found[name] = name not in ours
        for name in wanted:  # SQLite's own table-valued functions, listed or not
            if name in BUILTIN_TABLE_FUNCTIONS or name.startswith("pragma_"):
                found[name] = True
        return found

    def table_modules(self, con: Any) -> set[str]:
        """The table functions wasmudf registered on ``con`` (none where it cannot)."""
        return set()

    def owns_file(self, header: bytes) -> bool:
        return header.startswith(b"SQLite format 3\0")

    def has_table(self, con: Any, name: str) -> bool:
        rows = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return any(True for _ in rows)


class RowFeeder:
    """One group (or window) of an aggregate, stepped one row at a time."""

    __slots__ = ("state", "_rows", "_inverse")

    def __init__(self, state: AggregateState):
        self.state = state
        self._rows: list[tuple[Any, ...]] = []
        self._inverse = False

    def step(self, *values: Any) -> None:
        with self._released_on_failure():
            self._buffer(False, values)

    def inverse(self, *values: Any) -> None:
        with self._released_on_failure():
            self._buffer(True, values)

    def value(self) -> Any:
        with self._released_on_failure():
            self.flush()
            return sqlite_value(self.state.fn.spec.returns, self.state.value())

    def final(self) -> Any:
        if not self.state.is_open:
            return None  # a step failed and the statement reports that error
        with self._released_on_failure():
            self.flush()
        return sqlite_value(self.state.fn.spec.returns, self.state.finish())

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            self.state.fold_rows(rows, inverse=self._inverse)

    # The C RowBuffer (apsw) packs rows itself and hands them over through these.

    def fold_packed(self, inverse: bool, packed: list[tuple], n: int) -> None:
        """``n`` rows packed by the accelerator's ``RowBuffer``: per parameter, its null
        count, validity bitmap (or None) and buffers in Arrow's layout."""
        with self._released_on_failure():
            self.flush()
            columns = [
                (t.code, 0, nulls, validity, b1, b2)
                for t, (nulls, validity, b1, b2) in zip(self.state.fn.spec.params, packed)
            ]
            self.state.fold_columns(columns, n, inverse=inverse)

    def fold_row(self, inverse: bool, *values: Any) -> None:
        """One row the ``RowBuffer`` could not pack (a value of another type or out of range,
        a str that is not UTF-8): folded at once, so the rows stay in order and a wrong value
        is reported at its own row."""
        with self._released_on_failure():
            self._buffer(inverse, values)
            self.flush()

    def _buffer(self, inverse: bool, values: tuple[Any, ...]) -> None:
        if inverse and not self.state.fn.window:
            self.state.inverse()  # raises the UsageError that names the function
        if self._rows and self._inverse != inverse:
            self.flush()
        self._inverse = inverse
        self._rows.append(values)
        if len(self._rows) >= ROW_BUFFER:
            self.flush()

    @contextlib.contextmanager
    def _released_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self._rows = []
            self.state.abandon()
            raise
