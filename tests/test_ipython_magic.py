"""The %%wasmudf cell magic, driven through a real IPython shell."""

from __future__ import annotations

import pytest
from IPython.testing.globalipapp import start_ipython

from wasmudf import BuildError
from wasmudf import ipython as magic

CELL = """#include "wasmudf.h"
static double fahrenheit(double c) { return c * 9 / 5 + 32; }
WASMUDF_SCALAR(fahrenheit, float64, "Celsius to Fahrenheit", float64)
"""


@pytest.fixture(scope="module")
def shell():
    ip = start_ipython()
    ip.run_line_magic("load_ext", "wasmudf.ipython")
    return ip


def test_a_c_cell_is_compiled_once_and_registered(shell, capsys, tmp_path, monkeypatch):
    import duckdb

    monkeypatch.setenv("WASMUDF_CACHE_DIR", str(tmp_path))
    shell.user_ns["con"] = duckdb.connect()
    shell.run_cell_magic("wasmudf", "--lang c --con con", CELL)
    assert "compiled: 1 function(s) bound to `udf` and registered fahrenheit on con" in capsys.readouterr().out
    assert shell.user_ns["con"].execute("SELECT fahrenheit(100.0)").fetchall() == [(212.0,)]
    # The same cell again comes from the cache, and replaces the function on the connection.
    shell.run_cell_magic("wasmudf", "--lang c --con con --as again", CELL)
    assert "from the cache" in capsys.readouterr().out
    assert shell.user_ns["again"].functions["fahrenheit"]([0.0]).to_pylist() == [32.0]
    assert len(list((tmp_path / "cells").glob("*.wasm"))) == 1


def test_a_zig_cell(shell, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WASMUDF_CACHE_DIR", str(tmp_path))
    cell = (
        'const udf = @import("wasmudf");\n'
        "fn twice(x: i64) i64 { return x *% 2; }\n"
        'comptime { udf.module(.{ udf.scalar("twice", twice, .{}) }); }\n'
    )
    shell.run_cell_magic("wasmudf", "--lang zig --as z", cell)
    assert shell.user_ns["z"].functions["twice"]([21]).to_pylist() == [42]


def test_a_broken_cell_reports_the_compiler_error(shell, tmp_path, monkeypatch):
    monkeypatch.setenv("WASMUDF_CACHE_DIR", str(tmp_path))
    with pytest.raises(BuildError, match="compilation failed"):
        shell.run_cell_magic("wasmudf", "--lang c", "this is not C")
    assert list(tmp_path.glob("cells/*.wasm")) == []


def test_the_cache_key_changes_with_the_source():
    assert magic.cell_key(CELL, "c") != magic.cell_key(CELL + "\n", "c")
    assert magic.cell_key(CELL, "c") != magic.cell_key(CELL, "zig")
