"""DuckDB's native path: how the extension gets in and what it leaves, the functions' lives,
threads, interrupts and real aggregates, each checked against DuckDB's built-ins or a
Python reference. (The conformance and hostile suites run on this path too.)"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
import time

import duckdb
import pytest
import wat
from conftest import EXAMPLES, ROOT
from engines import duckdb_python_path

import wasmudf
from wasmudf.adapters import duckdb_native

# The pure-Python run (WASMUDF_PURE_PYTHON=1) has no native path by design: DuckDB takes its
# Python path there, which the other suites cover; these tests run in the C accelerator's run.
pytestmark = pytest.mark.skipif(
    duckdb_native.unavailable_reason() is not None,
    reason="DuckDB's native path needs the C accelerator (this is the pure-Python run)",
)

SETTINGS = (
    "SELECT current_setting('allow_unsigned_extensions'), current_setting('allow_extension_repositories'), "
    "current_setting('extension_directory')"
)
SPIN = wat.module(
    '(func (export "spin") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0))',
    [wat.scalar("spin", ["int64"], "int64")],
)


def repositories(con) -> list[str]:
    return [r[0] for r in con.execute("SELECT repository_name FROM duckdb_extension_repositories()").fetchall()]


def unsigned_copy(tmp_path) -> str:
    """An extension file DuckDB has not loaded yet, with no valid signature."""
    path = tmp_path / "other.duckdb_extension"
    data = bytearray(duckdb_native.EXTENSION.read_bytes())
    data[-256:] = bytes(256)
    path.write_bytes(bytes(data))
    return str(path)


# -- which path, and why --------------------------------------------------------------------


def test_register_takes_the_native_path_and_says_why():
    con = duckdb.connect()
    reg = wasmudf.register(con, EXAMPLES["numeric"])
    assert reg.path == "native" and "signed" in reg.path_reason
    assert con.execute("SELECT add_i64(40, 2), clamp(15.0, 0.0, 10.0)").fetchall() == [(42, 10.0)]


def test_a_locked_database_takes_the_python_path_and_says_why():
    con = duckdb_python_path()
    reg = wasmudf.register(con, EXAMPLES["stats"])
    assert reg.path == "python" and "'forbidden'" in reg.path_reason
    assert con.execute("SELECT geo_mean_list([1.0, 4.0])").fetchall() == [(2.0,)]


def test_the_switch_keeps_duckdb_on_the_python_path(monkeypatch):
    monkeypatch.setenv("WASMUDF_DUCKDB_NATIVE", "0")
    reg = wasmudf.register(duckdb.connect(), EXAMPLES["numeric"])
    assert reg.path == "python" and "WASMUDF_DUCKDB_NATIVE=0" in reg.path_reason


# -- nothing left open ----------------------------------------------------------------------


def test_the_signed_route_leaves_nothing_open(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    con = duckdb.connect()
    before_repositories = repositories(con)
    assert con.execute(SETTINGS).fetchall() == [(False, "hosts", "")]
    assert wasmudf.register(con, EXAMPLES["numeric"]).path == "native"
    # Unsigned stays off, the extension directory is the user's, no repository is left, and
    # the repositories setting is the nearest to "hosts" DuckDB allows after "allowed".
    assert con.execute(SETTINGS).fetchall() == [(False, "hosts_only", "")]
    assert repositories(con) == before_repositories
    assert not (tmp_path / "home" / ".duckdb" / "extensions").exists()
    with pytest.raises(duckdb.Error, match="(?i)signature|unsigned"):
        con.execute(f"LOAD '{unsigned_copy(tmp_path)}'")
    with pytest.raises(duckdb.Error, match="(?i)repositor"):
        con.execute(f"CREATE EXTENSION REPOSITORY evil WITH PREFIX '{tmp_path}' USING PUBLIC KEY 'x'")


def test_an_opened_up_database_stays_as_it_was(tmp_path):
    con = duckdb.connect()
    con.execute("SET allow_extension_repositories = 'allowed'").fetchall()
    con.execute(f"SET extension_directory = '{tmp_path / 'mine'}'").fetchall()
    assert wasmudf.register(con, EXAMPLES["numeric"]).path == "native"
    assert con.execute(SETTINGS).fetchall() == [(False, "allowed", str(tmp_path / "mine"))]


def test_the_unsigned_route_switches_unsigned_loads_off(tmp_path):
    con = wasmudf.duckdb.connect()
    reg = wasmudf.register(con, EXAMPLES["numeric"])
    assert reg.path == "native" and "unsigned" in reg.path_reason
    assert con.execute(SETTINGS).fetchall()[0][:2] == (False, "hosts")
    with pytest.raises(duckdb.Error, match="(?i)signature|unsigned"):
        con.execute(f"LOAD '{unsigned_copy(tmp_path)}'")
    assert con.execute("SELECT add_i64(1, 2)").fetchall() == [(3,)]


# -- lifecycle ------------------------------------------------------------------------------


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_close_and_reopen_the_same_file_many_times(tmp_path):
    # A connection kept by wasmudf would keep the database open: reopening would fail or hang.
    proc = run_python(f"""
        import duckdb, wasmudf
        path = {str(tmp_path / "app.duckdb")!r}
        for i in range(3):
            con = duckdb.connect(path)
            assert wasmudf.register(con, {str(EXAMPLES["numeric"])!r}).path == "native"
            con.execute("CREATE TABLE IF NOT EXISTS t AS SELECT range AS a FROM range(5)")
            assert con.execute("SELECT sum(add_i64(a, a)) FROM t").fetchall() == [(20,)]
            con.close()
        with duckdb.connect(path) as con:
            assert wasmudf.register(con, {str(EXAMPLES["stats"])!r}).path == "native"
        con = wasmudf.duckdb.connect(path)
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(5,)]
        con.close()
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_process_exits_cleanly_with_databases_open(tmp_path):
    proc = run_python(f"""
        import duckdb, wasmudf
        cons = [duckdb.connect({str(tmp_path / "a.duckdb")!r}), duckdb.connect(), wasmudf.duckdb.connect()]
        for con in cons:
            wasmudf.register(con, {str(EXAMPLES["text"])!r})
            con.execute("SELECT slugify('A b')").fetchall()
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    # The file was closed properly: it opens, and without wasmudf.
    assert duckdb.connect(str(tmp_path / "a.duckdb")).execute("SELECT 1").fetchall() == [(1,)]


def test_every_connection_to_the_database_sees_the_functions(tmp_path):
    path = str(tmp_path / "shared.duckdb")
    con = duckdb.connect(path)
    wasmudf.register(con, EXAMPLES["numeric"])
    cursor = con.cursor()
    other = duckdb.connect(path)
    for c in (con, cursor, other):
        assert c.execute("SELECT add_i64(2, 3)").fetchall() == [(5,)]
    # Registering through a second connection of the same database uses the same extension.
    assert wasmudf.register(other, EXAMPLES["text"]).path == "native"
    assert con.execute("SELECT slugify('Hello World')").fetchall() == [("hello-world",)]
    other.close()
    cursor.close()
    con.close()


def constant(value: int) -> bytes:
    body = f'(func (export "k") (param i32 i32) (param $out i32) (result i32) ' \
           f'(i64.store (i32.load offset=20 (local.get $out)) (i64.const {value})) (i32.const 0))'
    return wat.module(body, [wat.scalar("k", ["int64"], "int64")])


def test_replace_unregister_and_register_again():
    con = duckdb.connect()
    first = wasmudf.register(con, constant(1))
    assert con.execute("SELECT k(0)").fetchall() == [(1,)]
    with pytest.raises(wasmudf.RegistrationError, match="already exists"):
        wasmudf.register(con, constant(2))
    wasmudf.register(con, constant(2), replace=True)
    assert con.execute("SELECT k(0)").fetchall() == [(2,)]
    first.unregister()  # the name is the second module's now, but unregister goes by name
    with pytest.raises(duckdb.BinderException, match="`k` was unregistered"):
        con.execute("SELECT k(0)").fetchall()
    wasmudf.register(con, constant(3))
    assert con.execute("SELECT k(0)").fetchall() == [(3,)]


def test_a_reloaded_module_replaces_the_old_one_and_lets_it_go():
    import gc
    import weakref

    con = duckdb.connect()
    old = wasmudf.load(constant(7))
    wasmudf.register(con, old)
    con.execute("SET threads = 2").fetchall()
    assert con.execute("SELECT k(0)").fetchall() == [(7,)]
    gone = weakref.ref(old)
    wasmudf.register(con, wasmudf.load(constant(8)), replace=True)
    del old
    assert con.execute("SELECT k(0)").fetchall() == [(8,)]
    gc.collect()
    assert gone() is None


def test_built_in_names_are_refused():
    module = wat.module(
        '(func (export "upper") (param i32 i32 i32) (result i32) (i32.const 0))',
        [wat.scalar("upper", ["int64"], "int64")],
    )
    con = duckdb.connect()
    with pytest.raises(wasmudf.RegistrationError, match="built-in duckdb function"):
        wasmudf.register(con, module, replace=True)
    assert con.execute("SELECT upper('a')").fetchall() == [("A",)]


# -- threads --------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_results_match_the_built_ins_on_any_number_of_threads(threads):
    con = duckdb.connect()
    wasmudf.register(con, EXAMPLES["numeric"])
    wasmudf.register(con, EXAMPLES["text"])
    con.execute(f"SET threads = {threads}").fetchall()
    con.execute(
        "CREATE TABLE t AS SELECT CASE WHEN range % 7 = 0 THEN NULL ELSE range END AS a, range * 3 AS b, "
        "CASE WHEN range % 5 = 0 THEN NULL ELSE 'Row Number ' || range || ' of many' END AS s FROM range(300000)"
    )
    got = con.execute("SELECT sum(add_i64(a, b)), count(add_i64(a, b)), min(slugify(s)), max(slugify(s)) FROM t")
    got = got.fetchall()
    want = con.execute(
        "SELECT sum(a + b), count(a + b), min(lower(replace(s, ' ', '-'))), max(lower(replace(s, ' ', '-'))) FROM t"
    ).fetchall()
    assert got == want


def test_threads_call_their_own_instances_concurrently():
    # Two Python threads running queries on cursors at once, each query on several DuckDB threads.
    con = duckdb.connect()
    wasmudf.register(con, EXAMPLES["numeric"])
    con.execute("SET threads = 4").fetchall()
    results: list = []

    def work(offset: int) -> None:
        cur = con.cursor()
        results.append(cur.execute(f"SELECT sum(add_i64(range, {offset})) FROM range(500000)").fetchall()[0][0])

    workers = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(results) == sorted(sum(range(500000)) + 500000 * k for k in range(4))


# -- interrupts -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["duckdb", "wasmudf"])
def test_interrupt_stops_a_running_native_guest(how):
    con = duckdb.connect()
    wasmudf.register(con, wasmudf.load(SPIN, limits=wasmudf.Limits(timeout_ms=None)))
    stop = con.interrupt if how == "duckdb" else (lambda: wasmudf.interrupt(con))
    timer = threading.Timer(0.3, stop)
    timer.start()
    start = time.monotonic()
    with pytest.raises(duckdb.Error, match="(?i)interrupt"):
        con.execute("SELECT spin(range) FROM range(10)").fetchall()
    assert 0.25 < time.monotonic() - start < 2.0
    timer.join()


def test_an_interrupt_stops_only_its_own_connections_scalars():
    con = duckdb.connect()
    wasmudf.register(con, wasmudf.load(SPIN, limits=wasmudf.Limits(timeout_ms=1500)))
    other = con.cursor()
    failures: dict[str, str] = {}

    def run(name: str, c) -> None:
        try:
            c.execute("SELECT spin(1)").fetchall()
        except duckdb.Error as exc:
            failures[name] = str(exc)

    threads = [threading.Thread(target=run, args=("interrupted", con)),
               threading.Thread(target=run, args=("other", other))]
    for t in threads:
        t.start()
    time.sleep(0.3)
    con.interrupt()
    for t in threads:
        t.join()
    assert "nterrupt" in failures["interrupted"]
    assert "TimeLimitExceeded" in failures["other"]  # it ran on to its own limit


# -- errors ---------------------------------------------------------------------------------


def test_a_guest_error_names_the_function_and_is_rebuilt():
    con = duckdb.connect()
    wasmudf.register(con, wasmudf.load(SPIN, limits=wasmudf.Limits(timeout_ms=50)))
    with pytest.raises(duckdb.InvalidInputException) as caught:
        con.execute("SELECT spin(range) FROM range(3)").fetchall()
    rebuilt = wasmudf.error_from(caught.value)
    assert isinstance(rebuilt, wasmudf.TimeLimitExceeded) and rebuilt.function == "spin"
    assert con.execute("SELECT 1").fetchall() == [(1,)]


# -- aggregates -----------------------------------------------------------------------------


def geo(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


@pytest.fixture
def sales():
    con = duckdb.connect()
    wasmudf.register(con, EXAMPLES["stats"])
    con.execute(
        "CREATE TABLE s AS SELECT range AS i, range % 5 AS g, (range % 13 + 1)::DOUBLE AS x, "
        "(range % 3 + 1)::DOUBLE AS w FROM range(2000)"
    )
    rows = con.execute("SELECT i, g, x, w FROM s ORDER BY i").fetchall()
    return con, rows


def test_group_by_distinct_and_filter_on_the_plain_name(sales):
    con, rows = sales
    got = con.execute(
        "SELECT g, geo_mean(x), geo_mean(DISTINCT x), geo_mean(x) FILTER (WHERE x > 6) FROM s GROUP BY g ORDER BY g"
    ).fetchall()
    for g, all_, distinct, filtered in got:
        xs = [x for _, gg, x, _ in rows if gg == g]
        assert all_ == pytest.approx(geo(xs))
        assert distinct == pytest.approx(geo(sorted(set(xs))))
        assert filtered == pytest.approx(geo([x for x in xs if x > 6]))


def test_two_parameter_aggregate_and_an_empty_group(sales):
    con, rows = sales
    got = con.execute("SELECT weighted_mean(x, w), weighted_mean(x, w) FILTER (WHERE x > 100) FROM s").fetchall()
    want = sum(x * w for _, _, x, w in rows) / sum(w for _, _, _, w in rows)
    assert got[0][0] == pytest.approx(want)
    assert got[0][1] is None  # an empty group: the guest's own answer for no rows


#: last_seen(x): the value of the last row folded in, so the order rows arrive in shows.
LAST = wat.module(
    """
    (func (export "last_seen__init") (result i32) (i64.store (i32.const 64) (i64.const -1)) (i32.const 64))
    (func (export "last_seen__update") (param $s i32) (param $args i32) (param $n i32) (result i32)
      (local $len i32)
      (local.set $len (i32.load offset=4 (local.get $args)))
      (if (local.get $len)
        (then (i64.store (local.get $s) (i64.load (i32.add (i32.load offset=20 (local.get $args))
                                                           (i32.shl (i32.sub (local.get $len) (i32.const 1))
                                                                    (i32.const 3)))))))
      (i32.const 0))
    (func (export "last_seen__finalize") (param $s i32) (param $out i32) (result i32)
      (i64.store (i32.load offset=20 (local.get $out)) (i64.load (local.get $s))) (i32.const 0))
    """,
    [{"name": "last_seen", "kind": "aggregate", "params": ["int64"], "returns": "int64"}],
)


def test_order_by_inside_the_aggregate_reaches_the_guest_in_order():
    con = duckdb.connect()
    wasmudf.register(con, LAST)
    con.execute("CREATE TABLE m AS SELECT range AS k, (range * 7919) % 1000 AS v FROM range(5000)")
    rows = con.execute("SELECT k, v FROM m").fetchall()
    assert con.execute("SELECT last_seen(v ORDER BY k) FROM m").fetchall() == [(max(rows)[1],)]
    assert con.execute("SELECT last_seen(v ORDER BY k DESC) FROM m").fetchall() == [(min(rows)[1],)]
    assert con.execute("SELECT last_seen(v ORDER BY v) FROM m").fetchall() == [(max(v for _, v in rows),)]


@pytest.mark.parametrize("frame", ["ROWS 3 PRECEDING", "ROWS BETWEEN 2 PRECEDING AND 2 FOLLOWING",
                                   "ROWS UNBOUNDED PRECEDING", "RANGE BETWEEN 1 PRECEDING AND CURRENT ROW"])
def test_window_frames(sales, frame):
    con, rows = sales
    got = con.execute(f"SELECT i, geo_mean(x) OVER (PARTITION BY g ORDER BY i {frame}) FROM s ORDER BY i").fetchall()
    by_group: dict[int, list[tuple[int, float]]] = {}
    for i, g, x, _ in rows:
        by_group.setdefault(g, []).append((i, x))
    want = {}
    for members in by_group.values():
        for k, (i, _) in enumerate(members):
            if frame == "ROWS 3 PRECEDING":
                window = members[max(0, k - 3) : k + 1]
            elif frame.startswith("ROWS BETWEEN"):
                window = members[max(0, k - 2) : k + 3]
            elif frame == "ROWS UNBOUNDED PRECEDING":
                window = members[: k + 1]
            else:  # RANGE over i within the partition: i - 1 <= i' <= i
                window = [(j, x) for j, x in members if i - 1 <= j <= i]
            want[i] = geo([x for _, x in window])
    assert [(i, pytest.approx(want[i])) for i, _ in got] == got


def test_a_group_over_the_limit_fails_clearly(monkeypatch):
    # last_seen cannot move its states, so its groups collect their rows, up to the limit.
    monkeypatch.setattr(duckdb_native, "GROUP_LIMIT_BYTES", 4096)
    con = duckdb.connect()
    wasmudf.register(con, LAST)
    with pytest.raises(duckdb.InvalidInputException, match="over the native aggregate's limit"):
        con.execute("SELECT last_seen(range) FROM range(10000)").fetchall()
    assert con.execute("SELECT last_seen(range ORDER BY range) FROM range(100)").fetchall() == [(99,)]


# -- states that move between instances (ABI §5) -----------------------------------------------


def test_a_movable_group_folds_as_it_goes_within_the_same_limit(monkeypatch):
    # geo_mean serializes its state, so a group holds at most a few hundred rows at a time.
    monkeypatch.setattr(duckdb_native, "GROUP_LIMIT_BYTES", 16384)
    con = duckdb.connect()
    wasmudf.register(con, EXAMPLES["stats"])
    got = con.execute("SELECT geo_mean(range::DOUBLE + 1), geomean(range::DOUBLE + 1) FROM range(300000)").fetchall()
    assert got[0][0] == pytest.approx(got[0][1], rel=1e-12)


def common_prefix(words: list[str]) -> str | None:
    if not words:
        return None
    prefix = words[0]
    for w in words[1:]:
        n = 0
        while n < min(len(prefix), len(w)) and prefix[n] == w[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_movable_aggregates_match_references_on_any_number_of_threads(threads):
    con = duckdb.connect()
    wasmudf.register(con, EXAMPLES["stats"])
    con.execute(f"SET threads = {threads}")
    # 300,000 rows: three row groups, so threads build partial states that DuckDB combines.
    con.execute(
        "CREATE TABLE big AS SELECT range % 7 AS g, ((range * 7919) % 1009 + 1)::DOUBLE AS x, "
        "(range * 31) % 211 AS k, 'prefix-' || (range % 7)::VARCHAR || '-' || (range % 5)::VARCHAR AS s "
        "FROM range(300000)"
    )
    got = con.execute(
        "SELECT g, geo_mean(x), geomean(x), median_exact(x), median(x), most_frequent(k), hll_distinct(k), "
        "common_prefix(s) FROM big GROUP BY g ORDER BY g"
    ).fetchall()
    rows = con.execute("SELECT g, k, s FROM big").fetchall()
    hll = wasmudf.load(EXAMPLES["stats"]).functions["hll_distinct"]
    for g, geo_w, geo_b, med_w, med_b, mode_w, hll_w, prefix_w in got:
        keys = [k for gg, k, _ in rows if gg == g]
        assert geo_w == pytest.approx(geo_b, rel=1e-12)
        assert med_w == pytest.approx(float(med_b))
        counts: dict[int, int] = {}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        assert mode_w == min(counts, key=lambda k: (-counts[k], k))
        assert hll_w == hll.aggregate(keys)  # HyperLogLog merges exactly, in any order
        assert prefix_w == common_prefix([s for gg, _, s in rows if gg == g])


@pytest.mark.parametrize("frame", ["ROWS UNBOUNDED PRECEDING", "ROWS BETWEEN 500 PRECEDING AND 500 FOLLOWING"])
def test_large_window_frames_on_a_movable_aggregate(frame):
    # Before states moved, each frame refolded all its rows: ROWS UNBOUNDED PRECEDING was
    # quadratic (minutes at 200,000 rows). Now the segment tree's nodes are merged states.
    con = duckdb.connect()
    wasmudf.register(con, EXAMPLES["stats"])
    con.execute("CREATE TABLE w AS SELECT range AS i, ((range * 7919) % 1009 + 1)::DOUBLE AS x FROM range(30000)")
    got = con.execute(
        f"SELECT geo_mean(x) OVER (ORDER BY i {frame}), geomean(x) OVER (ORDER BY i {frame}) FROM w ORDER BY i"
    ).fetchall()
    assert all(a == pytest.approx(b, rel=1e-9) for a, b in got)


def test_only_the_public_key_is_installed():
    assert "BEGIN PUBLIC KEY" in duckdb_native.PUBLIC_KEY.read_text()
    for path in duckdb_native.PACKAGE_DIR.rglob("*"):
        if path.is_file() and path.suffix in ("", ".pem", ".key", ".txt", ".json"):
            assert b"PRIVATE KEY" not in path.read_bytes(), path


def test_the_cli_says_how_functions_run(capsys, monkeypatch):
    from wasmudf import cli

    assert cli.main(["inspect", str(EXAMPLES["numeric"]), "--engine", "duckdb"]) == 0
    assert "on duckdb     native: DuckDB's C extension API" in capsys.readouterr().out
    argv = ["sql", "-v", "--no-examples", "--udf", str(EXAMPLES["numeric"]), "SELECT add_i64(40, 2) AS x"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "42" in out and "numeric.wasm: haversine_km" in err and "(native:" in err
    monkeypatch.setenv("WASMUDF_DUCKDB_NATIVE", "0")
    assert cli.main(argv) == 0
    assert "(python: WASMUDF_DUCKDB_NATIVE=0 is set)" in capsys.readouterr().err


def test_a_failing_constant_call_runs_once():
    # DuckDB folds `spin(1)` while planning and calls it again to run: without care a guest
    # that loops would take its time limit two or three times over. The same row failing
    # again within seconds fails at once, with the same error; another row is tried.
    con = duckdb.connect()
    wasmudf.register(con, wasmudf.load(SPIN, limits=wasmudf.Limits(timeout_ms=300)))
    for sql, most in (("SELECT spin(1)", 0.6), ("SELECT spin(1)", 0.2), ("SELECT spin(2)", 0.6)):
        start = time.monotonic()
        with pytest.raises(duckdb.InvalidInputException, match="TimeLimitExceeded: `spin`"):
            con.execute(sql).fetchall()
        assert time.monotonic() - start < most, sql
