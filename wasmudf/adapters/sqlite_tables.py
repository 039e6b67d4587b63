"""Table functions on SQLite (apsw): each becomes an eponymous virtual table.

``SELECT * FROM split_rows('a,b', ',')`` and ``SELECT … FROM t, split_rows(t.x, ',')`` work as
with SQLite's own table-valued functions: the arguments are hidden columns (``arg1``, …)
constrained by equality, which ``BestIndex`` hands to ``Filter``; each ``Filter`` (one per
outer row in a lateral join) is one call of the guest function, read a batch at a time.
Python's ``sqlite3`` has no virtual tables, so there a table function cannot be registered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import apsw

from ..abi import argument_column
from ..errors import ArgumentTypeError, UsageError
from ..tables import TableCall, TableFunction
from .sqlite_rows import sqlite_value

#: Rows per guest call: the first batch of a call is small (a lateral join makes many calls
#: of a few rows, and a batch's buffers cost their size), each next one twice as large, up to
#: BATCH_ROWS (SQLite reads a row at a time through Python anyway).
FIRST_BATCH_ROWS = 64
BATCH_ROWS = 4096
#: The cost SQLite is told for a plan that lacks arguments: used only when there is no other,
#: so the query fails in Filter naming the missing argument rather than "no query solution".
_NO_PLAN_COST = 1e99


class TableModule:
    """The virtual table module of one table function (apsw calls it).

    Statements apsw has cached keep the virtual table they were prepared with after the
    module is dropped, so unregistering disables the module (such a statement then fails
    naming the function), and registering a function of the same shape again brings the same
    module back with the new function, which those statements then call."""

    def __init__(self, fn: TableFunction, interrupted: Callable[[], bool]):
        self.fn = fn
        self.interrupted = interrupted
        self.enabled = True
        outputs = [f'"{name}"' for name, _ in fn.spec.columns]
        hidden = [f"{argument_column(i)} HIDDEN" for i in range(len(fn.spec.params))]
        #: The virtual table's declaration: two functions of the same shape share it.
        self.schema = f"CREATE TABLE x({', '.join(outputs + hidden)})"

    def Connect(self, connection: Any, modulename: str, databasename: str, tablename: str, *args: Any):  # noqa: N802
        return self.schema, _Table(self)

    Create = Connect


class _Table:
    def __init__(self, module: TableModule):
        self.module = module
        self.ncols = len(module.fn.spec.columns)
        self.nparams = len(module.fn.spec.params)

    def BestIndexObject(self, info: apsw.IndexInfo) -> bool:  # noqa: N802
        """Take equality constraints on the argument columns as the call's arguments; a plan
        where one of them is constrained but not usable yet (a lateral join planned the
        wrong way round) is refused, so SQLite plans the outer table first."""
        chosen: dict[int, int] = {}
        for i in range(info.nConstraint):
            param = info.get_aConstraint_iColumn(i) - self.ncols
            if param < 0 or info.get_aConstraint_op(i) != apsw.SQLITE_INDEX_CONSTRAINT_EQ or param in chosen:
                continue
            if not info.get_aConstraint_usable(i):
                return False
            chosen[param] = i
        for position, param in enumerate(sorted(chosen)):
            info.set_aConstraintUsage_argvIndex(chosen[param], position + 1)
            info.set_aConstraintUsage_omit(chosen[param], True)
        info.idxStr = ",".join(str(p) for p in sorted(chosen))
        complete = len(chosen) == self.nparams
        info.estimatedCost = 1000.0 if complete else _NO_PLAN_COST
        info.estimatedRows = 1000
        return True

    def Open(self) -> _Cursor:  # noqa: N802
        return _Cursor(self.module)

    def Disconnect(self) -> None:  # noqa: N802
        pass

    Destroy = Disconnect


class _Cursor:
    """One scan: a guest call per Filter, its rows a batch at a time."""

    def __init__(self, module: TableModule):
        self.module = module
        self.fn = module.fn
        self.call: TableCall | None = None
        self.thread = 0
        self.arguments: list[Any] = []
        self.columns: list[list[Any]] = []
        self.row = 0
        self.rows = 0
        self.rowid = 0
        self.capacity = FIRST_BATCH_ROWS

    def Filter(self, indexnum: int, indexname: str | None, constraintargs: tuple) -> None:  # noqa: N802
        self.Close()
        module = self.module
        if not module.enabled:
            raise UsageError(f"`{module.fn.name}` was unregistered from this connection")
        fn = self.fn = module.fn
        given = [int(p) for p in indexname.split(",")] if indexname else []
        if len(given) != len(fn.spec.params):
            missing = sorted(set(range(len(fn.spec.params))) - set(given))
            raise ArgumentTypeError(
                f"`{fn.name}` takes {len(fn.spec.params)} arguments; argument {missing[0] + 1} is missing "
                f"(call it as {fn.name}({', '.join('…' for _ in fn.spec.params)}))"
            )
        values = [None] * len(given)
        for param, value in zip(given, constraintargs):
            values[param] = value
        self.arguments = fn.check_arguments(values)
        self.thread = threading.get_ident()
        self.call = TableCall(fn, fn.pool.get(fn.name), self.arguments, module.interrupted)
        self.rowid = 0
        self.capacity = FIRST_BATCH_ROWS
        self._fetch()

    def _fetch(self) -> None:
        columns = self.call.next_rows(self.capacity) if self.call is not None else None
        self.capacity = min(self.capacity * 2, BATCH_ROWS)
        if columns is None:
            self.columns, self.rows, self.row = [], 0, 0
            return
        self.columns = [
            [sqlite_value(t, v) for v in column] if t.temporal else column
            for column, (_, t) in zip(columns, self.fn.spec.columns)
        ]
        self.rows, self.row = len(columns[0]), 0

    def Eof(self) -> bool:  # noqa: N802
        return self.row >= self.rows

    def Column(self, number: int) -> Any:  # noqa: N802
        if number < 0:
            return self.rowid
        if number < len(self.columns):
            return self.columns[number][self.row]
        return self.arguments[number - len(self.columns)]  # a hidden argument column: SQLite's own value

    def Next(self) -> None:  # noqa: N802
        self.row += 1
        self.rowid += 1
        if self.row >= self.rows:
            if threading.get_ident() != self.thread:  # the call's state is in that thread's instance
                raise UsageError(f"`{self.fn.name}`: a table function's rows must be read on the thread that started it")
            self._fetch()

    def Rowid(self) -> int:  # noqa: N802
        return self.rowid

    def Close(self) -> None:  # noqa: N802
        if self.call is not None:
            self.call.close()
            self.call = None
