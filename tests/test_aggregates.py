"""Aggregate and window UDFs (ABI §5) on DuckDB, SQLite and direct pyarrow use, against
pure-Python references and the engines' own built-ins."""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter

import pyarrow as pa
import pytest
import wat
from conftest import ROOT, connect
from engines import duckdb_python_path, guest_error, is_duckdb, load_table, query, traits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wasmudf
from wasmudf import GuestFailure, GuestTrap

STATS = ROOT / "udfs" / "stats" / "stats.wasm"

# -- references, from each function's definition ------------------------------------------


def geo_mean(xs):
    xs = [x for x in xs if x is not None]
    if not xs or any(not (x > 0 and math.isfinite(x)) for x in xs):
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def weighted_mean(vs, ws):
    pairs = [(v, w) for v, w in zip(vs, ws) if v is not None and w is not None]
    total = sum(w for _, w in pairs)
    if not pairs or total == 0:
        return None
    return sum(v * w for v, w in pairs) / total


def median_exact(xs):
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else None


def most_frequent(xs):
    counts = Counter(x for x in xs if x is not None)
    if not counts:
        return None
    top = max(counts.values())
    return min(k for k, c in counts.items() if c == top)


def common_prefix(xs):
    xs = [x for x in xs if x is not None]
    return os.path.commonprefix(xs) if xs else None


def longest(xs):
    xs = [x for x in xs if x is not None]
    return min(xs, key=lambda v: (-len(v.encode()), v.encode())) if xs else None


def char_total(xs):
    return sum(len(x) for x in xs if x is not None)


#: Every example aggregate and where the tests below compare it with a reference.
REFERENCES = {
    "geo_mean": geo_mean,
    "weighted_mean": weighted_mean,
    "median_exact": median_exact,
    "most_frequent": most_frequent,
    "common_prefix": common_prefix,
    "hll_distinct": "count(DISTINCT ...), in test_grouped_aggregates_match_references and the bound test",
    "longest": longest,
    "char_total": char_total,
    "spread": "test_rust_spread_as_aggregate_and_window",
    "sum_squares": "test_assemblyscript_sum_squares",
    "distinct_sorted": "test_nested.py: test_distinct_sorted_in_group_by_on_every_engine and the state merge test",
}


def test_every_example_aggregate_has_a_reference(example_modules):
    names = {n for m in example_modules.values() for n, f in m.functions.items() if f.kind == "aggregate"}
    assert names == set(REFERENCES)


def close(a, b, rel=1e-9):
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)


@pytest.fixture(scope="module")
def stats():
    return wasmudf.load(STATS)


def _registered(engine, stats, example_modules):
    con = connect(engine)
    wasmudf.register(con, stats)
    wasmudf.register(con, example_modules["text"])  # the Zig SDK's aggregates
    return con


@pytest.fixture(params=["duckdb", "sqlite", "sqlite3"])
def db(request, stats, example_modules):
    """A connection with the example aggregates, on every engine (SQLite through apsw and
    through Python's sqlite3)."""
    con = _registered(request.param, stats, example_modules)
    yield con
    con.close()


@pytest.fixture
def big_db(engine, stats, example_modules):
    """As ``db``, on DuckDB and apsw only: the million-row tests cost a minute a run on the
    pure-Python path, and sqlite3 runs the same Python row path as apsw's class form."""
    con = _registered(engine, stats, example_modules)
    yield con
    con.close()


# -- grouped results on both engines ------------------------------------------------------

floats = st.one_of(st.none(), st.floats(min_value=1e-3, max_value=1e6))
rows = st.lists(
    st.tuples(st.integers(0, 3), floats, st.one_of(st.none(), st.floats(0.5, 10)), st.integers(-3, 3),
              st.one_of(st.none(), st.sampled_from(["", "straße", "strand", "stra", "né", "ne", "über"]))),
    max_size=60,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=rows)
def test_grouped_aggregates_match_references(db, data):
    table = pa.table(
        {"g": [r[0] for r in data], "x": [r[1] for r in data], "w": [r[2] for r in data],
         "k": [r[3] for r in data], "s": [r[4] for r in data]},
        schema=pa.schema([("g", pa.int64()), ("x", pa.float64()), ("w", pa.float64()), ("k", pa.int64()), ("s", pa.string())]),
    )
    load_table(db, "t", table, ["BIGINT", "DOUBLE", "DOUBLE", "BIGINT", "TEXT"])
    got = query(
        db,
        "SELECT g, geo_mean(x), weighted_mean(x, w), median_exact(x), most_frequent(k), common_prefix(s), "
        "hll_distinct(k), count(DISTINCT k), longest(s), char_total(s) FROM t GROUP BY g ORDER BY g",
    )
    groups = sorted({r[0] for r in data})
    assert [r[0] for r in got] == groups
    for g, geo, wavg, med, mode, prefix, hll, distinct, long, chars in got:
        part = [r for r in data if r[0] == g]
        xs = [r[1] for r in part]
        assert close(geo, geo_mean(xs))
        assert close(wavg, weighted_mean(xs, [r[2] for r in part]))
        assert close(med, median_exact(xs), rel=1e-15)
        assert mode == most_frequent([r[3] for r in part])
        assert prefix == common_prefix([r[4] for r in part])
        assert hll == distinct  # at most 7 distinct values: linear counting is exact here
        assert long == longest([r[4] for r in part])
        assert chars == char_total([r[4] for r in part])


def test_empty_and_all_null_groups(db):
    query(db, "CREATE TABLE t (g BIGINT, x DOUBLE, s TEXT)")
    query(db, "INSERT INTO t VALUES (1, NULL, NULL), (1, NULL, NULL), (2, 4.0, 'a')")
    # No rows at all: one empty group; the guest decides (NULL here, 0 for a count), on an
    # engine that asks it.
    empty_count = 0 if traits(db).finalizes_empty_groups else None
    assert query(db, "SELECT geo_mean(x), median_exact(x), hll_distinct(g), common_prefix(s) FROM t WHERE g > 5") == [
        (None, None, empty_count, None)
    ]
    assert query(db, "SELECT g, geo_mean(x), most_frequent(g), common_prefix(s) FROM t GROUP BY g ORDER BY g") == [
        (1, None, 1, None),
        (2, 4.0, 2, "a"),
    ]


def test_duckdb_builtins_agree(stats):
    import duckdb

    con = duckdb.connect()
    wasmudf.register(con, stats)
    con.execute(
        "CREATE TABLE t AS SELECT range % 7 AS g, 1 + (hash(range) % 1000) / 10.0 AS x, "
        "1 + range % 5 AS w FROM range(20000)"
    )
    rows = con.execute(
        "SELECT g, geo_mean(x), geomean(x), median_exact(x), median(x), weighted_mean(x, w), weighted_avg(x, w) "
        "FROM t GROUP BY g ORDER BY g"
    ).fetchall()
    assert len(rows) == 7
    for _, ours_geo, geo, ours_med, med, ours_w, w in rows:
        assert close(ours_geo, geo, rel=1e-12)
        assert ours_med == med
        assert close(ours_w, w, rel=1e-12)


@pytest.mark.parametrize("path", ["native", "python"])
def test_duckdb_distinct_and_filter_through_the_list_form(stats, path):
    # The list form runs on both DuckDB paths; the plain name takes DISTINCT only natively.
    import duckdb

    con = duckdb.connect() if path == "native" else duckdb_python_path()
    taken = wasmudf.register(con, stats).path  # "python" for both in the pure-Python run
    con.execute("CREATE TABLE t AS SELECT (range % 4)::DOUBLE + 1 AS x, (range % 3)::DOUBLE AS w FROM range(100)")
    got = con.execute("SELECT geo_mean_list(list(DISTINCT x) FILTER (WHERE x > 1)) FROM t").fetchone()[0]
    assert close(got, geo_mean([2.0, 3.0, 4.0]))
    rows = con.execute("SELECT x, w FROM t").fetchall()
    got = con.execute("SELECT weighted_mean_list(list({'a0': x, 'a1': w})) FROM t").fetchone()[0]
    assert close(got, sum(x * w for x, w in rows) / sum(w for _, w in rows))
    assert con.execute("SELECT geo_mean_list(NULL::DOUBLE[]), geo_mean_list([1.0, NULL, 4.0])").fetchall() == [
        (None, 2.0)
    ]
    if taken == "python":
        with pytest.raises(duckdb.Error, match="Macro"):
            con.execute("SELECT geo_mean(DISTINCT x) FROM t")
    else:
        assert close(con.execute("SELECT geo_mean(DISTINCT x) FROM t").fetchone()[0], geo_mean([1.0, 2.0, 3.0, 4.0]))


def test_hll_error_stays_within_its_bound(db):
    # 1.04 / sqrt(4096) = 1.6% standard error; 5% is over three of them.
    for n in (1_000, 50_000, 300_000):
        if is_duckdb(db):
            query(db, f"CREATE OR REPLACE TABLE big AS SELECT range * 7919 AS v FROM range({n})")
        else:
            query(db, "DROP TABLE IF EXISTS big")
            query(db, f"CREATE TABLE big AS WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r "
                      f"WHERE i < {n - 1}) SELECT i * 7919 AS v FROM r")
        estimate, exact = query(db, "SELECT hll_distinct(v), count(DISTINCT v) FROM big")[0]
        assert exact == n
        assert abs(estimate - exact) <= 0.05 * exact, (n, estimate)


def test_hll_merge_matches_one_pass(stats):
    fn = stats.functions["hll_distinct"]
    values = list(range(0, 200_000, 3))
    whole = fn.aggregate(values)
    left, right = fn.start(), fn.start()
    left.update(values[::2])
    right.update(values[1::2])
    left.merge(right)
    assert left.finish() == whole
    assert not right.is_open


# -- windows ----------------------------------------------------------------------------------

FRAMES = {
    "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW": lambda rows, i: rows[max(0, i - 2) : i + 1],
    "ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING": lambda rows, i: rows[max(0, i - 1) : i + 2],
    "RANGE BETWEEN 2 PRECEDING AND CURRENT ROW": lambda rows, i: [r for r in rows if rows[i][1] - 2 <= r[1] <= rows[i][1]],
}


@pytest.mark.parametrize("frame", list(FRAMES))
def test_window_frames_match_python(db, frame):
    data = [(p, t, float(1 + (t * 7 + p) % 9), float(1 + t % 3), "é" * (t % 4)) for p in range(3) for t in range(12)]
    query(db, "CREATE TABLE w (p BIGINT, t BIGINT, x DOUBLE, wt DOUBLE, s TEXT)")
    for row in data:
        query(db, "INSERT INTO w VALUES (?, ?, ?, ?, ?)", row)
    got = query(
        db,
        f"SELECT p, t, geo_mean(x) OVER win, weighted_mean(x, wt) OVER win, char_total(s) OVER win FROM w "
        f"WINDOW win AS (PARTITION BY p ORDER BY t {frame}) ORDER BY p, t",
    )
    for p, t, geo, wavg, chars in got:
        part = sorted(r for r in data if r[0] == p)
        frame_rows = FRAMES[frame](part, [r[1] for r in part].index(t))
        assert close(geo, geo_mean([r[2] for r in frame_rows]))
        assert close(wavg, weighted_mean([r[2] for r in frame_rows], [r[3] for r in frame_rows]))
        assert chars == char_total([r[4] for r in frame_rows])


def test_window_state_directly(stats):
    state = stats.functions["weighted_mean"].start()
    state.update([1.0, 2.0, 3.0], [1.0, 1.0, 2.0])
    assert close(state.value(), 9 / 4)
    state.inverse([1.0], [1.0])
    assert close(state.value(), 8 / 3)
    assert close(state.finish(), 8 / 3)


# -- direct use and scale -------------------------------------------------------------------


def test_group_by_directly(stats):
    table = stats.functions["most_frequent"].group_by(["b", "a", "b", None, "a", "b"], [5, 1, 5, 9, 2, 6])
    assert table.column_names == ["key", "most_frequent"]
    assert dict(zip(table["key"].to_pylist(), table["most_frequent"].to_pylist())) == {"b": 5, "a": 1, None: 9}


@pytest.mark.slow
def test_one_group_of_five_million_rows(big_db):
    db = big_db
    n = 5_000_000
    if is_duckdb(db):
        query(db, f"CREATE TABLE big AS SELECT (range % 1000)::DOUBLE + 1 AS x FROM range({n})")
    else:
        query(db, f"CREATE TABLE big AS WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r "
                  f"WHERE i < {n - 1}) SELECT (i % 1000) + 1.0 AS x FROM r")
    med, geo = query(db, "SELECT median_exact(x), geo_mean(x) FROM big")[0]
    assert med == 500.5
    assert close(geo, geo_mean([float(v) for v in range(1, 1001)]), rel=1e-9)


@pytest.mark.slow
def test_a_million_groups_of_one_row(big_db):
    db = big_db
    n = 1_000_000
    if is_duckdb(db):
        query(db, f"CREATE TABLE big AS SELECT range AS g, range % 10 AS k FROM range({n})")
    else:
        query(db, f"CREATE TABLE big AS WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r "
                  f"WHERE i < {n - 1}) SELECT i AS g, i % 10 AS k FROM r")
    got = query(db, "SELECT sum(m), count(*) FROM (SELECT g, most_frequent(k) AS m FROM big GROUP BY g)")
    assert got == [(sum(i % 10 for i in range(n)), n)]


# -- failures -------------------------------------------------------------------------------

AGG_PRELUDE = """
  (global $next (mut i32) (i32.const 4096))
  (func (export "bad__init") (result i32) (global.set $next (i32.add (global.get $next) (i32.const 16))) (global.get $next))
  (func (export "bad__finalize") (param i32) (param $out i32) (result i32)
    (i64.store (i32.load offset=20 (local.get $out)) (i64.const 42)) (i32.const 0))
"""


def aggregate_module(update_body: str, init: str | None = None, finalize: str | None = None) -> wasmudf.Module:
    body = AGG_PRELUDE + f'(func (export "bad__update") (param i32 i32 i32) (result i32) {update_body})'
    if finalize is not None:
        body = body.replace(
            "(i64.store (i32.load offset=20 (local.get $out)) (i64.const 42)) (i32.const 0))", finalize + ")"
        )
    if init is not None:
        body = body.replace(
            '(func (export "bad__init") (result i32) (global.set $next (i32.add (global.get $next) (i32.const 16))) (global.get $next))',
            f'(func (export "bad__init") (result i32) {init})',
        )
    fns = [{"name": "bad", "kind": "aggregate", "params": ["int64"], "returns": "int64"},
           wat.scalar("add_i64", ["int64", "int64"], "int64")]
    return wasmudf.load(wat.module(body + wat.ADD_I64, fns))


def test_a_trapping_update_fails_the_statement_and_the_connection_survives(engine):
    mod = aggregate_module("unreachable")
    con = connect(engine)
    wasmudf.register(con, mod)
    query(con, "CREATE TABLE t (x BIGINT)")
    query(con, "INSERT INTO t VALUES (1), (2)")
    with pytest.raises(guest_error(con, wasmudf.GuestTrap), match=r"`bad` in sha256:\w{12} \(bad, add_i64\) trapped: .*unreachable"):
        query(con, "SELECT bad(x) FROM t")
    assert query(con, "SELECT sum(add_i64(x, 1)) FROM t") == [(5,)]
    assert query(con, "SELECT bad(x) FROM t WHERE x > 5") == [(42,)]  # empty group: no update
    assert mod._pool.get().live_states == 0


def test_a_failing_finalize_names_the_aggregate_and_the_guests_message(engine):
    fails = '(i32.const 3)) (data (i32.const 900) "no quorum\\00") (func (export "wasmudf_error") (result i32) (i32.const 900)'
    mod = aggregate_module("(i32.const 0)", finalize=fails)
    con = connect(engine)
    wasmudf.register(con, mod)
    query(con, "CREATE TABLE t (x BIGINT)")
    query(con, "INSERT INTO t VALUES (1)")
    with pytest.raises(guest_error(con, wasmudf.GuestFailure), match=r"`bad`.*status 3.*no quorum"):
        query(con, "SELECT bad(x) FROM t")
    assert query(con, "SELECT add_i64(x, 1) FROM t") == [(2,)]
    assert mod._pool.get().live_states == 0


def test_init_returning_zero_is_an_error(stats):
    mod = aggregate_module("(i32.const 0)", init="(i32.const 0)")
    with pytest.raises(GuestFailure, match=r"bad__init returned 0"):
        mod.functions["bad"].aggregate([1])
    assert mod.functions["add_i64"]([1], [2]).to_pylist() == [3]


def test_states_are_released_when_a_step_fails_on_sqlite(stats):
    con = connect("sqlite")
    wasmudf.register(con, stats)
    query(con, "CREATE TABLE t (g BIGINT, x)")
    query(con, "INSERT INTO t VALUES (1, 1.0), (1, 2.0), (2, 'text'), (3, 4.0)")
    with pytest.raises(wasmudf.ArgumentTypeError, match="geo_mean.*TEXT"):
        query(con, "SELECT g, geo_mean(x) FROM t GROUP BY g")
    instance = stats._pool.get()
    assert instance.live_states == 0  # every group's state was finalized
    assert query(con, "SELECT geo_mean(x) FROM t WHERE g = 1")[0][0] == pytest.approx(math.sqrt(2))


def test_a_state_lost_to_another_failure_fails_too(stats):
    mod = aggregate_module("(i32.const 0)")
    state = mod.functions["bad"].start()
    boom = wasmudf.load(wat.module('(func (export "boom") (param i32 i32 i32) (result i32) unreachable)',
                                   [wat.scalar("boom", ["int64"], "int64")]))
    with pytest.raises(GuestTrap):
        boom.functions["boom"]([1])  # another module: our state is unaffected
    assert state.finish() == 42
    state = mod.functions["bad"].start()
    mod._pool.get().broken = True  # what any failure in this instance does
    with pytest.raises(GuestFailure, match="state was lost"):
        state.finish()


def test_rust_spread_as_aggregate_and_window(engine, example_modules):
    def spread(xs):
        xs = [x for x in xs if x is not None]
        return max(xs) - min(xs) if xs else None

    con = connect(engine)
    wasmudf.register(con, example_modules["rust"])
    data = [(p, t, float((t * 37 + p * 11) % 23)) for p in range(2) for t in range(10)]
    query(con, "CREATE TABLE s (p BIGINT, t BIGINT, x DOUBLE)")
    for row in data:
        query(con, "INSERT INTO s VALUES (?, ?, ?)", row)
    grouped = dict(query(con, "SELECT p, spread(x) FROM s GROUP BY p"))
    assert grouped == {p: spread([r[2] for r in data if r[0] == p]) for p in range(2)}
    windowed = query(
        con, "SELECT p, t, spread(x) OVER (PARTITION BY p ORDER BY t ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) "
        "FROM s ORDER BY p, t"
    )
    for p, t, got in windowed:
        frame = [r[2] for r in data if r[0] == p and t - 2 <= r[1] <= t]
        assert got == spread(frame)
    con.close()


def test_assemblyscript_sum_squares(engine, example_modules):
    con = connect(engine)
    wasmudf.register(con, example_modules["assemblyscript"])
    data = [(p, t, float(t % 5) - p) for p in range(2) for t in range(12)]
    query(con, "CREATE TABLE q (p BIGINT, t BIGINT, x DOUBLE)")
    for row in data:
        query(con, "INSERT INTO q VALUES (?, ?, ?)", row)
    assert dict(query(con, "SELECT p, sum_squares(x) FROM q GROUP BY p")) == {
        p: sum(r[2] ** 2 for r in data if r[0] == p) for p in range(2)
    }
    for p, t, got in query(
        con, "SELECT p, t, sum_squares(x) OVER (PARTITION BY p ORDER BY t ROWS 3 PRECEDING) FROM q ORDER BY p, t"
    ):
        assert got == pytest.approx(sum(r[2] ** 2 for r in data if r[0] == p and t - 3 <= r[1] <= t))
    fn = example_modules["assemblyscript"].functions["sum_squares"]
    left, right = fn.start(), fn.start()
    left.update([1.0, 2.0])
    right.update([3.0])
    left.merge(right)
    assert left.finish() == 14.0
    con.close()


def test_a_state_dropped_while_open_is_finalized_by_its_thread_later(stats):
    geo = stats.functions["geo_mean"]
    state = geo.start()
    state.update([1.0, 4.0])
    instance = stats._pool.get()
    before = instance.live_states
    del state  # never finished: a caller forgot it, or SQLite skipped its `final`
    assert instance.live_states == before - 1
    assert len(instance.orphaned_states) == 1
    assert geo.aggregate([2.0, 8.0]) == pytest.approx(4.0)  # the next state releases it first
    assert instance.orphaned_states == []


def test_every_aggregate_of_a_failing_group_is_released_on_sqlite(stats):
    # One aggregate's final fails; apsw then skips `final` for the group's other aggregates.
    con = connect("sqlite")
    wasmudf.register(con, stats)
    query(con, "CREATE TABLE t (g BIGINT, i, x)")
    query(con, "INSERT INTO t VALUES (1, 5, 1.0), (1, 'text', 2.0), (2, 7, 4.0)")
    with pytest.raises(wasmudf.ArgumentTypeError, match="TEXT"):
        query(con, "SELECT g, geo_mean(x), most_frequent(i), hll_distinct(i) FROM t GROUP BY g")
    assert stats._pool.get().live_states == 0
    assert query(con, "SELECT most_frequent(i) FROM t WHERE g = 2") == [(7,)]
    assert stats._pool.get().orphaned_states == []


# -- states that move between instances (ABI §5) -------------------------------------------

#: Rows for each example aggregate, and how its result compares (exactly, or to float rounding).
MOVING = {
    "geo_mean": (st.tuples(st.floats(1e-3, 1e6)), close),
    "weighted_mean": (st.tuples(st.floats(-1e6, 1e6), st.floats(0.5, 10)), close),
    "median_exact": (st.tuples(st.floats(-1e6, 1e6)), close),
    "most_frequent": (st.tuples(st.integers(-3, 3)), int.__eq__),
    "common_prefix": (st.tuples(st.sampled_from(["straße", "strand", "stra", "st", "über"])), str.__eq__),
    "hll_distinct": (st.tuples(st.integers(-(2**63), 2**63 - 1)), int.__eq__),
    "longest": (st.tuples(st.sampled_from(["", "straße", "strand", "né", "ne", "über"])), str.__eq__),
    "char_total": (st.tuples(st.sampled_from(["", "straße", "né", "über"])), int.__eq__),
    "spread": (st.tuples(st.floats(-1e6, 1e6)), close),
    "sum_squares": (st.tuples(st.floats(-1e3, 1e3)), close),
    "distinct_sorted": (st.tuples(st.integers(-5, 5) | st.integers(-(2**63), 2**63 - 1)), list.__eq__),
}


def test_every_example_aggregate_moves_its_states(example_modules):
    aggregates = {n: f for m in example_modules.values() for n, f in m.functions.items() if f.kind == "aggregate"}
    assert set(MOVING) == set(aggregates)
    assert [n for n, f in aggregates.items() if not f.movable] == []


@pytest.mark.parametrize("name", list(MOVING))
def test_states_built_in_other_instances_merge_to_the_whole(example_modules, name):
    """Partial states built on other threads (so in other instances), serialized, restored
    here and merged give what one state over every row gives, in all four SDKs."""
    import threading

    fn = next(m.functions[name] for m in example_modules.values() if name in m.functions)
    row_strategy, same = MOVING[name]

    @settings(max_examples=15, deadline=None)
    @given(parts=st.lists(st.lists(row_strategy, max_size=40), min_size=1, max_size=4))
    def check(parts):
        blobs: list[bytes] = [b""] * len(parts)

        def build(i: int) -> None:
            state = fn.start()
            state.update(*[[r[k] for r in parts[i]] for k in range(len(fn.spec.params))])
            blobs[i] = state.serialize()

        workers = [threading.Thread(target=build, args=(i,)) for i in range(len(parts))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        merged = fn.restore(blobs[0])
        for blob in blobs[1:]:
            merged.merge(fn.restore(blob))
        everything = [r for part in parts for r in part]
        whole = fn.aggregate(*[[r[k] for r in everything] for k in range(len(fn.spec.params))])
        got = merged.finish()
        assert (got is None and whole is None) or same(got, whole)

    check()
