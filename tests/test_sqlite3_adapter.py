"""Python's standard sqlite3 as a third engine: what it does the same as apsw is in the
conformance and aggregate suites; here is what is particular to it (errors without their
text, interrupting through wasmudf.interrupt, unregistering on Python < 3.13)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import wat

import wasmudf

SPIN = "(loop $l (br $l)) (i32.const 0)"
BODY = f"""
  (func (export "spin") (param i32 i32 i32) (result i32) {SPIN})
  (func (export "boom") (param i32 i32 i32) (result i32) unreachable)
"""
FUNCTIONS = [
    wat.scalar("spin", ["int64"], "int64"),
    wat.scalar("boom", ["int64"], "int64"),
    wat.scalar("add_i64", ["int64", "int64"], "int64"),
]


@pytest.fixture
def con():
    c = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    yield c
    c.close()


@pytest.fixture
def module():
    return wasmudf.load(wat.module(BODY + wat.ADD_I64, FUNCTIONS), limits=wasmudf.Limits(timeout_ms=None))


def test_a_trap_fails_the_statement_and_the_connection_and_data_survive(con, module):
    wasmudf.register(con, module)
    con.execute("CREATE TABLE t (x INTEGER)")
    con.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
    with pytest.raises(sqlite3.OperationalError, match="user-defined function raised exception"):
        con.execute("SELECT boom(x) FROM t").fetchall()
    assert con.execute("SELECT add_i64(x, 10) FROM t ORDER BY x").fetchall() == [(11,), (12,)]
    # What the guest did is still there to see, on the function object.
    with pytest.raises(wasmudf.GuestTrap, match=r"`boom` in .* trapped: .*unreachable"):
        module.functions["boom"].call_row(1)


def test_wasmudf_interrupt_stops_a_running_guest(con, module):
    wasmudf.register(con, module)
    timer = threading.Timer(0.3, wasmudf.interrupt, [con])
    timer.start()
    start = time.monotonic()
    with pytest.raises(sqlite3.OperationalError):
        con.execute("SELECT spin(1)").fetchall()
    timer.join()
    # No time limit: the call stopped because it was interrupted, not on its own.
    assert time.monotonic() - start >= 0.3
    assert con.execute("SELECT add_i64(1, 2)").fetchall() == [(3,)]


def test_a_registration_is_its_names_and_undoes_itself(con, module):
    registration = wasmudf.register(con, module)
    assert registration == ["spin", "boom", "add_i64"] and registration.names == list(registration)
    assert registration.connection is con and registration.module is module
    registration.unregister()
    with pytest.raises(sqlite3.OperationalError):
        con.execute("SELECT add_i64(1, 2)").fetchall()
    again = wasmudf.register(con, module, replace=True)
    assert con.execute("SELECT add_i64(1, 2)").fetchall() == [(3,)] and again.names == registration.names


def test_a_builtin_name_is_refused_and_nothing_is_registered(con):
    body = wat.ADD_I64 + wat.ADD_I64.replace('"add_i64"', '"upper"')
    functions = [wat.scalar("add_i64", ["int64", "int64"], "int64"), wat.scalar("upper", ["int64", "int64"], "int64")]
    upper = wasmudf.load(wat.module(body, functions))
    with pytest.raises(wasmudf.RegistrationError, match="`upper` is a built-in sqlite function"):
        wasmudf.register(con, upper, replace=True)
    assert con.execute("SELECT upper('a')").fetchall() == [("A",)]
    with pytest.raises(sqlite3.OperationalError, match="no such function"):
        con.execute("SELECT add_i64(1, 2)").fetchall()
