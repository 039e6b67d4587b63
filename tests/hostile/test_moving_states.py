"""Aggregates whose states move between instances (ABI §5: __serialize, __deserialize,
__merge): a guest that lies in any of them fails the statement with a clear error naming
the function, and the connection, the database and the other functions survive."""

from __future__ import annotations

import duckdb
import pytest
import wat

import wasmudf
from wasmudf.adapters import duckdb_native

# row_count(x): the number of rows, with an 8-byte state (an i64) in a slot below the arena.
# Each part is WAT that a case replaces; the good ones make a correct aggregate.
GOOD = {
    "init": "(call $slot)",
    "update": """(i64.store (local.get $s) (i64.add (i64.load (local.get $s))
                   (i64.extend_i32_u (i32.load offset=4 (local.get $args))))) (i32.const 0)""",
    "finalize": "(i64.store (i32.load offset=20 (local.get $out)) (i64.load (local.get $s))) (i32.const 0)",
    "merge": "(i64.store (local.get $s) (i64.add (i64.load (local.get $s)) (i64.load (local.get $o)))) (i32.const 0)",
    "serialize": """(local.set $p (call $alloc (i32.const 8) (i32.const 8)))
                   (i64.store (local.get $p) (i64.load (local.get $s)))
                   (i32.store offset=4 (i32.load offset=16 (local.get $out)) (i32.const 8))
                   (i32.store offset=20 (local.get $out) (local.get $p))
                   (i32.store offset=24 (local.get $out) (i32.const 8)) (i32.const 0)""",
    "deserialize": """(if (i32.ne (local.get $len) (i32.const 8)) (then (return (i32.const 0))))
                     (local.set $p (call $slot)) (i64.store (local.get $p) (i64.load (local.get $bytes)))
                     (local.get $p)""",
}


def row_count(**parts: str) -> bytes:
    p = {**GOOD, **parts}
    body = f"""
      (global $next (mut i32) (i32.const 0))
      (func $slot (result i32) (local $s i32)
        (local.set $s (i32.add (i32.const 256) (i32.shl (i32.and (global.get $next) (i32.const 63)) (i32.const 3))))
        (global.set $next (i32.add (global.get $next) (i32.const 1)))
        (i64.store (local.get $s) (i64.const 0)) (local.get $s))
      (func (export "row_count__init") (result i32) {p["init"]})
      (func (export "row_count__update") (param $s i32) (param $args i32) (param $n i32) (result i32) {p["update"]})
      (func (export "row_count__finalize") (param $s i32) (param $out i32) (result i32) {p["finalize"]})
      (func (export "row_count__merge") (param $s i32) (param $o i32) (result i32) {p["merge"]})
      (func (export "row_count__serialize") (param $s i32) (param $out i32) (result i32) (local $p i32)
        {p["serialize"]})
      (func (export "row_count__deserialize") (param $bytes i32) (param $len i32) (result i32) (local $p i32)
        {p["deserialize"]})
    """
    functions = [
        {"name": "row_count", "kind": "aggregate", "params": ["int64"], "returns": "int64"},
        wat.scalar("add_i64", ["int64", "int64"], "int64"),
    ]
    return wat.module(body + wat.ADD_I64, functions)


LIES = {
    "a NULL state": {
        "serialize": "(i32.store8 (i32.load offset=12 (local.get $out)) (i32.const 0)) (i32.const 0)",
        "error": r"__serialize returned NULL",
    },
    "bytes outside memory": {
        "serialize": """(i32.store offset=4 (i32.load offset=16 (local.get $out)) (i32.const 8))
                       (i32.store offset=20 (local.get $out) (i32.const 0x7ffffff0))
                       (i32.store offset=24 (local.get $out) (i32.const 8)) (i32.const 0)""",
        "error": r"outside the .*linear memory",
    },
    "offsets that disagree": {
        "serialize": """(i32.store offset=4 (i32.load offset=16 (local.get $out)) (i32.const 4))
                       (i32.store offset=20 (local.get $out) (i32.const 1024))
                       (i32.store offset=24 (local.get $out) (i32.const 8)) (i32.const 0)""",
        "error": r"offsets\[1\] is 4 but values_len is 8",
    },
    "a moved descriptor": {
        "serialize": "(i32.store offset=16 (local.get $out) (i32.const 64)) (i32.const 0)",
        "error": r"changed the output descriptor's 'offsets' field",
    },
    "no state back": {"deserialize": "(i32.const 0)", "error": r"row_count__deserialize returned 0"},
    "a trap": {"deserialize": "(unreachable)", "error": r"[Uu]nreachable"},
    "a failed merge": {"merge": "(i32.const 3)", "error": r"status 3"},
}


def group_query(con) -> list[tuple]:
    # Enough rows per group that states fold (FOLD_ROWS) and, with threads, combine.
    return con.execute("SELECT g, row_count(x) FROM t GROUP BY g ORDER BY g").fetchall()


@pytest.fixture
def native_con():
    if duckdb_native.unavailable_reason() is not None:
        pytest.skip("DuckDB's native path needs the C accelerator (this is the pure-Python run)")
    con = duckdb.connect()
    con.execute("SET threads = 2")
    # Over one row group (122,880 rows), so threads build partial states that DuckDB combines.
    con.execute("CREATE TABLE t AS SELECT range % 3 AS g, range AS x FROM range(400000)")
    return con


def test_the_good_module_counts_rows_on_every_path(native_con):
    reg = wasmudf.register(native_con, row_count())
    assert reg.path == "native"
    want = native_con.execute("SELECT g, count(x) FROM t GROUP BY g ORDER BY g").fetchall()
    assert group_query(native_con) == want
    direct = wasmudf.load(row_count()).functions["row_count"]
    state = direct.start()
    state.update(list(range(5)))
    moved = direct.restore(state.serialize())
    other = direct.start()
    other.update(list(range(7)))
    moved.merge(other)
    assert moved.finish() == 12


@pytest.mark.parametrize("case", list(LIES))
def test_a_lying_state_fails_the_statement_and_nothing_else(native_con, case):
    parts = {k: v for k, v in LIES[case].items() if k != "error"}
    wasmudf.register(native_con, row_count(**parts))
    with pytest.raises(duckdb.Error, match=rf"`row_count`.*{LIES[case]['error']}"):
        group_query(native_con)
    # The connection, its data and the module's other function all still answer.
    assert native_con.execute("SELECT count(*), sum(add_i64(x, 1)) FROM t").fetchall() == [(400000, sum(range(1, 400001)))]


@pytest.mark.parametrize("case", list(LIES))
def test_a_lying_state_fails_the_direct_call_clearly(case):
    parts = {k: v for k, v in LIES[case].items() if k != "error"}
    fn = wasmudf.load(row_count(**parts)).functions["row_count"]
    with pytest.raises(wasmudf.GuestError, match=LIES[case]["error"]):
        state = fn.start()
        state.update([1, 2, 3])
        moved = fn.restore(state.serialize())
        other = fn.start()
        moved.merge(other)
        moved.finish()
    assert fn.aggregate([1, 2, 3]) == 3  # a fresh instance answers


def test_serialize_without_deserialize_is_refused_at_load():
    wasm = wat.module(
        """
        (func (export "c__init") (result i32) (i32.const 64))
        (func (export "c__update") (param i32 i32 i32) (result i32) (i32.const 0))
        (func (export "c__finalize") (param i32 i32) (result i32) (i32.const 0))
        (func (export "c__serialize") (param i32 i32) (result i32) (i32.const 0))
        """,
        [{"name": "c", "kind": "aggregate", "params": ["int64"], "returns": "int64"}],
    )
    with pytest.raises(wasmudf.ExportError, match=r"c__serialize without c__merge, c__deserialize"):
        wasmudf.load(wasm)
