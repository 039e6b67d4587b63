"""Fuzzing a text result on SQLite's per-row path, the C code that checks it without the GIL:
the guest writes attacker-chosen values into its output descriptor and offsets, one row per
call. The native path (registered with SQLite), the Python row path and a one-row batch must
give the same answer or refuse with the same error, and a write the ABI forbids is refused."""

from __future__ import annotations

import functools
import struct

import apsw
import pyarrow as pa
import pytest
import wat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wasmudf
from wasmudf.adapters import sqlite_apsw

# The argument is a blob of 11 u32: a mask, then a value for each of the output descriptor's
# 8 fields and the 2 entries of its offsets buffer; bit k of the mask says "write value k".
LIE = """
  (data (i32.const 4096) "abc\\c3\\a9\\ff\\fe\\e2\\82\\acxyz\\00\\c0\\80\\ed\\a0\\80\\f4\\90\\80\\80")
  (func (export "lie") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
    (local $p i32) (local $mask i32) (local $k i32) (local $offs i32) (local $v i32)
    (local.set $p (i32.load offset=20 (local.get $args)))
    (local.set $mask (i32.load (local.get $p)))
    (local.set $offs (i32.load offset=16 (local.get $out)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $k) (i32.const 10)))
      (local.set $v (i32.load (i32.add (local.get $p) (i32.shl (i32.add (local.get $k) (i32.const 1)) (i32.const 2)))))
      (if (i32.and (local.get $mask) (i32.shl (i32.const 1) (local.get $k)))
        (then (if (i32.lt_u (local.get $k) (i32.const 8))
          (then (i32.store (i32.add (local.get $out) (i32.shl (local.get $k) (i32.const 2))) (local.get $v)))
          (else (if (local.get $offs)
            (then (i32.store (i32.add (local.get $offs) (i32.shl (i32.sub (local.get $k) (i32.const 8)) (i32.const 2)))
                             (local.get $v))))))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $l)))
    (i32.const 0))
"""
U32 = 0xFFFFFFFF
F_TYPE, F_LENGTH, F_RESERVED = 0, 1, 7


@pytest.fixture(scope="module")
def paths():
    module = wasmudf.load(
        wat.module(LIE + wat.ADD_I64, [wat.scalar("lie", ["binary"], "utf8"), wat.scalar("add_i64", ["int64", "int64"], "int64")]),
        limits=wasmudf.Limits(output_bytes=64),
    )
    native = apsw.Connection(":memory:")
    wasmudf.register(native, module)
    python = apsw.Connection(":memory:")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_apsw, "row_function", lambda fn, interrupted=None: functools.partial(fn.call_row))
        wasmudf.register(python, module)
    return module, native, python


def _outcome(call) -> tuple[str, object]:
    try:
        return ("ok", call())
    except (wasmudf.InvalidGuestOutput, wasmudf.OutputLimitExceeded) as exc:
        assert str(exc).startswith("`lie` in "), exc
        return ("error", type(exc).__name__)


def _forbidden(mask: int, values: list[int]) -> bool:
    """A write the ABI forbids whatever the addresses: the type, the length or reserved."""
    known = {F_TYPE: 6, F_LENGTH: 1, F_RESERVED: 0}
    return any(mask >> f & 1 and values[f] & U32 != want for f, want in known.items())


values_of = st.one_of(
    st.integers(0, 24),
    st.sampled_from([0, 1, 3, 4, 6, 8, 4096, 4099, 4100, 4104, 65535, 65536, 2**31 - 1, 2**31, U32]),
    st.integers(0, U32),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mask=st.integers(0, 1023), values=st.lists(values_of, min_size=10, max_size=10))
def test_row_results_agree_on_every_path_and_lies_are_refused(paths, mask, values):
    module, native, python = paths
    blob = struct.pack("<11I", mask, *(v & U32 for v in values))
    sql = "SELECT lie(?)"
    got = _outcome(lambda: native.execute(sql, (blob,)).fetchall()[0][0])
    assert got == _outcome(lambda: python.execute(sql, (blob,)).fetchall()[0][0])
    assert got == _outcome(lambda: module.functions["lie"](pa.array([blob])).to_pylist()[0])
    if _forbidden(mask, values):
        assert got[0] == "error"
    for con in (native, python):
        assert con.execute("SELECT add_i64(1, 2)").fetchall() == [(3,)]


def test_a_row_pointing_at_text_in_memory_is_read_from_there(paths):
    _, native, python = paths
    # values -> "abc" at 4096, values_len 3, offsets {0, 3}: a result that keeps the rules.
    blob = struct.pack("<11I", (1 << 5) | (1 << 6) | (1 << 9), 0, 0, 0, 0, 0, 4096, 3, 0, 0, 3)
    for con in (native, python):
        assert con.execute("SELECT lie(?)", (blob,)).fetchall() == [("abc",)]
    # The same, 9 bytes from 4096: "abcé" then 0xff: not UTF-8.
    blob = struct.pack("<11I", (1 << 5) | (1 << 6) | (1 << 9), 0, 0, 0, 0, 0, 4096, 6, 0, 0, 6)
    for con in (native, python):
        with pytest.raises(wasmudf.InvalidGuestOutput, match="not valid UTF-8"):
            con.execute("SELECT lie(?)", (blob,)).fetchall()
