"""Direct calls on pyarrow data: every ABI type, NULLs, slices, chunks, empty and big batches."""

from __future__ import annotations

import datetime

import pyarrow as pa
import pytest
import wat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from references import ARROW_TYPES

import wasmudf
from wasmudf import ArgumentTypeError, functions

TYPES = list(ARROW_TYPES)

# id_<type>(x) copies its input column to the output, NULLs included ("called"): what comes
# back is exactly what the host wrote, so any marshalling error shows up as a difference.
IDENTITY = (
    """
  (func $ident (param $args i32) (param $nargs i32) (param $out i32) (result i32)
    (local $n i32)
    (local.set $n (i32.load offset=4 (local.get $args)))
    (if (i32.load offset=12 (local.get $args))   ;; validity
      (then (memory.copy (i32.load offset=12 (local.get $out)) (i32.load offset=12 (local.get $args))
                         (i32.shr_u (i32.add (local.get $n) (i32.const 7)) (i32.const 3)))))
    (i32.store offset=8 (local.get $out) (i32.load offset=8 (local.get $args)))
    (if (i32.load offset=16 (local.get $args))   ;; offsets: a varlen column
      (then
        (memory.copy (i32.load offset=16 (local.get $out)) (i32.load offset=16 (local.get $args))
                     (i32.shl (i32.add (local.get $n) (i32.const 1)) (i32.const 2)))
        (i32.store offset=20 (local.get $out) (i32.load offset=20 (local.get $args)))
        (i32.store offset=24 (local.get $out) (i32.load offset=24 (local.get $args))))
      (else
        (memory.copy (i32.load offset=20 (local.get $out)) (i32.load offset=20 (local.get $args))
                     (i32.load offset=24 (local.get $args)))))
    (i32.const 0))
"""
    + "".join(f'(export "id_{t}" (func $ident))' for t in TYPES)
    + '(export "strict_id" (func $ident))'
)


@pytest.fixture(scope="module")
def ident():
    fns = [wat.scalar(f"id_{t}", [t], t, nulls="called") for t in TYPES]
    fns.append(wat.scalar("strict_id", ["int64"], "int64"))
    return wasmudf.load(wat.module(IDENTITY, fns)).functions


VALUES = {
    "bool": st.booleans(),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "float32": st.floats(width=32, allow_nan=False),
    "float64": st.floats(allow_nan=False),
    "utf8": st.text(st.characters(codec="utf-8")),
    "binary": st.binary(),
    "date": st.dates(),
    "timestamp": st.datetimes(),
    "timestamptz": st.datetimes(timezones=st.just(datetime.UTC)),
}


@pytest.mark.parametrize("t", TYPES)
def test_every_type_round_trips_with_nulls_and_slices(t, ident):
    fn = ident[f"id_{t}"]

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.none() | VALUES[t], max_size=40), st.integers(0, 11), st.integers(0, 11))
    def check(values, cut_front, cut_back):
        arr = pa.array(values, type=ARROW_TYPES[t])
        stop = max(cut_front, len(arr) - cut_back)
        sliced = arr.slice(cut_front, stop - cut_front)  # offsets not a multiple of 8
        got = fn(sliced)
        assert got.type == ARROW_TYPES[t]
        assert got.to_pylist() == sliced.to_pylist()
        assert got.null_count == sliced.null_count

    check()


def test_strict_function_skips_null_rows_and_keeps_positions(ident):
    got = ident["strict_id"](pa.array([1, None, 3, None, 5]))
    assert got.to_pylist() == [1, None, 3, None, 5]


def test_chunked_input_gives_chunked_output(ident):
    chunked = pa.chunked_array([pa.array(["a", None]), pa.array(["ccc"]), pa.array([], pa.string())])
    got = ident["id_utf8"](chunked)
    assert isinstance(got, pa.ChunkedArray)
    assert got.to_pylist() == ["a", None, "ccc"]


@pytest.mark.parametrize("t", TYPES)
def test_zero_rows(t, ident):
    got = ident[f"id_{t}"](pa.array([], type=ARROW_TYPES[t]))
    assert len(got) == 0 and got.type == ARROW_TYPES[t]


def test_batches_larger_than_one_call(ident, monkeypatch):
    monkeypatch.setattr(functions, "BATCH_ROWS", 1000)
    monkeypatch.setattr(functions, "BATCH_VARLEN_BYTES", 5000)
    ints = pa.array([i if i % 7 else None for i in range(4321)], pa.int64())
    assert ident["id_int64"](ints).to_pylist() == ints.to_pylist()
    texts = pa.array([("x" * (i % 50)) if i % 5 else None for i in range(4321)])
    assert ident["id_utf8"](texts).to_pylist() == texts.to_pylist()


def test_python_sequences_are_converted(ident):
    assert ident["id_float64"]([1.5, None]).to_pylist() == [1.5, None]


def test_wrong_argument_count_and_type(ident):
    with pytest.raises(ArgumentTypeError, match="takes 1 arguments, 2 given"):
        ident["id_int64"]([1], [2])
    with pytest.raises(ArgumentTypeError, match="argument 1 must be int64, got string"):
        ident["id_int64"](pa.array(["x"]))
    with pytest.raises(ArgumentTypeError, match="argument 1 must be int32"):
        ident["id_int32"](pa.array([2**40]))


def test_compatible_arrow_types_are_cast(ident):
    assert ident["id_int64"](pa.array([1, 2], pa.int8())).to_pylist() == [1, 2]
    assert ident["id_utf8"](pa.array(["a"], pa.large_string())).to_pylist() == ["a"]


def test_each_thread_gets_its_own_instance(ident):
    import threading

    fn = ident["id_int64"]
    seen = []

    def work():
        seen.append(fn.pool.get())  # kept alive, so ids stay distinct
        assert fn(pa.array(range(1000))).to_pylist() == list(range(1000))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(i) for i in seen}) == 3


def test_columns_longer_than_one_batch(example_modules):
    """Several batches written into one result: sliced inputs, and NULL results in some
    batches only (safe_div is NULL on a zero divisor)."""
    import numpy as np
    from references import safe_div, wrap_i64

    from wasmudf.functions import BATCH_ROWS

    fns = example_modules["numeric"].functions
    n = 3 * BATCH_ROWS + 123
    rng = np.random.default_rng(5)
    a = pa.array(rng.integers(-(2**62), 2**62, n + 7))[7:]  # an offset that is not 0
    b = pa.array(rng.integers(-(2**62), 2**62, n))
    assert fns["add_i64"](a, b).to_pylist() == [wrap_i64(x + y) for x, y in zip(a.to_pylist(), b.to_pylist())]
    divisors = np.ones(n, dtype=np.int64)
    divisors[BATCH_ROWS + 5 :: 997] = 0  # zeros from the second batch on
    num, den = pa.array(np.arange(n, dtype=np.int64)), pa.array(divisors)
    got = fns["safe_div"](num, den)
    assert got.to_pylist() == [safe_div(x, y) for x, y in zip(num.to_pylist(), den.to_pylist())]
    assert got.null_count == int((divisors == 0).sum())
