"""One function, FizzBuzz, written in all four guest languages: identical results."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from references import fizzbuzz

IMPLEMENTATIONS = {
    "C": ("strings", "fizzbuzz_c"),
    "Zig": ("text", "fizzbuzz_zig"),
    "Rust": ("rust", "fizzbuzz_rs"),
    "AssemblyScript": ("assemblyscript", "fizzbuzz"),
}


def test_all_four_languages_agree(example_modules):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-100, 100), max_size=50))
    def check(values):
        values += [0, 15, -15, 2**63 - 1, -(2**63)]
        expected = [fizzbuzz(v) for v in values]
        for language, (module, name) in IMPLEMENTATIONS.items():
            got = example_modules[module].functions[name](values).to_pylist()
            assert got == expected, language

    check()


def test_the_table_functions_in_zig_and_rust_agree(example_modules):
    """The same table function through the Zig and Rust SDKs' table support: (n, word) rows."""
    import apsw

    import wasmudf

    for count in (0, 1, 15, 5000):
        expected = [(n, fizzbuzz(n)) for n in range(1, count + 1)]
        for module, name in (("text", "fizzbuzz_rows_zig"), ("rust", "fizzbuzz_rows_rs")):
            table = example_modules[module].functions[name](count, batch_rows=1024).read_all()
            assert list(zip(table.column("n").to_pylist(), table.column("word").to_pylist())) == expected, name
    con = apsw.Connection(":memory:")
    wasmudf.register(con, example_modules["text"])
    wasmudf.register(con, example_modules["rust"])
    got = con.execute(
        "SELECT z.n, z.word = r.word FROM fizzbuzz_rows_zig(100) z JOIN fizzbuzz_rows_rs(100) r USING (n)"
    ).fetchall()
    assert got == [(n, 1) for n in range(1, 101)]
