"""Fuzzing what a guest returns: the guest below writes attacker-chosen values (taken from
its input) into its output descriptor and offsets buffer. Thousands of cases, each judged
against a model of ABI §4: a write the ABI forbids must be refused with InvalidGuestOutput
(or OutputLimitExceeded), a result that keeps the rules must be accepted and well-formed, and
the process and module keep working either way."""

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


# Output-descriptor fields (ABI §3) whose value the host knows in advance, by return type:
# the guest may not change them. Writing null_count is always allowed; the address fields
# (validity, offsets, values and values_len of a fixed-width result) hold host addresses the
# model does not know, so a write there may go either way.
U32 = 0xFFFFFFFF
F_TYPE, F_LENGTH, F_NULL_COUNT, F_OFFSETS, F_RESERVED = 0, 1, 2, 4, 7
RETURN_CODES = {"text": 6, "number": 3}


def verdict(name: str, values: list[int]) -> str:
    """'refused', 'accepted' or 'either', by the ABI's rules alone."""
    n = len(values)
    known = {F_TYPE: RETURN_CODES[name], F_LENGTH: n, F_RESERVED: 0}
    if name == "number":
        known[F_OFFSETS] = 0
    written = {i: v & U32 for i, v in enumerate(values[:8]) if v != -1}
    if any(field in known and value != known[field] for field, value in written.items()):
        return "refused"
    if name == "number" and set(written) <= {F_NULL_COUNT, *known}:
        return "accepted"  # only allowed fields touched: the host's own buffers are the result
    return "either"


def check(name: str, values: list[int]) -> None:
    fn = MODULE.functions[name]
    expected = verdict(name, values)
    try:
        result = fn(pa.array(values, pa.int64()))
    except (wasmudf.InvalidGuestOutput, wasmudf.OutputLimitExceeded) as exc:
        assert expected != "accepted", f"a valid result was refused: {exc}"
        assert str(exc).startswith(f"`{name}` in ")
    else:
        assert expected != "refused", f"a forbidden write was accepted: {values[:8]}"
        assert len(result) == len(values)
        assert result.type == fn.return_type
        result.validate(full=True)
        if name == "number" and expected == "accepted":
            assert result.null_count == 0  # the host's bitmap, all valid, whatever null_count says
    assert MODULE.functions["add_i64"]([1], [2]).to_pylist() == [3]


allowed_writes = st.fixed_dictionaries(
    {},
    optional={
        F_TYPE: st.just(3),
        F_NULL_COUNT: st.integers(0, 2**32 - 1),
        F_RESERVED: st.just(0),
        F_OFFSETS: st.just(0),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(allowed_writes, st.lists(interesting, min_size=0, max_size=8))
def test_results_that_keep_the_rules_are_accepted(writes, tail):
    fields = [-1] * 8
    for field, value in writes.items():
        fields[field] = value
    if F_LENGTH not in writes and tail:
        fields[F_LENGTH] = 8 + len(tail)  # the right length, written back
    values = fields + tail
    assert verdict("number", values) == "accepted"
    check("number", values)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(interesting, min_size=1, max_size=20))
def test_fuzzed_varlen_outputs_are_valid_or_refused(values):
    check("text", values)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(interesting, min_size=1, max_size=12))
def test_fuzzed_fixed_width_outputs_are_valid_or_refused(values):
    check("number", values)
