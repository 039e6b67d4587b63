"""The public surface, the example build, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT

import wasmudf
from wasmudf import cli


def test_all_is_honest():
    public = {n for n, v in vars(wasmudf).items() if not n.startswith("_") and callable(v)}
    assert public <= set(wasmudf.__all__), public - set(wasmudf.__all__)
    for name in wasmudf.__all__:
        assert hasattr(wasmudf, name), name


def test_every_error_derives_from_the_root():
    for name in wasmudf.__all__:
        obj = getattr(wasmudf, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, wasmudf.WasmUdfError), name


@pytest.mark.slow
def test_rebuilding_the_examples_gives_the_same_bytes(tmp_path):
    sys.path.insert(0, str(ROOT / "udfs"))
    import build as udfs_build

    for path in udfs_build.build_all(tmp_path):
        committed = ROOT / "udfs" / path.relative_to(tmp_path)
        assert path.read_bytes() == committed.read_bytes(), f"{committed} is stale: run python udfs/build.py"


def test_every_example_has_its_source_beside_it():
    for path in EXAMPLES.values():
        sources = [p for p in path.parent.iterdir() if p.suffix in (".c", ".zig", ".rs", ".ts")]
        assert sources, path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wasmudf", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("engine", ["duckdb", "sqlite"])
def test_cli_sql_prints_a_table(engine):
    proc = run_cli("sql", "--engine", engine, "SELECT slugify('Hello World') AS s, add_i64(40, 2) AS n")
    assert proc.returncode == 0, proc.stderr
    assert "| hello-world | 42 |" in proc.stdout
    assert "(1 row)" in proc.stdout


def test_cli_sql_json_and_db_file(tmp_path):
    db = tmp_path / "x.db"
    assert (
        run_cli("sql", "--engine", "sqlite", "--db", str(db), "CREATE TABLE t AS SELECT 3 AS v").returncode
        == 0
    )
    proc = run_cli(
        "sql", "--engine", "sqlite", "--db", str(db), "--json", "SELECT safe_div(v, 0) AS q, v FROM t"
    )
    assert json.loads(proc.stdout) == [{"q": None, "v": 3}]


def test_cli_sql_reports_errors_on_stderr():
    proc = run_cli("sql", "SELECT no_such_function(1)")
    assert proc.returncode == 1 and "no_such_function" in proc.stderr


def test_cli_inspect():
    proc = run_cli("inspect", "--json", str(EXAMPLES["numeric"]))
    info = json.loads(proc.stdout)
    assert info["sha256"] == wasmudf.load(EXAMPLES["numeric"]).sha256
    assert "haversine_km(float64, float64, float64, float64) -> float64" in [
        f["signature"] for f in info["functions"]
    ]
    assert info["imports"] == [] and "wasmudf_alloc" in info["exports"]
    text = run_cli("inspect", str(EXAMPLES["text"])).stdout
    assert "edit_distance(utf8, utf8) -> int64" in text and "sha256" in text


def test_cli_build(tmp_path):
    src = tmp_path / "twice.c"
    src.write_text(
        '#include "wasmudf.h"\nstatic double twice(double x) { return 2 * x; }\n'
        'WASMUDF_SCALAR(twice, float64, "2x", float64)\n'
    )
    out = tmp_path / "twice.wasm"
    proc = run_cli("build", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert wasmudf.load(out).functions["twice"]([1.5, None]).to_pylist() == [3.0, None]
    bad = tmp_path / "bad.c"
    bad.write_text("int oops(void) { return missing; }\n")
    proc = run_cli("build", str(bad), "-o", str(tmp_path / "bad.wasm"))
    assert proc.returncode == 1 and "compilation failed" in proc.stderr and "missing" in proc.stderr


def test_every_cli_command_is_documented():
    readme = "".join((ROOT / f).read_text() for f in ("README.md", "docs/abi.md", "docs/operators.md"))
    for command in cli.parser()._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
        assert f"wasmudf {command}" in readme, command


def test_every_abi_export_is_documented():
    doc = (ROOT / "docs" / "abi.md").read_text()
    for name in ("wasmudf_abi_version", "wasmudf_alloc", "wasmudf_reset", "wasmudf_error", "_initialize"):
        assert f"`{name}" in doc, name


def test_examples_module_paths_exist():
    from wasmudf.examples import example_paths

    assert [p.name for p in example_paths()] == [p.name for p in EXAMPLES.values()]
    assert all(Path(p).is_file() for p in example_paths())
