"""Interrupting a query stops guest code that is running for it within one epoch tick."""

from __future__ import annotations

import threading
import time

import pytest
import wat
from conftest import connect
from engines import interrupted_error, query

import wasmudf

SPIN = "(loop $l (br $l)) (i32.const 0)"
FUNCTIONS = [
    wat.scalar("spin", ["int64"], "int64"),
    {"name": "spin_agg", "kind": "aggregate", "params": ["int64"], "returns": "int64"},
    wat.scalar("add_i64", ["int64", "int64"], "int64"),
]
BODY = f"""
  (func (export "spin") (param i32 i32 i32) (result i32) {SPIN})
  (func (export "spin_agg__init") (result i32) (i32.const 64))
  (func (export "spin_agg__update") (param i32 i32 i32) (result i32) {SPIN})
  (func (export "spin_agg__finalize") (param i32 i32) (result i32) (i32.const 0))
"""


def interrupt_later(con, delay: float = 0.3) -> threading.Timer:
    # SQLite's own interrupt() is enough; DuckDB's is invisible to a running UDF, so there
    # wasmudf.interrupt (which also calls DuckDB's) is the way.
    timer = threading.Timer(delay, wasmudf.interrupt, [con])
    timer.start()
    return timer


@pytest.mark.parametrize("sql", ["SELECT spin(x) FROM t", "SELECT spin_agg(x) FROM t"])
def test_interrupt_stops_a_running_guest(engine, sql):
    # No time limit: only the interruption can stop these calls.
    module = wasmudf.load(wat.module(BODY + wat.ADD_I64, FUNCTIONS), limits=wasmudf.Limits(timeout_ms=None))
    con = connect(engine)
    wasmudf.register(con, module)
    query(con, "CREATE TABLE t (x BIGINT)")
    query(con, "INSERT INTO t VALUES (1)")
    timer = interrupt_later(con)
    start = time.monotonic()
    with pytest.raises(interrupted_error(con), match=r"(?i)interrupt"):
        query(con, sql)
    elapsed = time.monotonic() - start
    timer.join()
    assert 0.25 < elapsed < 1.0
    assert query(con, "SELECT add_i64(x, 1) FROM t") == [(2,)]


def test_sqlite_interrupt_alone_is_enough():
    module = wasmudf.load(wat.module(BODY + wat.ADD_I64, FUNCTIONS), limits=wasmudf.Limits(timeout_ms=None))
    con = connect("sqlite")
    wasmudf.register(con, module)
    threading.Timer(0.2, con.interrupt).start()
    start = time.monotonic()
    with pytest.raises(wasmudf.CallInterrupted, match=r"`spin`.*its query was interrupted"):
        con.execute("SELECT spin(1)").fetchall()
    assert time.monotonic() - start < 1.0


def test_an_earlier_interrupt_does_not_stop_later_queries():
    import duckdb

    con = duckdb.connect()
    wasmudf.register(con, wasmudf.load(wat.module(BODY + wat.ADD_I64, FUNCTIONS)))
    wasmudf.interrupt(con)  # nothing is running
    assert con.execute("SELECT add_i64(range, 1) FROM range(3)").fetchall() == [(1,), (2,), (3,)]
