from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Compiled-module cache for the test session only, so tests never touch ~/.cache.
os.environ.setdefault("WASMUDF_CACHE_DIR", tempfile.mkdtemp(prefix="wasmudf-test-cache-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {name: ROOT / "udfs" / name / f"{name}.wasm" for name in ("numeric", "text", "binary", "stats", "strings", "rust", "assemblyscript", "similarity", "tables", "dates", "money", "nested")}


@pytest.fixture(scope="session")
def example_modules():
    import wasmudf

    return {name: wasmudf.load(path) for name, path in EXAMPLES.items()}


def _duckdb_paths() -> list[str]:
    """DuckDB's native path and its Python path; one name when the native path is not built
    (the pure-Python run): "duckdb" is the Python path then."""
    from wasmudf.adapters.duckdb_native import unavailable_reason

    return ["duckdb"] if unavailable_reason() else ["duckdb", "duckdb_python"]


@pytest.fixture(params=[*_duckdb_paths(), "sqlite"])
def engine(request):
    """An engine name; with `connect` below, one conformance suite runs on DuckDB's two paths
    (native and Python UDFs) and SQLite."""
    return request.param


@pytest.fixture(params=["direct", *_duckdb_paths(), "sqlite", "sqlite3"])
def conformance_engine(request):
    """Every way to run a function: direct calls on Arrow, DuckDB natively and through its
    Python UDFs, SQLite through apsw and through Python's sqlite3 (what each cannot do:
    engines.ENGINE_TRAITS)."""
    return request.param


def connect(engine: str):
    if engine == "duckdb":
        import duckdb

        return duckdb.connect()
    if engine == "duckdb_python":
        from engines import duckdb_python_path

        return duckdb_python_path()
    if engine == "sqlite3":
        import sqlite3

        return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    import apsw

    return apsw.Connection(":memory:")


@pytest.fixture
def conn(engine):
    con = connect(engine)
    yield con
    con.close()


def build_functions(tmp_path: Path, filename: str, source: str) -> dict:
    """Write ``source`` to ``filename`` (its suffix picks the SDK), build it with ``wasmudf
    build`` and load it: the module's functions."""
    import wasmudf
    from wasmudf.build import build

    path = tmp_path / filename
    path.write_text(source)
    build([path], tmp_path / "built.wasm")
    return wasmudf.load(tmp_path / "built.wasm").functions
