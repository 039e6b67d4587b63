"""Text and blob rows on SQLite: the C row path (registered with SQLite itself) against the
Python row path and the pure-Python references, row by row; NULL rows of `called` functions;
what a guest's text result must be (UTF-8, within bounds and limits); text aggregates packed
by the accelerator's RowBuffer. On the pure-Python path the same tests check apsw's."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import apsw
import pytest
from conftest import EXAMPLES
from engines import outcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from references import REFERENCES
from test_aggregates import char_total, common_prefix, longest

import wasmudf
from wasmudf import _native
from wasmudf.adapters import sqlite_apsw

NATIVE = _native.speedups is not None

# A module with what the examples lack: `called` text and blob functions, a strict one that
# returns NULL, and guests that break the rules for a text result.
SOURCE = r"""
#include "wasmudf.h"

static wasmudf_str tag(wasmudf_nullable_utf8 s) {
    if (s.is_null) return wasmudf_str_of("null", 4);
    char *out = wasmudf_str_alloc(s.value.len + 2);
    out[0] = '<';
    __builtin_memcpy(out + 1, s.value.ptr, s.value.len);
    out[s.value.len + 1] = '>';
    return wasmudf_str_of(out, s.value.len + 2);
}
WASMUDF_SCALAR_CALLED(tag, utf8, "<s>, or null for NULL", utf8)

static wasmudf_bytes reversed(wasmudf_nullable_binary b) {
    if (b.is_null) { wasmudf_set_null(); return wasmudf_bytes_of(0, 0); }
    uint8_t *out = (uint8_t *)wasmudf_str_alloc(b.value.len);
    for (uint32_t i = 0; i < b.value.len; i++) out[i] = b.value.ptr[b.value.len - 1 - i];
    return wasmudf_bytes_of(out, b.value.len);
}
WASMUDF_SCALAR_CALLED(reversed, binary, "the bytes backwards", binary)

static wasmudf_str empty_is_null(wasmudf_str s) {
    if (s.len == 0) wasmudf_set_null();
    return s;
}
WASMUDF_SCALAR(empty_is_null, utf8, "NULL for the empty string", utf8)

static wasmudf_str not_utf8(int64_t n) {
    char *out = wasmudf_str_alloc(3);
    out[0] = 'a'; out[1] = (char)0xC3; out[2] = (char)(n ? 0x28 : 0xA9);  /* n = 0: valid "aé" */
    return wasmudf_str_of(out, 3);
}
WASMUDF_SCALAR(not_utf8, utf8, "invalid UTF-8 unless n is 0", int64)

static wasmudf_str big(int64_t n) {
    char *out = wasmudf_str_alloc((uint32_t)n);
    __builtin_memset(out, 'x', (size_t)n);
    return wasmudf_str_of(out, (uint32_t)n);
}
WASMUDF_SCALAR(big, utf8, "n bytes of x", int64)
"""


@pytest.fixture(scope="module")
def rules_wasm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wasmudf.build import build

    folder = tmp_path_factory.mktemp("rules")
    (folder / "rules.c").write_text(SOURCE)
    build([folder / "rules.c"], folder / "rules.wasm")
    return folder / "rules.wasm"


def _connections(module: Any) -> tuple[apsw.Connection, apsw.Connection]:
    """The module on two connections: as register() puts it (natively, with the accelerator)
    and through the Python row path (``call_row``), the reference."""
    native = apsw.Connection(":memory:")
    wasmudf.register(native, module)
    python = apsw.Connection(":memory:")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_apsw, "row_function", lambda fn, interrupted=None: functools.partial(fn.call_row))
        patch.setattr(sqlite_apsw, "PACK_ROWS", False)
        wasmudf.register(python, module)
    return native, python


@pytest.fixture(scope="module")
def examples() -> tuple[apsw.Connection, apsw.Connection]:
    native, python = _connections(wasmudf.load(EXAMPLES["text"]))
    for con in (native, python):
        for name in ("strings", "binary", "rust"):
            wasmudf.register(con, EXAMPLES[name]) if con is native else _register_python(con, EXAMPLES[name])
    return native, python


def _register_python(con: apsw.Connection, path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_apsw, "row_function", lambda fn, interrupted=None: functools.partial(fn.call_row))
        patch.setattr(sqlite_apsw, "PACK_ROWS", False)
        wasmudf.register(con, path)


@pytest.fixture(scope="module")
def rules(rules_wasm: Path) -> tuple[apsw.Connection, apsw.Connection]:
    return _connections(wasmudf.load(rules_wasm, limits=wasmudf.Limits(output_bytes=1000)))


TEXT = st.text(max_size=40)  # any Unicode, embedded NUL and the empty string included
ANY_VALUE = st.one_of(st.none(), TEXT, st.binary(max_size=40), st.integers(-(2**63), 2**63 - 1), st.floats())
TEXT_CALLS = [
    ("ascii_fold", 1, TEXT),
    ("slugify", 1, TEXT),
    ("luhn_check", 1, TEXT),
    ("title_case", 1, TEXT),
    ("lev_distance", 2, TEXT),
    ("edit_distance", 2, TEXT),
    ("crc32", 1, st.binary(max_size=64)),
    ("hex_lower", 1, st.binary(max_size=64)),
    ("xor_bytes", 2, st.binary(max_size=16)),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=st.sampled_from(TEXT_CALLS), data=st.data())
def test_text_rows_match_the_python_path_and_the_references(examples: Any, call: Any, data: Any) -> None:
    native, python = examples
    name, arity, values_of = call
    values = tuple(data.draw(values_of) for _ in range(arity))
    sql = f"SELECT {name}({', '.join('?' * arity)})"
    got = outcome(native, sql, values)
    assert got == outcome(python, sql, values)
    want = REFERENCES[name](*values)
    assert got == ("ok", int(want) if isinstance(want, bool) else want), (name, values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=st.sampled_from(TEXT_CALLS), data=st.data())
def test_any_value_gets_the_same_answer_or_error_on_both_paths(examples: Any, call: Any, data: Any) -> None:
    # NULLs, wrong types (numbers and blobs for text, text for blobs) included.
    native, python = examples
    name, arity, _ = call
    values = tuple(data.draw(ANY_VALUE) for _ in range(arity))
    sql = f"SELECT {name}({', '.join('?' * arity)})"
    assert outcome(native, sql, values) == outcome(python, sql, values)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.none(), TEXT, st.binary(max_size=30)))
def test_null_rows_of_called_functions_and_null_results(rules: Any, value: Any) -> None:
    native, python = rules
    wrong = ("error", "ArgumentTypeError")
    is_text, is_blob = isinstance(value, str), isinstance(value, bytes)
    for sql, want in (
        ("SELECT tag(?)", ("ok", "null") if value is None else ("ok", f"<{value}>") if is_text else wrong),
        ("SELECT reversed(?)", ("ok", None) if value is None else ("ok", value[::-1]) if is_blob else wrong),
        ("SELECT empty_is_null(?)", ("ok", value or None) if not is_blob else wrong),
    ):
        got = outcome(native, sql, (value,))
        assert got == outcome(python, sql, (value,))
        assert got == want, (sql, value)


def test_a_guest_returning_invalid_utf8_is_refused_and_the_connection_survives(rules: Any) -> None:
    for con in rules:
        with pytest.raises(wasmudf.InvalidGuestOutput, match=r"`not_utf8` .* utf8 result is not valid UTF-8"):
            con.execute("SELECT not_utf8(1)").fetchall()
        assert con.execute("SELECT not_utf8(0), tag('x')").fetchall() == [("a\u00e9", "<x>")]


def test_a_text_result_over_the_output_limit_is_refused(rules: Any) -> None:
    for con in rules:
        assert con.execute("SELECT length(big(1000))").fetchall() == [(1000,)]
        with pytest.raises(wasmudf.OutputLimitExceeded, match=r"`big` .* 1001 bytes .* Limits.output_bytes = 1000"):
            con.execute("SELECT big(1001)").fetchall()
        assert con.execute("SELECT big(3)").fetchall() == [("xxx",)]


def test_many_rows_with_results_of_every_size_reuse_the_arena_safely(rules: Any) -> None:
    # Results pile up in the guest's arena between resets; each row still gets its own.
    native, _ = rules
    sizes = [(i * 37) % 1000 for i in range(5000)]
    native.execute("CREATE TABLE sizes (n INTEGER)")
    native.executemany("INSERT INTO sizes VALUES (?)", [(n,) for n in sizes])
    got = native.execute("SELECT length(big(n)), big(n) = substr(printf('%.*c', n, 'x'), 1, n) FROM sizes").fetchall()
    assert got == [(n, 1) for n in sizes]


def test_invalid_utf8_text_in_the_database_never_reaches_the_guest(examples: Any) -> None:
    native, _ = examples
    sql = "SELECT ascii_fold(CAST(x'61ff62' AS TEXT))"  # SQLite does not check text
    if NATIVE:
        # The guest is promised UTF-8: the native path decodes such a row leniently.
        assert native.execute(sql).fetchall() == [(REFERENCES["ascii_fold"]("a\ufffdb"),)]
    else:
        # apsw calls the Python function, and refuses to decode the text itself.
        with pytest.raises(UnicodeDecodeError):
            native.execute(sql).fetchall()


@pytest.mark.parametrize("packed", [True, False])
def test_text_aggregates_match_references_packed_or_not(packed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_apsw, "PACK_ROWS", packed)
    con = apsw.Connection(":memory:")
    wasmudf.register(con, EXAMPLES["text"])
    wasmudf.register(con, EXAMPLES["stats"])
    rows = [(i % 7, None if i % 11 == 0 else f"w{'é' * (i % 5)}{i % 13}\x00z"[: 1 + i % 9]) for i in range(20000)]
    con.execute("CREATE TABLE t (g INTEGER, s TEXT)")
    with con:
        con.executemany("INSERT INTO t VALUES (?, ?)", rows)
    got = con.execute(
        "SELECT g, longest(s), char_total(s), common_prefix(s) FROM t GROUP BY g ORDER BY g"
    ).fetchall()
    for g, longest_, chars, prefix in got:
        values = [s for k, s in rows if k == g and s is not None]
        assert (longest_, chars, prefix) == (longest(values), char_total(values), common_prefix(values))


def test_text_rows_never_reach_python_on_the_native_path(rules_wasm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = wasmudf.load(rules_wasm)
    python_rows: list[tuple] = []
    for fn in module.functions.values():
        original = fn.call_row
        monkeypatch.setattr(fn, "call_row", lambda *v, _f=original, **kw: python_rows.append(v) or _f(*v, **kw))
    con = apsw.Connection(":memory:")
    wasmudf.register(con, module)
    con.execute("CREATE TABLE t (s TEXT, b BLOB)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [("é\x00x", b"\x00\x01"), (None, None), ("", b"")] * 100)
    got = con.execute("SELECT tag(s), reversed(b), empty_is_null(s) FROM t").fetchall()
    assert got == [("<é\x00x>", b"\x01\x00", "é\x00x"), ("null", None, None), ("<>", b"", None)] * 100
    # Natively every row above stays in C; the Python path takes each row itself.
    assert len(python_rows) == (0 if NATIVE else 900)
