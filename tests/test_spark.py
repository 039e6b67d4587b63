"""The example modules as Spark SQL functions, against direct wasmudf calls: every scalar,
every aggregate in GROUP BY, in OVER frames and in its list form, the table functions (LATERAL
too), errors from the executors, a guest that loops, the pin, secrets resolved on the
workers, partial states combined, and one run on two executor JVMs (local-cluster).

One local[2] session serves the module (starting Spark costs seconds); the local-cluster run
is a process of its own (a process holds one SparkContext)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyspark
import pytest
import wat
from conftest import EXAMPLES

import wasmudf
import wasmudf.spark

pytestmark = pytest.mark.spark

TESTS = Path(__file__).resolve().parent
#: Modules with a function named as one of Spark's own, registered with prefix="wasm_".
PREFIXED = {"text", "binary"}
UTC = dt.UTC
D = decimal.Decimal


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    # The workers are this interpreter, and import the tests' secret store factory.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    session = (
        SparkSession.builder.master("local[2]")
        .appName("wasmudf-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    names = []
    for module in ("numeric", "text", "binary", "stats", "strings", "rust", "assemblyscript", "similarity",
                   "tables", "dates", "money", "nested"):
        # text.wasm's luhn_check and binary.wasm's crc32 are Spark built-ins too: a prefix
        names += wasmudf.spark.register(session, EXAMPLES[module], prefix="wasm_" if module in PREFIXED else "")
    session.registered = names
    yield session
    session.stop()


@pytest.fixture(scope="module")
def modules():
    return {name: wasmudf.load(path) for name, path in EXAMPLES.items()}


def sql_name(fn) -> str:
    return ("wasm_" if fn.pool.spec.label.removesuffix(".wasm") in PREFIXED else "") + fn.name


def test_every_function_of_every_example_is_registered(spark, modules):
    expected = []
    for module in modules.values():
        for fn in module.functions.values():
            expected += [sql_name(fn), f"{sql_name(fn)}_list"] if fn.kind == "aggregate" else [sql_name(fn)]
    assert sorted(spark.registered) == sorted(expected)


def test_names_of_sparks_own_functions_are_refused_and_nothing_is_registered(spark):
    with pytest.raises(wasmudf.RegistrationError, match=r"luhn_check: Spark has functions of these names.*prefix="):
        wasmudf.spark.register(spark, EXAMPLES["text"])
    assert spark.sql("SHOW USER FUNCTIONS LIKE 'ascii_fold'").collect() == []  # unprefixed: not registered
    with pytest.raises(wasmudf.RegistrationError, match=r"add_i64.*already registered.*replace=True"):
        wasmudf.spark.register(spark, EXAMPLES["numeric"])
    assert "add_i64" in wasmudf.spark.register(spark, EXAMPLES["numeric"], replace=True)


# -- scalars ----------------------------------------------------------------------------------

#: Eight values per type, NULL among them; argument i takes them rotated by i rows.
VALUES = {
    "int64": [0, 1, -1, 27, 42, None, 7, 12345],
    "int32": [0, 1, -1, 2**31 - 1, -(2**31), None, 7, 12],
    "float64": [0.0, 1.5, -2.25, 1e300, math.nan, math.inf, None, 3.0],
    "float32": [0.0, 1.5, -2.25, 3.0e38, math.nan, -math.inf, None, 3.0],
    "utf8": ["", "a", "straße", "né", "hello world, Ünïcode", "x1", None, "4111 1111 1111 1111"],
    "binary": [b"", b"\x00", b"abc", b"\xff\xfe", b"hello", b"x", None, b"12345678"],
    "bool": [True, False, None, True, False, True, False, True],
    "date": [dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1970, 1, 1), dt.date(2026, 12, 2), None,
             dt.date(1969, 12, 31), dt.date(2000, 2, 29), dt.date(2024, 1, 1)],
    "timestamp": [dt.datetime(1, 1, 8), dt.datetime(1969, 12, 31, 23, 59, 59, 999999), None,
                  dt.datetime(2026, 12, 2, 14, 30), dt.datetime(2000, 1, 1), dt.datetime(9999, 12, 31, 23),
                  dt.datetime(1970, 1, 1), dt.datetime(2024, 2, 29, 12)],
    "timestamptz": [dt.datetime(1, 1, 8, tzinfo=UTC), dt.datetime(1969, 12, 31, 23, 59, tzinfo=UTC), None,
                    dt.datetime(2026, 12, 2, 14, 30, tzinfo=UTC), dt.datetime(2000, 1, 1, tzinfo=UTC),
                    dt.datetime(9999, 12, 31, 23, tzinfo=UTC), dt.datetime(1970, 1, 1, tzinfo=UTC),
                    dt.datetime(2024, 2, 29, 12, tzinfo=UTC)],
    "decimal(38,6)": [D("1.005"), D("-2.675"), None, D("99999999999999999999999999999999.999999"), D("0"),
                      D("0.000001"), D("-0.005"), D("12.345678")],
    "decimal(18,2)": [D("100.00"), D("-19.99"), None, D("0.01"), D("9999999.99"), D("0"), D("-0.05"), D("1.50")],
    "list<float64>": [[1.0, None, 3.0], [], None, [4.0, 1.0], [math.inf], [2.5], [None], [1.0, 2.0, 3.0, 4.0]],
    "list<int64>": [[5, 1, None, 9], [], None, [2**63 - 1, -(2**63)], [3], [1, 1, 1], [None], [7, 8, 9]],
    "list<struct<lat: float64, lon: float64>>": [
        [{"lat": 1.0, "lon": 2.0}, {"lat": -1.0, "lon": 5.0}, None], [], None, [{"lat": None, "lon": 1.0}],
        [{"lat": 3.0, "lon": 3.0}], [None], [{"lat": -90.0, "lon": 180.0}, {"lat": 90.0, "lon": -180.0}], [],
    ],
}
#: Arguments the guests would take too long over (collatz of 2^63-ish) are kept small.
SMALL = {"collatz_steps": [0, 1, -5, 27, 97, None, 7, 837799]}


def spark_value(v: Any) -> Any:
    """A Spark result as direct calls give it: Rows as dicts, instants in UTC."""
    if hasattr(v, "asDict"):
        return {k: spark_value(x) for k, x in v.asDict().items()}
    if isinstance(v, list):
        return [spark_value(x) for x in v]
    return v


def direct_value(v: Any, tz: bool) -> Any:
    if isinstance(v, dt.datetime) and v.tzinfo is not None:
        return v.astimezone(UTC).replace(tzinfo=None)  # Spark gives the session zone's wall time
    return v


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, (bytes, bytearray)):
        return bytes(a) == bytes(b)
    return a == b


def scalar_cases(modules):
    for module in modules.values():
        for fn in module.functions.values():
            if fn.kind == "scalar":
                yield fn


def arguments(fn) -> pa.Table:
    columns = {}
    for i, t in enumerate(fn.spec.params):
        values = SMALL.get(fn.name) or VALUES[t.name]
        columns[f"c{i}"] = pa.array(values[i:] + values[:i], type=t.arrow)
    return pa.table({"id": pa.array(range(8), pa.int64()), **columns})


def test_every_scalar_equals_its_direct_call(spark, modules):
    checked = 0
    for fn in scalar_cases(modules):
        table = arguments(fn)
        want = [direct_value(v, True) for v in fn(*table.columns[1:]).to_pylist()]
        df = spark.createDataFrame(table)
        df.createOrReplaceTempView("args")
        args = ", ".join(f"c{i}" for i in range(len(fn.spec.params)))
        got = [spark_value(r[0]) for r in spark.sql(f"SELECT {sql_name(fn)}({args}) FROM args ORDER BY id").collect()]
        assert len(got) == len(want)
        for row, (g, w) in enumerate(zip(got, want)):
            assert same(g, w), (fn.name, row, g, w)
        checked += 1
    assert checked >= 35


# -- aggregates -------------------------------------------------------------------------------

AGGREGATE_ROWS = 600


def aggregate_table(fn) -> pa.Table:
    """Three groups of rows of the aggregate's parameter types (values its domain takes)."""
    n = AGGREGATE_ROWS
    samples = {
        "float64": [None if i % 29 == 0 else 1.0 + (i * 37 % 101) / 7 for i in range(n)],
        "int64": [None if i % 31 == 0 else (i * 7919) % 23 - 11 for i in range(n)],
        "utf8": [None if i % 17 == 0 else ["straße", "strand", "stra", "né", "", "über"][i % 6] for i in range(n)],
    }
    columns = {"id": pa.array(range(n), pa.int64()), "g": pa.array([i % 3 for i in range(n)], pa.int64())}
    for i, t in enumerate(fn.spec.params):
        values = samples[t.name] if i == 0 else [0.5 + (j % 5) for j in range(n)]  # a weight
        columns[f"c{i}"] = pa.array(values, type=t.arrow)
    return pa.table(columns)


def close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)  # row order within a group is Spark's
    return a == b


def aggregate_cases(modules):
    return [fn for m in modules.values() for fn in m.functions.values() if fn.kind == "aggregate"]


def test_every_aggregate_in_group_by_and_its_list_form_equals_direct_calls(spark, modules):
    for fn in aggregate_cases(modules):
        table = aggregate_table(fn)
        direct = fn.group_by(table.column("g"), *table.columns[2:])
        want = dict(zip(direct.column("key").to_pylist(), direct.column(fn.name).to_pylist()))
        spark.createDataFrame(table).createOrReplaceTempView("rows")
        args = [f"c{i}" for i in range(len(fn.spec.params))]
        listed = f"collect_list({args[0]})" if len(args) == 1 else f"collect_list(struct({', '.join(args)}))"
        # A Python aggregate may not share its SELECT with another aggregate: two queries.
        direct_form = spark.sql(f"SELECT g, {sql_name(fn)}({', '.join(args)}) AS a FROM rows GROUP BY g").collect()
        list_form = spark.sql(f"SELECT g, {sql_name(fn)}_list({listed}) AS a, count(*) AS n FROM rows GROUP BY g").collect()
        for rows in (direct_form, list_form):
            assert {r.g for r in rows} == set(want)
            for r in rows:
                assert close(spark_value(r.a), want[r.g]), (fn.name, r.g, r.a, want[r.g])


def test_aggregates_over_window_frames_and_distinct_in_the_list_form(spark, modules):
    geo_mean = modules["stats"].functions["geo_mean"]
    xs = [1.0 + (i * 37 % 101) / 7 for i in range(200)]
    spark.createDataFrame(pa.table({"id": pa.array(range(200), pa.int64()), "x": xs})).createOrReplaceTempView("w")
    rows = spark.sql(
        "SELECT id, geo_mean(x) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS m FROM w ORDER BY id"
    ).collect()
    for r in rows:
        assert math.isclose(r.m, geo_mean.aggregate(xs[max(0, r.id - 2) : r.id + 1]), rel_tol=1e-12)
    (row,) = spark.sql("SELECT geo_mean_list(collect_list(DISTINCT x)) AS d, max(x) AS top FROM w").collect()
    assert math.isclose(row.d, geo_mean.aggregate(sorted(set(xs))), rel_tol=1e-12) and row.top == max(xs)


def test_partial_states_combine_across_partitions(spark, modules):
    geo_mean = modules["stats"].functions["geo_mean"]
    n = 3000
    table = pa.table({"g": [i % 5 for i in range(n)], "x": [1.0 + i % 97 for i in range(n)]})
    direct = geo_mean.group_by(table.column("g"), table.column("x"))
    want = dict(zip(direct.column("key").to_pylist(), direct.column("geo_mean").to_pylist()))
    for partitions in (1, 3):
        df = spark.createDataFrame(table).repartition(partitions)
        got = wasmudf.spark.aggregate(df, EXAMPLES["stats"], "geo_mean", ["g"], ["x"]).collect()
        assert {r.g: r.geo_mean for r in got}.keys() == want.keys()
        assert all(math.isclose(r.geo_mean, want[r.g], rel_tol=1e-12) for r in got)
    with pytest.raises(wasmudf.UsageError, match="`median_of` is not an aggregate whose states move"):
        wasmudf.spark.aggregate(df, EXAMPLES["nested"], "median_of", ["g"], ["x"])


# -- table functions ----------------------------------------------------------------------------


def test_table_functions_alone_and_in_lateral_joins(spark, modules):
    tables = modules["tables"].functions
    got = [r.value for r in spark.sql("SELECT value FROM series(-3, 20, 4)").collect()]
    assert got == tables["series"](-3, 20, 4).read_all().column("value").to_pylist()
    spark.createDataFrame(pa.table({"id": [0, 1, 2], "s": ["a,b", "", "x,,y"]})).createOrReplaceTempView("texts")
    rows = spark.sql(
        "SELECT t.id, c.ordinal, c.part FROM texts t, LATERAL split_rows(t.s, ',') c ORDER BY t.id, c.ordinal"
    ).collect()
    want = []
    for i, s in enumerate(["a,b", "", "x,,y"]):
        out = tables["split_rows"](s, ",").read_all()
        want += [(i, o, p) for o, p in zip(out.column("ordinal").to_pylist(), out.column("part").to_pylist())]
    assert [tuple(r) for r in rows] == want


# -- failures -----------------------------------------------------------------------------------


def test_a_guest_failure_reaches_the_driver_naming_the_function_and_the_session_survives(spark):
    from pyspark.errors import PythonException

    with pytest.raises(PythonException, match=r"`add_tax` in money.wasm failed .*does not fit decimal\(18,2\)"):
        spark.sql("SELECT add_tax(CAST(9999999999999999.99 AS DECIMAL(18,2)), 10000)").collect()
    assert spark.sql("SELECT add_i64(40, 2) AS v").collect()[0].v == 42


def test_a_guest_that_loops_hits_its_time_limit_on_the_executor(spark):
    from pyspark.errors import PythonException

    spin = wat.module(
        '(func (export "spin") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0))',
        [wat.scalar("spin", ["int64"], "int64")],
    )
    wasmudf.spark.register(spark, spin, limits=wasmudf.Limits(timeout_ms=200))
    with pytest.raises(PythonException, match=r"`spin`.*time limit"):
        spark.sql("SELECT spin(id) FROM range(3)").collect()
    assert spark.sql("SELECT sum(add_i64(id, 1)) AS s FROM range(10)").collect()[0].s == 55


def test_the_pin_is_checked_on_the_driver_and_again_on_the_workers(spark):
    with pytest.raises(wasmudf.PolicyError, match="pinned"):
        wasmudf.spark.register(spark, EXAMPLES["numeric"], sha256="0" * 64)
    good = wasmudf.load(EXAMPLES["numeric"])
    forged = wasmudf.spark.Payload(
        wasm=Path(EXAMPLES["binary"]).read_bytes(), sha256=good.sha256, label="numeric.wasm", limits=wasmudf.Limits()
    )
    with pytest.raises(wasmudf.PolicyError, match="pinned"):
        wasmudf.spark._module(forged)  # what a worker does with a payload whose bytes changed


def test_secrets_never_travel_and_each_worker_resolves_its_store(spark):
    with pytest.raises(wasmudf.UsageError, match="cannot travel to Spark executors"):
        wasmudf.spark.register(spark, EXAMPLES["numeric"], secrets={"acme": {"api_key": "x"}})
    secret_length = wat.module(
        """(data (i32.const 3000) "api_key")
           (func (export "secret_length") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
             (i64.store (i32.load offset=20 (local.get $out))
               (i64.extend_i32_s (call $secret (i32.const 3000) (i32.const 7) (i32.const 3100) (i32.const 64))))
             (i32.const 0))""",
        [wat.scalar("secret_length", ["int64"], "int64")],
        imports='(import "wasmudf" "secret_get" (func $secret (param i32 i32 i32 i32) (result i32)))',
        capabilities=["secret_get"],
    )
    names = wasmudf.spark.register(
        spark, secret_length, grant=["secret_get"], tenant="globex", secrets="spark_support:secret_store"
    )
    assert names == ["secret_length"]
    assert spark.sql("SELECT DISTINCT secret_length(id) AS n FROM range(100)").collect()[0].n == len("globex-99999")


# -- two executor JVMs --------------------------------------------------------------------------


def test_two_executors_give_the_same_results_for_1_2_and_4_partitions(tmp_path):
    """local-cluster[2,1,1024]: two executor JVMs; run in a process of its own."""
    load_log = tmp_path / "loads.log"
    env = dict(os.environ)
    env["SPARK_HOME"] = str(Path(pyspark.__file__).parent)  # local-cluster starts executors from it
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent)])
    env["PYSPARK_PYTHON"] = sys.executable  # the executors' Python workers: this venv
    proc = subprocess.run(
        [sys.executable, str(TESTS / "spark_support.py"), *(str(EXAMPLES[m]) for m in ("numeric", "text", "stats")), str(load_log)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    results = json.loads(lines[0].removeprefix("RESULT "))
    assert results["1"] == results["2"] == results["4"]
    numeric = wasmudf.load(EXAMPLES["numeric"]).functions["add_i64"]
    totals = {g: 0 for g in range(7)}
    for i in range(20000):
        totals[i % 7] += numeric.call_row(i, i % 7)
    assert [[g, total] for g, total, _ in results["1"][:7]] == [[g, totals[g]] for g in range(7)]
    loads = [line.split() for line in load_log.read_text().splitlines()]
    executors = {parent for _, parent, _ in loads}  # each executor's Python workers share a parent daemon
    assert len(executors) >= 2, loads


def test_non_deterministic_functions_are_marked_so(spark):
    body = '(func (export "roll") (param i32 i32 i32) (result i32) (i32.const 0))'
    functions = [wat.scalar("roll", ["int64"], "int64", deterministic=False), wat.scalar("same", ["int64"], "int64")]
    module = wasmudf.load(wat.module(body + body.replace('"roll"', '"same"'), functions))
    payload = wasmudf.spark.Payload(wasm=module.wasm, sha256=module.sha256, label="roll", limits=module.limits)
    roll, same = (wasmudf.spark._scalar_udf(payload, module.functions[n].spec) for n in ("roll", "same"))
    assert (roll.deterministic, same.deterministic) == (False, True)
