"""Peak memory of the DuckDB 10M-row query, Wasm UDF against the pyarrow arrow UDF, each in
its own process (the VmHWM of a fresh interpreter)."""

from __future__ import annotations

import pytest
from conftest import module_path, peak_memory

SCRIPT = """
import duckdb, pyarrow.compute as pc, wasmudf
con = duckdb.connect()
con.execute("SET threads = 1")
con.execute("CREATE TABLE t AS SELECT range AS a, range * 2 AS b FROM range(10000000)")
wasmudf.register(con, sys.argv[2])
con.create_function("pa_add", lambda a, b: pc.add(a, b), ["BIGINT", "BIGINT"], "BIGINT", type="arrow")
before = peak_kib()
expr = {"wasm": "add_i64(a, b)", "pyarrow_udf": "pa_add(a, b)"}[sys.argv[1]]
con.execute(f"SELECT sum({expr}) FROM t").fetchall()
after = peak_kib()
print(json.dumps({"before_kib": before, "peak_kib": after}))
"""


@pytest.mark.parametrize("impl", ["wasm", "pyarrow_udf"])
def test_peak_memory_of_the_duckdb_query(benchmark, impl):
    benchmark.group = "peak memory (KiB, VmHWM) of DuckDB sum(add(a, b)), 10,000,000 rows"

    def run():
        return peak_memory(SCRIPT, impl, str(module_path("numeric")))

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result, rows=10_000_000, memory=True)
    assert result["peak_kib"] >= result["before_kib"]
