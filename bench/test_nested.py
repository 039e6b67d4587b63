"""median_of on DuckDB: the Wasm UDF (a list argument, so DuckDB's Arrow bridge) against the
same function as a pyarrow arrow UDF (numpy over the flattened lists), a Python UDF and
DuckDB's built-in list_median."""

from __future__ import annotations

import math
import statistics

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import measure, module_path

import wasmudf

GROUP = "DuckDB sum(median_of(xs)), 200,000 lists of 0-19 doubles"
ROWS = 200_000


def arrow_median_of(lists: pa.ListArray) -> pa.Array:
    """The median of each list's non-NULL elements, vectorised: sort the flattened elements by
    (list, value) and pick the middle of each list's run."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    parents = pc.list_parent_indices(lists).to_numpy()
    values = pc.list_flatten(lists)
    keep = values.is_valid().to_numpy(zero_copy_only=False)
    parents, values = parents[keep], values.to_numpy(zero_copy_only=False)[keep]
    order = np.lexsort((values, parents))
    parents, values = parents[order], values[order]
    counts = np.bincount(parents, minlength=len(lists))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    safe = np.maximum(counts, 1)
    lo = values[np.minimum(starts + (safe - 1) // 2, len(values) - 1)] if len(values) else np.zeros(len(lists))
    hi = values[np.minimum(starts + safe // 2, len(values) - 1)] if len(values) else np.zeros(len(lists))
    return pa.array((lo + hi) / 2, mask=counts == 0)


def python_median_of(xs):
    values = [x for x in xs if x is not None] if xs is not None else []
    return statistics.median(values) if values else None


@pytest.fixture(scope="module")
def con():
    con = duckdb.connect()
    con.execute("SET threads = 1")
    wasmudf.register(con, module_path("nested"))
    con.execute(
        f"""CREATE TABLE t AS SELECT list_transform(range((i * 7) % 20), lambda j: ((i * 31 + j * 17) % 1000) / 7.0) AS xs
            FROM range({ROWS}) r(i)"""
    )
    con.create_function("pa_median_of", arrow_median_of, ["DOUBLE[]"], "DOUBLE", type="arrow", null_handling="special")
    con.create_function("py_median_of", python_median_of, ["DOUBLE[]"], "DOUBLE", null_handling="special")
    return con


@pytest.mark.parametrize("impl", ["wasm", "pyarrow_udf", "python_udf", "builtin"])
def test_duckdb_median_of(benchmark, con, impl):
    benchmark.group = GROUP
    expr = {
        "wasm": "median_of(xs)",
        "pyarrow_udf": "pa_median_of(xs)",
        "python_udf": "py_median_of(xs)",
        "builtin": "list_median(xs)",
    }[impl]
    (want,) = con.execute("SELECT sum(list_median(xs)) FROM t").fetchone()
    ((got,),) = measure(benchmark, lambda: con.execute(f"SELECT sum({expr}) FROM t").fetchall(), ROWS)
    assert math.isclose(got, want, rel_tol=1e-12)
