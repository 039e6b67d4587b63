"""The C accelerator and the pure-Python path: which one runs, and what only the fast
paths do (per-thread binding of SQLite's per-row callable).

The whole suite runs twice in CI, once per path (``WASMUDF_PURE_PYTHON=1`` the second time),
so every behaviour test covers both.
"""

from __future__ import annotations

import os
import threading

import wat

import wasmudf
from wasmudf import _native
from wasmudf.adapters.sqlite_apsw import row_function


def test_the_expected_path_is_in_use():
    # A failed build of the extension must not pass unnoticed as a slow, working install.
    if os.environ.get("WASMUDF_PURE_PYTHON", "") not in ("", "0"):
        assert _native.speedups is None
    else:
        assert _native.speedups is not None, "wasmudf._speedups was not built"
        mod = wasmudf.load(wat.counter("count"))
        assert type(row_function(mod.functions["count"])).__name__ == "RowCaller"


def test_row_function_uses_the_calling_threads_instance():
    mod = wasmudf.load(wat.counter("count"))
    count = row_function(mod.functions["count"])
    seen: list[int] = []

    def in_thread(calls: int) -> None:
        seen.extend(count(0) for _ in range(calls))

    assert [count(0), count(0)] == [1, 2]
    worker = threading.Thread(target=in_thread, args=(3,))
    worker.start()
    worker.join()
    assert seen == [1, 2, 3]  # its own instance, counting from the start
    assert count(0) == 3  # back on this thread: this thread's instance again


def test_duckdb_workers_keep_one_instance_each(monkeypatch):
    # DuckDB's workers are not Python threads: each GIL acquisition gives them a new Python
    # thread state, which must not cost a new instance (a store and an instantiation).
    import duckdb

    from wasmudf.instance import Instance

    module = wasmudf.load(wat.module(wat.ADD_I64, [wat.scalar("add_i64", ["int64", "int64"], "int64")]))
    created = []
    factory = module._pool._factory
    monkeypatch.setattr(module._pool, "_factory", lambda function=None: created.append(1) or factory(function))
    con = duckdb.connect()
    con.execute("SET threads = 4")
    wasmudf.register(con, module)
    for _ in range(3):
        total = con.execute("SELECT sum(add_i64(range, 1)) FROM range(2000000)").fetchall()[0][0]
        assert total == sum(range(2_000_000)) + 2_000_000
    # One per worker at most, not one per vector (the calling thread has the one load() made).
    assert len(created) <= 4
    assert all(isinstance(i, Instance) for i in module._pool._instances.values())


def test_a_python_threads_instance_goes_with_the_thread():
    module = wasmudf.load(wat.counter("count"))
    worker = threading.Thread(target=lambda: module.functions["count"]([0]))
    worker.start()
    worker.join()
    import gc

    gc.collect()
    assert worker.ident not in module._pool._instances
