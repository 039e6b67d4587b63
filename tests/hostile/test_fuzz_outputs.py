"""Fuzzing what a guest returns: the guest below writes attacker-chosen values (taken from
its input) into its output descriptor and offsets buffer. Thousands of cases; each one is
either a well-formed result or a WasmUdfError, and the process and module keep working."""

from __future__ import annotations

import pyarrow as pa
import wat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wasmudf

# Input row i < 8: the value for descriptor field i (-1: leave it); rows from 8 on: values
# for the offsets buffer the host allocated (as many as fit in its n + 1 entries).
FUZZ = """
  (data (i32.const 4096) "abc\\c3\\a9\\ff\\fe\\e2\\82\\acxyz\\00\\c0\\80\\ed\\a0\\80\\f4\\90\\80\\80")
  (func $scribble (param $args i32) (param $out i32) (result i32)
    (local $in i32) (local $n i32) (local $i i32) (local $offs i32) (local $v i64)
    (local.set $in (i32.load offset=20 (local.get $args)))
    (local.set $n (i32.load offset=4 (local.get $args)))
    (local.set $offs (i32.load offset=16 (local.get $out)))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $v (i64.load (i32.add (local.get $in) (i32.shl (local.get $i) (i32.const 3)))))
      (if (i32.lt_u (local.get $i) (i32.const 8))
        (then (if (i64.ne (local.get $v) (i64.const -1))
          (then (i32.store (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 2)))
                           (i32.wrap_i64 (local.get $v))))))
        (else (if (i32.and (i32.ne (local.get $offs) (i32.const 0))
                           (i32.le_u (i32.sub (local.get $i) (i32.const 8)) (local.get $n)))
          (then (i32.store (i32.add (local.get $offs) (i32.shl (i32.sub (local.get $i) (i32.const 8)) (i32.const 2)))
                           (i32.wrap_i64 (local.get $v)))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i32.const 0))
  (func (export "text") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
    (call $scribble (local.get $args) (local.get $out)))
  (func (export "number") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
    (call $scribble (local.get $args) (local.get $out)))
"""

MODULE = wasmudf.load(
    wat.module(
        FUZZ + wat.ADD_I64,
        [
            wat.scalar("text", ["int64"], "utf8"),
            wat.scalar("number", ["int64"], "int64"),
            wat.scalar("add_i64", ["int64", "int64"], "int64"),
        ],
    )
)

interesting = st.one_of(
    st.just(-1),
    st.integers(0, 24),
    st.sampled_from([4096, 4099, 4100, 4104, 65535, 65536, 2**16 * 17, 2**31 - 1, 2**31, 2**32 - 1, 2**32 - 8]),
    st.integers(-(2**63), 2**63 - 1),
)


def check(name: str, values: list[int]) -> None:
    fn = MODULE.functions[name]
    try:
        result = fn(pa.array(values, pa.int64()))
    except wasmudf.WasmUdfError:
        pass
    else:
        assert len(result) == len(values)
        assert result.type == fn.return_type
        result.validate(full=True)
    assert MODULE.functions["add_i64"]([1], [2]).to_pylist() == [3]


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(interesting, min_size=1, max_size=20))
def test_fuzzed_varlen_outputs_are_valid_or_refused(values):
    check("text", values)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(interesting, min_size=1, max_size=12))
def test_fuzzed_fixed_width_outputs_are_valid_or_refused(values):
    check("number", values)
