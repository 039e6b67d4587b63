"""Function objects on pandas and polars Series and on pyarrow tables, without SQL."""

from __future__ import annotations

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from references import haversine_km

import wasmudf


@pytest.fixture(scope="module")
def fns(example_modules):
    return {**example_modules["numeric"].functions, **example_modules["stats"].functions,
            **example_modules["text"].functions}


def test_pandas_series_in_pandas_series_out_keeping_the_index(fns):
    a = pd.Series([1, 2, 3], index=["x", "y", "z"])
    b = pd.Series([10, 20, 30], index=["x", "y", "z"])
    out = fns["add_i64"](a, b)
    assert isinstance(out, pd.Series)
    assert out.to_dict() == {"x": 11, "y": 22, "z": 33}
    words = pd.Series(["Crème Brûlée", "Straße"])
    assert fns["ascii_fold"](words).tolist() == ["Creme Brulee", "Strasse"]


def test_polars_series_in_polars_series_out_with_nulls(fns):
    out = fns["add_i64"](pl.Series("a", [1, None, 3]), pl.Series("b", [10, 20, 30]))
    assert isinstance(out, pl.Series)
    assert out.to_list() == [11, None, 33]


def test_pyarrow_table_columns_and_a_mixed_call(fns):
    table = pa.table({"lat1": [0.0, 51.5], "lon1": [0.0, -0.12], "lat2": [0.0, 48.85], "lon2": [1.0, 2.35]})
    out = fns["haversine_km"](*(table[c] for c in table.column_names))
    expected = [haversine_km(*row.values()) for row in table.to_pylist()]
    assert out.to_pylist() == pytest.approx(expected, rel=1e-9)


def test_aggregates_take_series_too(fns):
    assert fns["median_exact"].aggregate(pd.Series([3.0, 1.0, 2.0])) == 2.0
    assert fns["geo_mean"].aggregate(pl.Series([1.0, 4.0])) == pytest.approx(2.0)
    table = fns["most_frequent"].group_by(pd.Series(["a", "b", "a", "a"]), pd.Series([5, 6, 7, 7]))
    assert dict(zip(table["key"].to_pylist(), table["most_frequent"].to_pylist())) == {"a": 7, "b": 6}


def test_a_wrong_series_type_is_a_clear_error(fns):
    with pytest.raises(wasmudf.ArgumentTypeError, match="argument 1 must be int64"):
        fns["add_i64"](pd.Series(["one", "two"]), pd.Series([1, 2]))


def test_single_values_broadcast_as_in_pyarrow_compute(fns):
    df = pd.DataFrame({"a": [-1.0, 0.5, 3.0]}, index=[7, 8, 9])
    out = fns["clamp"](df["a"], 0.0, 2.0)
    assert isinstance(out, pd.Series) and out.to_dict() == {7: 0.0, 8: 0.5, 9: 2.0}
    assert fns["add_i64"](pa.array([1, 2]), 5).to_pylist() == [6, 7]
    assert fns["add_i64"]([1, 2, 3], pa.scalar(10)).to_pylist() == [11, 12, 13]
    assert fns["add_i64"](pl.Series([1, None]), 1).to_list() == [2, None]
    assert fns["clamp"](0.5, 0.0, None).as_py() is None  # strict: a NULL argument, a NULL result
    one = fns["add_i64"](40, 2)
    assert isinstance(one, pa.Scalar) and one.as_py() == 42  # single values in, a single value out
    with pytest.raises(wasmudf.ArgumentTypeError, match="argument 2 must be int64"):
        fns["add_i64"]([1, 2], "x")
    with pytest.raises(wasmudf.ArgumentTypeError, match="differ in length"):
        fns["clamp"]([1.0], [1.0, 2.0], 3.0)


def test_nullable_pandas_in_nullable_pandas_out(fns):
    n = pd.Series(pd.array([1, None, 3], dtype="Int64"), index=["a", "b", "c"])
    out = fns["add_i64"](n, 10)
    assert str(out.dtype) == "Int64" and out.isna().tolist() == [False, True, False]
    assert out.dropna().tolist() == [11, 13] and list(out.index) == ["a", "b", "c"]
    flags = fns["is_finite"](pd.Series(pd.array([1.0, None, float("inf")], dtype="Float64")))
    assert str(flags.dtype) == "boolean" and flags.tolist() == [True, pd.NA, False]
    # A plain numpy-backed Series keeps today's answer: float64 with NaN for NULL.
    plain = fns["add_i64"](pd.Series([1, 2]), pd.Series([1, 2]))
    assert str(plain.dtype) == "int64"
