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
