"""Hostile nested and decimal results (docs/abi.md §3.2): a list whose child lies about its
length, offsets that decrease or start past 0, buffers outside memory, a link the host wrote
and the guest moved, a struct field of the wrong length, a decimal past its precision, a
child too large for Limits.output_bytes. Each fails the call or statement with a clear error
naming the function; the connection, its data and the module's other functions survive."""

from __future__ import annotations

import apsw
import duckdb
import pytest
import wat

import wasmudf

# twice(int64) -> list<int64>: row i is [x, x]. The child's values are allocated by the guest;
# a case adds its lie after the honest result is written. $out, $offs (the host's offsets),
# $child (the child descriptor) and $n are at hand.
TWICE = """
  (func (export "twice") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
    (local $n i32) (local $i i32) (local $x i32) (local $offs i32) (local $child i32) (local $vals i32)
    (local.set $n (i32.load offset=4 (local.get $out)))
    (local.set $x (i32.load offset=20 (local.get $args)))
    (local.set $offs (i32.load offset=16 (local.get $out)))
    (local.set $child (i32.load offset=20 (local.get $out)))
    (local.set $vals (call $alloc (i32.shl (local.get $n) (i32.const 4)) (i32.const 8)))
    (block $done (loop $row
      (i32.store (i32.add (local.get $offs) (i32.shl (local.get $i) (i32.const 2))) (i32.shl (local.get $i) (i32.const 1)))
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i64.store (i32.add (local.get $vals) (i32.shl (local.get $i) (i32.const 4)))
                 (i64.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 3)))))
      (i64.store offset=8 (i32.add (local.get $vals) (i32.shl (local.get $i) (i32.const 4)))
                 (i64.load (i32.add (local.get $x) (i32.shl (local.get $i) (i32.const 3)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $row)))
    (i32.store offset=4 (local.get $child) (i32.shl (local.get $n) (i32.const 1)))
    (i32.store offset=20 (local.get $child) (local.get $vals))
    (i32.store offset=24 (local.get $child) (i32.shl (local.get $n) (i32.const 4)))
    LIE
    (i32.const 0))
"""

# pair(float64) -> struct<a: float64, b: utf8>: a is x, b is ''. The host prepared both fields
# (the struct's length is the result's); $fields is the first field's descriptor.
PAIR = """
  (func (export "pair") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
    (local $n i32) (local $fields i32)
    (local.set $n (i32.load offset=4 (local.get $out)))
    (local.set $fields (i32.load offset=20 (local.get $out)))
    (memory.copy (i32.load offset=20 (local.get $fields)) (i32.load offset=20 (local.get $args))
                 (i32.shl (local.get $n) (i32.const 3)))
    LIE
    (i32.const 0))
"""

# cents(int64) -> decimal(5,2): the unscaled value is x itself (low 8 bytes; the high 8 the
# sign), so x = 100000 is past five digits.
CENTS = """
  (func (export "cents") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
    (local $n i32) (local $i i32) (local $x i64) (local $o i32)
    (local.set $n (i32.load offset=4 (local.get $out)))
    (block $done (loop $row
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $x (i64.load (i32.add (i32.load offset=20 (local.get $args)) (i32.shl (local.get $i) (i32.const 3)))))
      (local.set $o (i32.add (i32.load offset=20 (local.get $out)) (i32.shl (local.get $i) (i32.const 4))))
      (i64.store (local.get $o) (local.get $x))
      (i64.store offset=8 (local.get $o) (i64.shr_s (local.get $x) (i64.const 63)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $row)))
    (i32.const 0))
"""

LIST_CASES = {
    "a child longer than the last offset": (
        "(i32.store offset=4 (local.get $child) (i32.add (i32.shl (local.get $n) (i32.const 1)) (i32.const 1)))",
        r"the result\[\]: length is (\d+), but its parent needs (?!\1)\d+",
    ),
    "offsets that decrease": ("(i32.store offset=4 (local.get $offs) (i32.const 100))", r"offsets decrease at row 1|parent needs 100"),  # one row: the last offset
    "offsets that start past 0": ("(i32.store (local.get $offs) (i32.const 1))", r"offsets\[0\] is 1, not 0"),
    "offsets past 2 GiB": (
        "(i32.store (i32.add (local.get $offs) (i32.shl (local.get $n) (i32.const 2))) (i32.const 0x80000000))",
        r"over 2 GiB",
    ),
    "child values outside memory": (
        "(i32.store offset=20 (local.get $child) (i32.const 0x7ffffff0))",
        r"the result\[\]: values \[0x7ffffff0, \+\d+\) is outside",
    ),
    "child validity outside memory": (
        "(i32.store offset=12 (local.get $child) (i32.const 0xfffffff0))",
        r"the result\[\]: validity \[0xfffffff0, \+1\) is outside",
    ),
    "a moved link": ("(i32.store offset=20 (local.get $out) (i32.const 64))", r"changed the descriptor's 'values' field"),
    "a changed child type": ("(i32.store (local.get $child) (i32.const 2))", r"the result\[\]: it changed .*'type'"),
    "a reserved field set": ("(i32.store offset=28 (local.get $child) (i32.const 1))", r"'reserved'"),
    "values_len that is not length × width": (
        "(i32.store offset=24 (local.get $child) (i32.const 8))",
        r"values_len is 8, but \d+ rows of int64 take (?!8 )\d+ bytes",
    ),
}
STRUCT_CASES = {
    "a field of another length": (
        "(i32.store offset=4 (local.get $fields) (i32.add (local.get $n) (i32.const 1)))",
        r"the result\.a: it changed the descriptor's 'length' field",
    ),
    "a text field whose offsets run past its values": (
        "(i32.store (i32.add (i32.load offset=48 (local.get $fields)) (i32.shl (local.get $n) (i32.const 2))) (i32.const 5))",
        r"the result\.b: offsets\[\d\] is 5 but values_len is 0",
    ),
    "a text field outside memory": (
        """(i32.store (i32.add (i32.load offset=48 (local.get $fields)) (i32.shl (local.get $n) (i32.const 2))) (i32.const 1))
           (i32.store offset=52 (local.get $fields) (i32.const 0xfffffff0)) (i32.store offset=56 (local.get $fields) (i32.const 1))""",
        r"the result\.b: values \[0xfffffff0, \+1\) is outside",
    ),
}
CASES = {**{f"list: {k}": ("twice", v) for k, v in LIST_CASES.items()},
         **{f"struct: {k}": ("pair", v) for k, v in STRUCT_CASES.items()}}


def hostile(case: str | None = None) -> bytes:
    """The three functions, one of them lying as ``case`` says, and an honest add_i64."""
    bodies = {"twice": TWICE, "pair": PAIR}
    if case is not None:
        fn, (lie, _) = CASES[case]
        bodies[fn] = bodies[fn].replace("LIE", lie)
    functions = [
        wat.scalar("twice", ["int64"], "list<int64>"),
        wat.scalar("pair", ["float64"], "struct<a: float64, b: utf8>"),
        wat.scalar("cents", ["int64"], "decimal(5,2)"),
        wat.scalar("add_i64", ["int64", "int64"], "int64"),
    ]
    body = "".join(b.replace("LIE", "") for b in bodies.values()) + CENTS + wat.ADD_I64
    return wat.module(body, functions)


def test_the_honest_module_answers():
    fns = wasmudf.load(hostile()).functions
    assert fns["twice"]([1, -5, 7]).to_pylist() == [[1, 1], [-5, -5], [7, 7]]
    assert fns["pair"]([0.5, 2.0, -1.0]).to_pylist() == [{"a": 0.5, "b": ""}, {"a": 2.0, "b": ""}, {"a": -1.0, "b": ""}]
    assert [str(d) for d in fns["cents"]([99999, -99999, 1]).to_pylist()] == ["999.99", "-999.99", "0.01"]


@pytest.mark.parametrize("case", list(CASES))
def test_direct_call(case):
    fn_name, (_, error) = CASES[case]
    fns = wasmudf.load(hostile(case)).functions
    args = [1, 2, 3] if fn_name == "twice" else [1.0, 2.0, 3.0]
    with pytest.raises(wasmudf.InvalidGuestOutput, match=f"`{fn_name}`.*{error}"):
        fns[fn_name](args)
    assert fns["add_i64"]([1], [2]).to_pylist() == [3]  # a fresh instance answers


def test_a_decimal_past_its_precision():
    fns = wasmudf.load(hostile()).functions
    with pytest.raises(wasmudf.InvalidGuestOutput, match=r"`cents`.*out of decimal\(5,2\)'s precision"):
        fns["cents"]([1, 100000])
    with pytest.raises(wasmudf.InvalidGuestOutput, match=r"`cents`.*out of its precision"):
        fns["cents"].call_row(-100000)
    assert fns["cents"].call_row(-99999) == wasmudf.decimals.from_unscaled(2, -99999)


def test_a_child_over_the_output_limit():
    fn = wasmudf.load(hostile(), limits=wasmudf.Limits(output_bytes=100)).functions["twice"]
    assert fn(list(range(6))).to_pylist() == [[i, i] for i in range(6)]  # 96 bytes of child values
    with pytest.raises(wasmudf.OutputLimitExceeded, match=r"`twice`.*over Limits.output_bytes = 100"):
        fn(list(range(7)))


@pytest.mark.parametrize("case", list(CASES))
def test_sqlite_statement_fails_and_the_connection_survives(case):
    fn_name, (_, error) = CASES[case]
    con = apsw.Connection(":memory:")
    con.execute("CREATE TABLE t(n INTEGER); INSERT INTO t VALUES (1), (2), (3)")
    wasmudf.register(con, hostile(case))
    with pytest.raises(wasmudf.InvalidGuestOutput, match=error):
        con.execute(f"SELECT {fn_name}(n) FROM t").fetchall()
    assert con.execute("SELECT sum(add_i64(n, 1)) FROM t").fetchall() == [(9,)]
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(3,)]


@pytest.mark.parametrize("case", list(CASES))
def test_duckdb_statement_fails_and_the_connection_survives(case):
    fn_name, (_, error) = CASES[case]
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS n FROM range(3)")
    wasmudf.register(con, hostile(case))
    cast = "n" if fn_name == "twice" else "n::DOUBLE"
    with pytest.raises(duckdb.Error, match=error):
        con.execute(f"SELECT {fn_name}({cast}) FROM t").fetchall()
    assert con.execute("SELECT sum(add_i64(n, 1)) FROM t").fetchall() == [(6,)]
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
