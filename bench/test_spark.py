"""Spark: sum(add_i64(a, b)) and sum(edit_distance(s, t)) over 2,000,000 rows, the Wasm UDF
against a PySpark arrow_udf doing the same in pyarrow (a Python loop where pyarrow has no
kernel) and a plain Python UDF, with Spark's built-in for scale. One local[2] session on
this 2-core machine: these compare implementations side by side, not cluster sizes."""

from __future__ import annotations

import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import ROOT, module_path
from references import edit_distance

import wasmudf.spark

ROWS = 2_000_000
ADD_GROUP = "Spark sum(add_i64(a, b)), 2,000,000 rows"
EDIT_GROUP = "Spark sum(edit_distance(s, t)), 2,000,000 rows"


def arrow_add(a: pa.Array, b: pa.Array) -> pa.Array:
    return pc.add(a, b)  # wraps on overflow, as add_i64 does


def arrow_edit(s: pa.Array, t: pa.Array) -> pa.Array:
    return pa.array([edit_distance(x, y) for x, y in zip(s.to_pylist(), t.to_pylist())], pa.int64())


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import arrow_udf, udf

    os.environ["PYSPARK_PYTHON"] = sys.executable
    # The workers unpickle the UDFs below by reference to this module and to the tests'
    # references: they import both.
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [here, str(ROOT / "tests"), os.environ.get("PYTHONPATH")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    wasmudf.spark.register(session, module_path("numeric"))
    wasmudf.spark.register(session, module_path("text"), prefix="wasm_")  # its luhn_check is Spark's too
    session.udf.register("pa_add", arrow_udf(arrow_add, "bigint"))
    session.udf.register("pa_edit", arrow_udf(arrow_edit, "bigint"))
    session.udf.register("py_add", udf(lambda a, b: a + b, "bigint"))
    session.udf.register("py_edit", udf(lambda a, b: edit_distance(a, b), "bigint"))  # untyped: a plain UDF
    session.range(0, ROWS, 1, 2).selectExpr(
        "id AS a", "id * 7 % 1000 AS b", "CAST(id % 9973 AS STRING) AS s", "CAST(id * 31 % 9973 AS STRING) AS t"
    ).cache().createOrReplaceTempView("rows")
    session.sql("SELECT count(*) FROM rows").collect()  # materialise the cache
    yield session
    session.stop()


def run(benchmark, spark, sql: str, group: str, rounds: int = 5):
    benchmark.group = group
    benchmark.extra_info["rows"] = ROWS
    return benchmark.pedantic(lambda: spark.sql(sql).collect()[0][0], rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["wasm", "pyarrow_udf", "python_udf", "builtin"])
def test_spark_add_i64(benchmark, spark, impl):
    expr = {"wasm": "add_i64(a, b)", "pyarrow_udf": "pa_add(a, b)", "python_udf": "py_add(a, b)", "builtin": "a + b"}[impl]
    want = spark.sql("SELECT sum(a + b) FROM rows").collect()[0][0]
    assert run(benchmark, spark, f"SELECT sum({expr}) FROM rows", ADD_GROUP) == want


@pytest.mark.parametrize("impl", ["wasm", "pyarrow_udf", "python_udf", "builtin"])
def test_spark_edit_distance(benchmark, spark, impl):
    expr = {
        "wasm": "wasm_edit_distance(s, t)",
        "pyarrow_udf": "pa_edit(s, t)",
        "python_udf": "py_edit(s, t)",
        "builtin": "levenshtein(s, t)",
    }[impl]
    want = spark.sql("SELECT sum(levenshtein(s, t)) FROM rows").collect()[0][0]
    rounds = 1 if impl in ("pyarrow_udf", "python_udf") else 5  # ~5 s a round in Python
    assert run(benchmark, spark, f"SELECT sum({expr}) FROM rows", EDIT_GROUP, rounds) == want
