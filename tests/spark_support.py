"""What the Spark tests' executors import: a secret store factory (resolved on each worker,
never pickled), and the local-cluster check, run as a script in a process of its own (one
SparkContext per process, and the suite's local[2] session holds that one)."""

from __future__ import annotations

import json
import os
import sys

import wasmudf

SECRETS = {"acme": {"api_key": "acme-123"}, "globex": {"api_key": "globex-99999"}}


def secret_store() -> wasmudf.DictSecretStore:
    return wasmudf.DictSecretStore(SECRETS)


def cluster_check(numeric: str, text: str, stats: str, load_log: str) -> dict:
    """add_i64, edit_distance and geo_mean over 1, 2 and 4 partitions on two executor JVMs."""
    from pyspark.sql import SparkSession

    import wasmudf.spark

    spark = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .config("spark.ui.enabled", "false")
        .config("spark.executorEnv.WASMUDF_SPARK_LOAD_LOG", load_log)
        .config("spark.executorEnv.PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        .config("spark.pyspark.python", sys.executable)
        .config("spark.sql.shuffle.partitions", "3")
        .getOrCreate()
    )
    try:
        spark.sparkContext.setLogLevel("ERROR")
        wasmudf.spark.register(spark, numeric)
        wasmudf.spark.register(spark, text, prefix="wasm_")  # its luhn_check is a Spark built-in
        wasmudf.spark.register(spark, stats)
        results = {}
        for parts in (1, 2, 4):
            df = spark.range(0, 20000, 1, parts).selectExpr(
                "id", "id % 7 AS g", "CAST(id * 31 % 1000 AS STRING) AS s", "1.0 + id % 100 AS x"
            )
            df.createOrReplaceTempView("t")
            rows = spark.sql(
                "SELECT g, sum(add_i64(id, g)) AS total, sum(wasm_edit_distance(s, '123')) AS edits FROM t GROUP BY g ORDER BY g"
            ).collect()
            means = spark.sql("SELECT g, geo_mean(x) AS m FROM t GROUP BY g ORDER BY g").collect()
            results[parts] = [[r.g, r.total, r.edits] for r in rows] + [[r.g, round(r.m, 9)] for r in means]
        return results
    finally:
        spark.stop()


if __name__ == "__main__":
    print("RESULT " + json.dumps(cluster_check(*sys.argv[1:5])))
