"""Hostile table functions (ABI §6): a `next` that never returns, one that yields forever,
batches with lying lengths, offsets or addresses, a trap midway through a lateral join. Each
fails the statement (or the direct call) with a clear error naming the function; the
connection, its data and the module's other functions survive."""

from __future__ import annotations

import apsw
import duckdb
import pytest
import wat

import wasmudf

# count_to(n) -> (v int64, s utf8): rows 0..n-1, s always ''. State: the rows left, in a slot
# below the arena. A case replaces the body of `next` (or of `open`).
OPEN = """(local.set $p (i32.add (i32.const 256) (i32.shl (i32.and (global.get $next) (i32.const 63)) (i32.const 3))))
          (global.set $next (i32.add (global.get $next) (i32.const 1)))
          (i32.store (local.get $p) (i32.wrap_i64 (i64.load (i32.load offset=20 (local.get $args)))))
          (local.get $p)"""
NEXT = """(local.set $cap (i32.load offset=4 (local.get $outs)))
          (local.set $m (i32.load (local.get $s)))
          (if (i32.gt_u (local.get $m) (local.get $cap)) (then (local.set $m (local.get $cap))))
          (local.set $vals (i32.load offset=20 (local.get $outs)))
          (block $done (loop $row
            (br_if $done (i32.ge_u (local.get $i) (local.get $m)))
            (i64.store (i32.add (local.get $vals) (i32.shl (local.get $i) (i32.const 3))) (i64.extend_i32_u (local.get $i)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $row)))
          (i32.store (local.get $s) (i32.sub (i32.load (local.get $s)) (local.get $m)))
          (local.get $m)"""


def count_to(next_body: str = NEXT, open_body: str = OPEN) -> bytes:
    body = f"""
      (global $next (mut i32) (i32.const 0))
      (func (export "count_to__open") (param $args i32) (param $nargs i32) (result i32) (local $p i32) {open_body})
      (func (export "count_to__next") (param $s i32) (param $outs i32) (param $ncols i32) (result i32)
        (local $cap i32) (local $m i32) (local $vals i32) (local $i i32) {next_body})
      (func (export "count_to__close") (param i32))
    """
    functions = [
        {"name": "count_to", "kind": "table", "params": ["int64"],
         "columns": [{"name": "v", "type": "int64"}, {"name": "s", "type": "utf8"}]},
        wat.scalar("add_i64", ["int64", "int64"], "int64"),
    ]
    return wat.module(body + wat.ADD_I64, functions)


#: The second column's descriptor is at outs + 32: its offsets at +48, values at +52.
CASES = {
    "a next that never returns": ("(loop $l (br $l)) (i32.const 0)", r"TimeLimitExceeded|time limit"),
    "a next that yields forever": ("(i32.load offset=4 (local.get $outs))", r"more than Limits.table_rows = 50000"),
    "more rows than the batch holds": ("(i32.add (i32.load offset=4 (local.get $outs)) (i32.const 1))",
                                       r"returned \d+ rows for a batch of \d+"),
    "offsets that run past the values": (
        "(i32.store offset=4 (i32.load offset=48 (local.get $outs)) (i32.const 5)) (i32.const 1)",
        r"column 's': offsets\[1\] is 5 but values_len is 0",
    ),
    "values outside memory": (
        """(i32.store offset=4 (i32.load offset=48 (local.get $outs)) (i32.const 8))
           (i32.store offset=52 (local.get $outs) (i32.const 0x7ffffff0))
           (i32.store offset=56 (local.get $outs) (i32.const 8)) (i32.const 1)""",
        r"column 's': values \[0x7ffffff0, \+8\) is outside",
    ),
    "a changed descriptor": ("(i32.store offset=4 (local.get $outs) (i32.const 1)) (i32.const 1)",
                             r"column 'v': it changed the output descriptor's 'length' field"),
    "a failure": ("(i32.const -1)", r"failed \(status -1\)"),
}
LIMITS = wasmudf.Limits(timeout_ms=200, table_rows=50_000)


@pytest.mark.parametrize("case", list(CASES))
def test_direct_call(case):
    body, error = CASES[case]
    fn = wasmudf.load(count_to(body), limits=LIMITS).functions["count_to"]
    with pytest.raises(wasmudf.GuestError, match=error):
        fn(3).read_all()
    good = wasmudf.load(count_to(), limits=LIMITS).functions["count_to"]
    assert good(3).read_all().column("v").to_pylist() == [0, 1, 2]


@pytest.mark.parametrize("case", list(CASES))
def test_sqlite_statement_fails_and_the_connection_survives(case):
    body, error = CASES[case]
    con = apsw.Connection(":memory:")
    con.execute("CREATE TABLE t(n INTEGER); INSERT INTO t VALUES (1), (2), (3)")
    wasmudf.register(con, count_to(body), limits=LIMITS)
    with pytest.raises(wasmudf.GuestError, match=error):
        con.execute("SELECT t.n, c.v FROM t, count_to(t.n) AS c").fetchall()
    assert con.execute("SELECT sum(add_i64(n, 1)) FROM t").fetchall() == [(9,)]
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(3,)]


@pytest.mark.parametrize("case", list(CASES))
def test_duckdb_relation_fails_and_the_connection_survives(case):
    body, error = CASES[case]
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS n FROM range(3)")
    wasmudf.register(con, count_to(body), limits=LIMITS)
    # Opening fails as the GuestError itself; a batch read by DuckDB fails as DuckDB's error.
    with pytest.raises((wasmudf.GuestError, duckdb.Error), match=error):
        wasmudf.table(con, "count_to", 3).fetchall()
    assert con.execute("SELECT sum(add_i64(n, 1)) FROM t").fetchall() == [(6,)]


@pytest.mark.parametrize("case", list(CASES))
def test_duckdb_native_statement_fails_and_the_connection_survives(case):
    from wasmudf.adapters import duckdb_native

    if duckdb_native.unavailable_reason() is not None:
        pytest.skip("DuckDB's native path needs the C accelerator (this is the pure-Python run)")
    body, error = CASES[case]
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS n FROM range(3)")
    assert wasmudf.register(con, count_to(body), limits=LIMITS).path == "native"
    with pytest.raises(duckdb.Error, match=error):
        con.execute("SELECT count(*) FROM count_to(3)").fetchall()
    assert con.execute("SELECT sum(add_i64(n, 1)) FROM t").fetchall() == [(6,)]
    good = count_to()
    wasmudf.register(con, good, limits=LIMITS, replace=True)
    assert con.execute("SELECT v, s FROM count_to(3)").fetchall() == [(0, ""), (1, ""), (2, "")]


def test_a_trap_midway_through_a_lateral_join():
    # open traps on the third row of arguments (n = 3), after two calls returned rows.
    trap_on_three = f"(if (i64.eq (i64.load (i32.load offset=20 (local.get $args))) (i64.const 3)) (then unreachable)) {OPEN}"
    con = apsw.Connection(":memory:")
    con.execute("CREATE TABLE t(n INTEGER); INSERT INTO t VALUES (1), (2), (3), (4)")
    wasmudf.register(con, count_to(open_body=trap_on_three))
    seen = []
    with pytest.raises(wasmudf.GuestTrap, match=r"`count_to`.*unreachable"):
        for row in con.execute("SELECT t.n, c.v FROM t, count_to(t.n) AS c"):  # streamed, in t's order
            seen.append(row)
    assert seen == [(1, 0), (2, 0), (2, 1)]
    assert con.execute("SELECT t.n, count(c.v) FROM t, count_to(t.n) AS c WHERE t.n <> 3 GROUP BY t.n").fetchall() == [
        (1, 1), (2, 2), (4, 4)
    ]
