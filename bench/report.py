"""Run the benchmark suite once and write the report: ``python bench/report.py``.

Writes, into ``bench/results/``: ``benchmark.json`` (pytest-benchmark's raw data),
``RESULTS.md`` (a table of medians and ratios per group, the targets with their measured
ratios, and where the time goes per DuckDB vector) and ``ns_per_row.png`` (ns/row by rows
for the direct kernels). Every number in one report comes from the same run.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import timeit
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
THREADS_GROUP = "DuckDB sum(f(a, b)) by threads, 10,000,000 rows"


def run_suite(raw: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", str(HERE), "--benchmark-only", f"--benchmark-json={raw}", "-q"]
    subprocess.run(cmd, check=True, cwd=HERE.parent)


def load(raw: Path) -> dict[str, dict[str, dict]]:
    """group → implementation → {median, rows, extra}."""
    data = json.loads(raw.read_text())
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for b in data["benchmarks"]:
        impl = b["param"] if b.get("param") else b["name"]
        params = b.get("params") or {}
        impl = (
            (params.get("impl") and "threads" in params and f"{params['impl']}, threads={params['threads']}")
            or params.get("impl")
            or (params.get("cache") and f"{params['cache']} cache")
            or params.get("limits")
            or impl
        )
        groups[b["group"]][str(impl)] = {"median": b["stats"]["median"], "rows": b["extra_info"].get("rows", 1), "extra": b["extra_info"]}
    return groups


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def table(groups: dict[str, dict[str, dict]]) -> list[str]:
    out = []
    for group in sorted(groups):
        impls = groups[group]
        memory = any(v["extra"].get("memory") for v in impls.values())
        out += [f"### {group}", ""]
        if memory:
            out += ["| implementation | peak RSS | × wasm |", "|---|---|---|"]
            base = impls.get("wasm", {}).get("extra", {}).get("peak_kib")
            for impl, v in sorted(impls.items(), key=lambda kv: kv[1]["extra"]["peak_kib"]):
                kib = v["extra"]["peak_kib"]
                out.append(f"| {impl} | {kib / 1024:.0f} MiB | {kib / base:.2f} |" if base else f"| {impl} | {kib / 1024:.0f} MiB | |")
            out.append("")
            continue
        wasm = next((impl for impl in sorted(impls) if impl.startswith("wasm")), None)
        base = impls[wasm]["median"] if wasm else None
        out += [f"| implementation | median | ns/row | × {wasm or 'wasm'} |", "|---|---|---|---|"]
        for impl, v in sorted(impls.items(), key=lambda kv: kv[1]["median"]):
            ratio = f"{v['median'] / base:.2f}" if base else ""
            per_row = v["median"] / v["rows"] * 1e9
            out.append(f"| {impl} | {fmt_time(v['median'])} | {per_row:,.1f} | {ratio} |")
        out.append("")
    return out


def ratio(groups, group: str, a: str, b: str) -> float | None:
    try:
        return groups[group][a]["median"] / groups[group][b]["median"]
    except KeyError:
        return None


def targets(groups) -> list[str]:
    g = groups
    rows = []

    def add(what: str, value: float | None, goal: str, ok: bool | None) -> None:
        shown = "not measured" if value is None else f"{value:.3g}"
        verdict = "" if ok is None else ("met" if ok else "**missed**")
        rows.append(f"| {what} | {shown} | {goal} | {verdict} |")

    r = ratio(g, "SQLite sum(add(a, b)), 1,000,000 rows", "wasm", "python_udf")
    add("SQLite per-row add_i64, wasm / Python UDF", r, "≤ 1.0", r is not None and r <= 1.0)
    add10m = "DuckDB sum(add(a, b)), 10,000,000 rows"
    r = ratio(g, add10m, "wasm", "pyarrow_udf")
    add("DuckDB add_i64 10M natively, wasm / pyarrow arrow UDF (threads=1)", r, "≤ 0.35", r is not None and r <= 0.35)
    r = ratio(g, add10m, "wasm", "builtin")
    add("DuckDB add_i64 10M natively, wasm / built-in a + b (threads=1)", r, "≤ 4", r is not None and r <= 4)
    r = ratio(g, add10m, "wasm_python", "pyarrow_udf")
    add("for comparison: DuckDB's Python path, wasm / pyarrow arrow UDF", r, "(reported)", None)
    r = ratio(g, THREADS_GROUP, "wasm, threads=2", "wasm, threads=1")
    add("DuckDB add_i64 10M natively, threads=2 / threads=1", r, "≤ 0.75", r is not None and r <= 0.75)
    for impl in ("wasm", "wasm_python", "pyarrow_udf", "identity_udf"):
        for threads in (1, 2, 4):
            v = g.get(THREADS_GROUP, {}).get(f"{impl}, threads={threads}")
            if v:
                add(f"{impl}, threads={threads}, million rows/s", v["rows"] / v["median"] / 1e6, "(reported)", None)
    r = ratio(g, "DuckDB geo_mean(x) GROUP BY g (100 groups), 1,000,000 rows", "wasm", "builtin")
    add("DuckDB geo_mean GROUP BY natively, wasm / built-in geomean", r, "≤ 2.5", r is not None and r <= 2.5)
    r = ratio(g, "DuckDB geo_mean(x) OVER (ORDER BY i ROWS 100 PRECEDING), 200,000 rows", "wasm_python", "wasm")
    add("DuckDB geo_mean window, Python path (macro) / native", r, "≥ 10", r is not None and r >= 10)
    r = ratio(g, "DuckDB geo_mean(x) OVER (ORDER BY i ROWS UNBOUNDED PRECEDING), 200,000 rows", "wasm", "builtin")
    add("DuckDB geo_mean ROWS UNBOUNDED PRECEDING natively, wasm / built-in geomean", r, "(reported)", None)
    load = g.get("cold start: loading wasmudf's DuckDB extension into a new database (once per database)", {})
    for route, v in sorted(load.items()):
        add(f"DuckDB {route}, ms", v["median"] * 1e3, "(reported)", None)
    r = ratio(g, "add_i64 direct, 1,000,000 rows", "wasm", "pyarrow")
    add("direct add_i64 1M, wasm / pyarrow.compute.add", r, "≤ 3", r is not None and r <= 3)
    r = ratio(g, "levenshtein (short strings) direct, 1,000,000 rows", "wasm", "native")
    add("direct Levenshtein 1M, wasm / native gcc build", r, "≤ 1.5", r is not None and r <= 1.5)
    r = ratio(g, "per-call overhead: the smallest call", "extism_call", "wasm_row_call")
    add("per-call overhead, Extism / wasmudf per-row call", r, "≥ 10", r is not None and r >= 10)
    r = ratio(g, "per-call overhead: the smallest call", "extism_call", "wasm_batch_call")
    add("per-call overhead, Extism / wasmudf one-row batch call", r, "≥ 10", r is not None and r >= 10)
    r = ratio(g, "add_i64 direct, 1,000,000 rows", "extism", "wasm")
    add("two 8 MB columns in, one out (add_i64 1M), Extism / wasm", r, "≥ 3", r is not None and r >= 3)
    for engine in ("duckdb", "duckdb_python", "sqlite"):
        cold = g.get(f"cold start: load a cached module and register its 8 functions on a fresh {engine} connection", {})
        for cache, v in sorted(cold.items()):
            goal = 2e-3 if engine == "duckdb" else 1e-3  # natively: 2 ms (the target)
            add(f"load a cached module ({cache}) + register 8 functions, {engine}, ms", v["median"] * 1e3,
                f"< {goal * 1e3:g} ms", v["median"] < goal)
    first = g.get("cold start: first call on a new thread (new store and instance)", {})
    for v in first.values():
        t = v["extra"].get("first_call_median_s", v["median"])
        add("first call on a new thread, µs", t * 1e6, "< 200 µs", t < 200e-6)
    r = ratio(g, "one add_i64 call: wasmudf's per-row call vs a process per call", "subprocess_per_call", "wasm_sqlite_row")
    add("one call: process-per-call sandbox / wasmudf", r, "(reported)", None)
    r = ratio(g, "DuckDB sum(add_i64(a, b)), default limits vs none, 10,000,000 rows", "default", "unlimited")
    add("default limits / no limits, DuckDB add_i64 10M", r, "≤ 1.3", r is not None and r <= 1.3)
    lev, fold = "SQLite sum(lev_distance(a, b)), 20,000 rows", "SQLite count(ascii_fold(a)), 20,000 rows"
    r = ratio(g, lev, "wasm", "python_udf")
    add("SQLite lev_distance per row, wasm / pure-Python Levenshtein UDF", r, "≤ 0.1", r is not None and r <= 0.1)
    per_row = g.get(fold, {}).get("wasm")
    if per_row:
        us = per_row["median"] / per_row["rows"] * 1e6
        add("SQLite ascii_fold per row, µs", us, "≤ 3 µs", us <= 3)
    r = ratio(g, fold, "wasm", "python_udf_upper")
    add("SQLite ascii_fold, wasm / Python UDF s.upper()", r, "≤ 3", r is not None and r <= 3)
    r = ratio(g, "SQLite longest(s), 1,000,000 rows", "wasm", "python_aggregate")
    add("SQLite text aggregate longest 1M, wasm / Python aggregate", r, "≤ 1.0", r is not None and r <= 1.0)
    for impl, what in (("wasm_sqlite3", "Python's sqlite3"), ("wasm_pure_python", "the pure-Python path")):
        v = g.get(fold, {}).get(impl)
        if v:
            add(f"SQLite ascii_fold per row on {what}, µs", v["median"] / v["rows"] * 1e6, "(reported)", None)
    mem = g.get("peak memory (KiB, VmHWM) of DuckDB sum(add(a, b)), 10,000,000 rows", {})
    if "wasm" in mem and "pyarrow_udf" in mem:
        r = mem["wasm"]["extra"]["peak_kib"] / mem["pyarrow_udf"]["extra"]["peak_kib"]
        add("peak memory, DuckDB 10M query, wasm / pyarrow UDF", r, "≤ 1.2", r <= 1.2)
    return ["| target | measured | goal | |", "|---|---|---|---|", *rows, ""]


def vector_profile(groups) -> list[str]:
    """Where one DuckDB vector (2048 rows of add_i64) goes, measured piece by piece; the
    engine's own share comes from the identity arrow UDF of the threads group."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    import wasmudf

    fn = wasmudf.load(HERE.parent / "udfs" / "numeric" / "numeric.wasm").functions["add_i64"]
    a = pa.array(np.arange(2048, dtype=np.int64))
    inst = fn.pool.get()
    core = inst.core
    if core is None:
        return ["(the C accelerator is not built: no per-vector profile)", ""]
    func = inst.func_addr("add_i64")
    cols = [(3, 0, 0, None, a.buffers()[1], None)] * 2
    out = pa.allocate_buffer(2048 * 8)

    def best(stmt) -> float:
        return min(timeit.repeat(stmt, number=2000, repeat=5)) / 2000

    parts = {
        "whole call `fn(a, a)`": best(lambda: fn(a, a)),
        "checks that pick the direct path, with the column descriptions": best(
            lambda: fn._direct_columns((a, a))
        ),
        "C: copy in, Wasm add, check, copy out (`Core.call_batch`)": best(
            lambda: core.call_batch(func, "add_i64", 2048, 3, -1, pa.allocate_buffer, cols)
        ),
        "building the result (`pyarrow.Array.from_buffers`)": best(lambda: pa.Array.from_buffers(pa.int64(), 2048, [None, out])),
        "for comparison: `pyarrow.compute.add(a, b)`": best(lambda: pc.add(a, a)),
    }
    identity = groups.get(THREADS_GROUP, {}).get("identity_udf, threads=1")
    if identity:
        vectors = identity["rows"] / 2048
        parts["DuckDB's own cost of one Python UDF call (an identity arrow UDF, per vector)"] = (
            identity["median"] / vectors
        )
    lines = ["| part | µs per 2048-row vector |", "|---|---|"]
    lines += [f"| {k} | {v * 1e6:.2f} |" for k, v in parts.items()]
    return lines + [""]


def chart(groups, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kernels = ["add_i64 direct", "haversine_km direct", "levenshtein (short strings) direct",
               "crc32 of 1 KiB blobs direct", "geo_mean aggregate direct"]
    fig, axes = plt.subplots(1, len(kernels), figsize=(4 * len(kernels), 3.6))
    for ax, kernel in zip(axes, kernels):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for group, impls in groups.items():
            if group.startswith(kernel + ","):
                for impl, v in impls.items():
                    series[impl].append((v["rows"], v["median"] / v["rows"] * 1e9))
        for impl, points in sorted(series.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=impl)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(kernel.replace(" direct", ""), fontsize=10)
        ax.set_xlabel("rows")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("ns per row (median)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    raw = RESULTS / "benchmark.json"
    if "--reuse" not in sys.argv:
        run_suite(raw)
    groups = load(raw)
    chart(groups, RESULTS / "ns_per_row.png")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `python bench/report.py` on {when} ({platform.machine()}, {platform.python_version()}; "
        "a shared 2-core machine, so read ratios within a group, which were measured side by side).",
        "",
        "![ns per row by rows](ns_per_row.png)",
        "",
        "## Targets",
        "",
        *targets(groups),
        "## Where the time goes in one DuckDB vector",
        "",
        *vector_profile(groups),
        "## Every group",
        "",
        *table(groups),
    ]
    (RESULTS / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'RESULTS.md'} and {RESULTS / 'ns_per_row.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
