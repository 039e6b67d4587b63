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
