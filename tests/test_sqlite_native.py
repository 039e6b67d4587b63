"""Fixed-width scalars registered with SQLite directly (the C accelerator's native path).

With the accelerator, ``register`` hands such a function to ``sqlite3_create_function_v2``
on apsw's connection, so rows reach the guest without Python objects; everything unusual
goes to the Python path. These tests hold the native registration to the apsw one, row by
row, and check what only it does (extension loading, threads, releasing the function). On
the pure-Python path the same tests check that apsw registration is used instead.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import apsw
import pytest
import wat
from engines import outcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from references import lerp_f32, wrap_i64

import wasmudf
from wasmudf import _native
from wasmudf.adapters import sqlite_apsw as sqlite_adapter
from wasmudf.functions import ScalarFunction

NATIVE = _native.speedups is not None
NUMERIC = "udfs/numeric/numeric.wasm"


@pytest.fixture
def registered_rows(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The per-row callables the SQLite adapter registers, as it makes them."""
    made: list[Any] = []
    original = sqlite_adapter.row_function

    def capture(fn: ScalarFunction, *args: Any, **kwargs: Any) -> Any:
        row = original(fn, *args, **kwargs)
        made.append(row)
        return row

    monkeypatch.setattr(sqlite_adapter, "row_function", capture)
    return made


def test_fixed_width_scalars_go_to_sqlite_directly(registered_rows: list[Any]) -> None:
    con = apsw.Connection(":memory:")
    wasmudf.register(con, NUMERIC)
    assert registered_rows, "no per-row callable was registered"
    if NATIVE:
        assert all(type(row).__name__ == "RowCaller" and row.native for row in registered_rows)
    else:
        assert not any(type(row).__name__ == "RowCaller" for row in registered_rows)
    assert con.execute("SELECT add_i64(40, 2), is_finite(1e308 * 10)").fetchall() == [(42, 0)]


@pytest.mark.parametrize("enabled_before", [0, 1])
def test_extension_loading_is_left_as_it_was(enabled_before: int) -> None:
    con = apsw.Connection(":memory:")
    option = apsw.SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION
    con.config(option, enabled_before)
    wasmudf.register(con, NUMERIC)
    assert con.config(option, -1) == enabled_before
    # SQL's own load_extension() is never switched on by registering.
    with pytest.raises(apsw.SQLError, match="not authorized"):
        con.execute("SELECT load_extension('/nonexistent')").fetchall()


SQL_VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 2**31, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.binary(max_size=4),
)
CALLS = [
    ("add_i64", 2),
    ("safe_div", 2),
    ("gcd_i32", 2),
    ("lerp_f32", 3),
    ("is_finite", 1),
    ("clamp", 3),
    ("coalesce_f64", 2),
]


@pytest.fixture(scope="module")
def both_registrations() -> tuple[apsw.Connection, apsw.Connection]:
    native = apsw.Connection(":memory:")
    wasmudf.register(native, NUMERIC)
    through_apsw = apsw.Connection(":memory:")
    # The same module registered the other way: apsw calls the per-row callable.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_adapter, "_sqlite_api_loaded", lambda con: False)
        wasmudf.register(through_apsw, NUMERIC)
    return native, through_apsw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=st.sampled_from(CALLS), data=st.data())
def test_native_rows_match_apsw_rows(both_registrations: Any, call: tuple[str, int], data: Any) -> None:
    native, through_apsw = both_registrations
    name, arity = call
    values = tuple(data.draw(SQL_VALUES) for _ in range(arity))
    sql = f"SELECT {name}({', '.join('?' * arity)})"
    assert outcome(native, sql, values) == outcome(through_apsw, sql, values)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    b=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    x=st.floats(allow_nan=False),  # SQLite stores a NaN parameter as NULL
)
def test_native_rows_match_python_references(both_registrations: Any, a: int, b: int, x: float) -> None:
    native, _ = both_registrations
    assert native.execute("SELECT add_i64(?, ?)", (a, b)).fetchall() == [(wrap_i64(a + b),)]
    assert native.execute("SELECT is_finite(?)", (x,)).fetchall() == [(int(math.isfinite(x)),)]
    small_a, small_b = a % 2**31, b % 2**31
    assert native.execute("SELECT gcd_i32(?, ?)", (small_a, small_b)).fetchall() == [
        (math.gcd(small_a, small_b),)
    ]


def test_a_wrong_type_in_a_long_scan_fails_the_statement_and_keeps_the_connection() -> None:
    con = apsw.Connection(":memory:")
    wasmudf.register(con, NUMERIC)
    con.execute("CREATE TABLE t(a, b)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(i, i) for i in range(5000)] + [("x", 1)])
    with pytest.raises(wasmudf.ArgumentTypeError, match="add_i64"):
        con.execute("SELECT sum(add_i64(a, b)) FROM t").fetchall()
    assert con.execute("SELECT sum(add_i64(a, b)) FROM t WHERE typeof(a) = 'integer'").fetchall() == [
        (2 * sum(range(5000)),)
    ]


def test_each_thread_calls_its_own_instance() -> None:
    module = wasmudf.load(wat.counter("tally"))
    con = apsw.Connection(":memory:")
    wasmudf.register(con, module)
    query = "SELECT tally(x) FROM (SELECT 1 AS x UNION ALL SELECT 2 UNION ALL SELECT 3)"
    first = [row[0] for row in con.execute(query)]
    in_thread: list[int] = []
    worker = threading.Thread(target=lambda: in_thread.extend(row[0] for row in con.execute(query)))
    worker.start()
    worker.join()
    again = [row[0] for row in con.execute(query)]
    assert first == [1, 2, 3]
    assert in_thread == [1, 2, 3]  # the worker's own instance, counting from the start
    assert again == [4, 5, 6]  # back on this thread: this thread's instance


def test_closing_the_connection_releases_the_function(registered_rows: list[Any]) -> None:
    module = wasmudf.load(wat.counter("tally"))
    con = apsw.Connection(":memory:")
    wasmudf.register(con, module)
    (row,) = registered_rows
    held = sys.getrefcount(row)
    con.close()
    assert sys.getrefcount(row) == held - 1  # SQLite's (or apsw's) reference is given back


@pytest.mark.parametrize(
    "args", [(0.0, 1e39, 0.5), (0.0, -1e300, 1.0), (1e39, 0.0, 1.0), (0.0, 3.4028235677973366e38, 0.0)]
)
def test_doubles_past_float32_range_round_to_infinity(
    both_registrations: Any, args: tuple[float, ...]
) -> None:
    # IEEE rounding, as C's conversion and Arrow's cast do; struct.pack("f") would raise.
    expected = lerp_f32(*args)
    for con in both_registrations:
        (value,) = con.execute("SELECT lerp_f32(?, ?, ?)", args).fetchall()[0]
        assert value == expected or (value is None and math.isnan(expected))


# -- aggregates: rows packed by the accelerator's RowBuffer as SQLite steps them in ---------

STATS = "udfs/stats/stats.wasm"


@pytest.fixture(scope="module")
def stats_module() -> Any:
    return wasmudf.load(STATS)


@pytest.fixture(scope="module")
def both_aggregate_registrations(stats_module: Any) -> tuple[apsw.Connection, apsw.Connection]:
    packed = apsw.Connection(":memory:")
    wasmudf.register(packed, stats_module)
    by_class = apsw.Connection(":memory:")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_adapter, "PACK_ROWS", False)  # every aggregate through the class form
        wasmudf.register(by_class, stats_module)
    for con in (packed, by_class):
        con.execute("CREATE TABLE t (g INTEGER, i INTEGER, x, w)")
    return packed, by_class


def _live_states(module: Any) -> int:
    return sum(inst.live_states for inst in module._pool._instances.values())


def test_aggregates_of_every_type_take_the_packed_form() -> None:
    module = wasmudf.load(STATS)
    group = sqlite_adapter._factory(module.functions["geo_mean"], lambda: False)()
    text_group = sqlite_adapter._factory(module.functions["common_prefix"], lambda: False)()
    try:
        if NATIVE:
            assert isinstance(group, tuple) and type(group[0]).__name__ == "RowBuffer"
            assert len(group) == 5  # a window function: step, final, value, inverse
            assert isinstance(text_group, tuple) and type(text_group[0]).__name__ == "RowBuffer"
        else:
            assert not isinstance(group, tuple) and not isinstance(text_group, tuple)
    finally:
        for g in (group, text_group):
            feeder = g[2].args[0] if isinstance(g, tuple) else g.final.__self__
            feeder.state.abandon()
    assert module._pool.get().live_states == 0


MIXED = st.one_of(
    st.floats(min_value=0.001, max_value=1e6),
    st.integers(min_value=1, max_value=2**53),
    st.none(),
    st.sampled_from(["text", b"blob", -1.5, 0.0, 2**63 - 1]),
)
AGGREGATE_QUERIES = [
    "SELECT g, geo_mean(x) FROM t GROUP BY g ORDER BY g",
    "SELECT g, weighted_mean(x, w) FROM t GROUP BY g ORDER BY g",
    "SELECT g, median_exact(x) FROM t GROUP BY g ORDER BY g",
    "SELECT g, most_frequent(i), hll_distinct(i) FROM t GROUP BY g ORDER BY g",
    "SELECT geo_mean(x) OVER (PARTITION BY g ORDER BY rowid ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM t",
    "SELECT weighted_mean(x, w) OVER (ORDER BY rowid ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) FROM t",
]


def _aggregateoutcome(con: apsw.Connection, sql: str) -> Any:
    try:
        rows = con.execute(sql).fetchall()
    except wasmudf.WasmUdfError as exc:
        return ("error", type(exc).__name__)
    return ("ok", [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 3), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.just("x")), MIXED, MIXED),
        max_size=40,
    ),
    sql=st.sampled_from(AGGREGATE_QUERIES),
)
def test_packed_aggregates_match_the_class_form(
    both_aggregate_registrations: Any, stats_module: Any, rows: list, sql: str
) -> None:
    outcomes = []
    for con in both_aggregate_registrations:
        con.execute("DELETE FROM t")
        con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
        outcomes.append(_aggregateoutcome(con, sql))
        assert _live_states(stats_module) == 0  # every group's state released, failed or not
    assert outcomes[0] == outcomes[1]


def test_packed_groups_across_many_batches_match_python(both_aggregate_registrations: Any) -> None:
    packed, _ = both_aggregate_registrations
    xs = [0.5 + (k % 997) / 100 for k in range(10_000)]  # several RowBuffer batches
    packed.execute("DELETE FROM t")
    packed.executemany("INSERT INTO t VALUES (0, ?, ?, 1.0)", [(k % 7, x) for k, x in enumerate(xs)])
    (geo,) = packed.execute("SELECT geo_mean(x) FROM t").fetchall()[0]
    assert geo == pytest.approx(math.exp(sum(math.log(x) for x in xs) / len(xs)), rel=1e-12)
    windows = [row[0] for row in packed.execute(
        "SELECT geo_mean(x) OVER (ORDER BY rowid ROWS BETWEEN 4999 PRECEDING AND CURRENT ROW) FROM t"
    )]
    for end in (0, 4999, 5000, 9999):
        frame = xs[max(0, end - 4999) : end + 1]
        assert windows[end] == pytest.approx(math.exp(sum(math.log(x) for x in frame) / len(frame)), rel=1e-9)


def test_a_bad_row_after_many_packed_rows_fails_and_releases_its_state(
    both_aggregate_registrations: Any, stats_module: Any
) -> None:
    packed, _ = both_aggregate_registrations
    packed.execute("DELETE FROM t")
    packed.executemany("INSERT INTO t VALUES (?, 0, ?, 1.0)", [(k % 2, 1.0 + k % 5) for k in range(9000)])
    packed.execute("INSERT INTO t VALUES (1, 0, 'not a number', 1.0)")
    with pytest.raises(wasmudf.ArgumentTypeError, match="geo_mean.*TEXT"):
        packed.execute("SELECT g, geo_mean(x) FROM t GROUP BY g").fetchall()
    assert _live_states(stats_module) == 0
    assert packed.execute("SELECT count(*) FROM t").fetchall() == [(9001,)]  # the table is intact


def test_two_threads_call_one_module_at_once_on_their_own_connections() -> None:
    # Natively registered rows run without the GIL, so the two threads' guest calls really
    # overlap; each thread has its own instance of the one module.
    module = wasmudf.load(NUMERIC)
    rows = 200_000
    results: dict[int, Any] = {}

    def work(k: int) -> None:
        con = apsw.Connection(":memory:")
        wasmudf.register(con, module)
        sql = (
            "WITH RECURSIVE r(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM r WHERE x < ?) "
            "SELECT sum(add_i64(x, ?)), sum(gcd_i32(x, 12)) FROM r"
        )
        results[k] = con.execute(sql, (rows - 1, k)).fetchall()[0]
        con.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in (1, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gcd_sum = sum(math.gcd(x, 12) for x in range(rows))
    for k in (1, 1000):
        assert results[k] == (sum(range(rows)) + k * rows, gcd_sum)


SECRET_LENGTH = """
  (data (i32.const 3000) "api_key")
  (func (export "secret_length") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
    (i64.store (i32.load offset=20 (local.get $out))
      (i64.extend_i32_s (call $secret (i32.const 3000) (i32.const 7) (i32.const 3100) (i32.const 64))))
    (i32.const 0))
"""


def test_host_capabilities_answer_natively_registered_rows_on_several_threads() -> None:
    # The guest runs without the GIL here; its host call (a Python function) takes it.
    store = wasmudf.DictSecretStore({"acme": {"api_key": "acme-123"}, "globex": {"api_key": "globex-99999"}})
    wasm = wat.module(
        SECRET_LENGTH,
        [wat.scalar("secret_length", ["int64"], "int64")],
        imports='(import "wasmudf" "secret_get" (func $secret (param i32 i32 i32 i32) (result i32)))',
        capabilities=["secret_get"],
    )
    seen: list[tuple[str, list]] = []

    def work(tenant: str) -> None:
        con = apsw.Connection(":memory:")
        wasmudf.register(con, wasm, grant=["secret_get"], tenant=tenant, secrets=store)
        sql = (
            "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 2000) "
            "SELECT DISTINCT secret_length(x) FROM r"
        )
        seen.append((tenant, con.execute(sql).fetchall()))
        con.close()

    threads = [threading.Thread(target=work, args=(t,)) for t in ("acme", "globex") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = {"acme": [(8,)], "globex": [(12,)]}
    assert sorted(seen) == sorted((t, expected[t]) for t in ("acme", "globex") * 2)
