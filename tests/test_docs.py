"""Every example in docs/first-udf.md builds and answers as the guide says."""

from __future__ import annotations

import re

import duckdb
import pytest
from conftest import ROOT

import wasmudf
from wasmudf.build import build

GUIDE = (ROOT / "docs" / "first-udf.md").read_text()
BLOCKS = re.findall(r"```(c|zig|rust|ts)\n(.*?)```", GUIDE, flags=re.S)
SUFFIX = {"c": ".c", "zig": ".zig", "rust": ".rs", "ts": ".ts"}


def test_the_guide_covers_four_languages():
    assert sorted(lang for lang, _ in BLOCKS) == ["c", "rust", "ts", "zig"]


@pytest.mark.parametrize(("lang", "source"), BLOCKS, ids=[lang for lang, _ in BLOCKS])
def test_guide_example_builds_and_answers(lang, source, tmp_path):
    src = tmp_path / f"fahrenheit{SUFFIX[lang]}"
    src.write_text(source)
    out = tmp_path / "fahrenheit.wasm"
    build([src], out)
    con = duckdb.connect()
    assert wasmudf.register(con, out) == ["to_fahrenheit"]
    assert con.execute("SELECT to_fahrenheit(100.0)").fetchall() == [(212.0,)]


def test_the_readmes_table_of_examples_lists_every_function(example_modules):
    rows = re.findall(r"^\| `udfs/(\w+)` \([^)]*\) \| (.*) \|$", (ROOT / "README.md").read_text(), re.M)
    listed = {module: set(re.findall(r"`(\w+)`", names)) for module, names in rows}
    assert set(listed) == set(example_modules)
    for module, names in listed.items():
        assert names == set(example_modules[module].functions), module


def test_dict_secret_store_is_documented():
    docs = "".join((ROOT / f).read_text() for f in ("README.md", "docs/security.md"))
    assert "DictSecretStore" in docs


def test_the_readmes_python_example_runs(monkeypatch):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Using it from Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)  # its paths are the checkout's
    names: dict = {}
    exec(compile(block, "README.md", "exec"), names)  # noqa: S102 - the project's own docs
    con, mod, stats = names["con"], names["mod"], names["stats"]
    assert con.sql("SELECT slugify(title) FROM posts").fetchall() == [("creme-brulee-a-recipe",)]
    assert mod.functions["add_i64"]([1, 2], [10, None]).to_pylist() == [11, None]
    assert stats.functions["median_exact"].aggregate([3.0, 1.0, 2.0]) == 2.0
    assert con.sql("SELECT city, median_exact(price) FROM sales GROUP BY city ORDER BY city").fetchall() == [
        ("Oslo", 25.0),
        ("Rome", 5.0),
    ]
