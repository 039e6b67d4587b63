"""The rough edges a new user hits first: the build's options and warnings, names that clash
with the engines' built-ins, the CLI's errors, and the text of a trap."""

from __future__ import annotations

import subprocess
import sys

import pytest
import wat
from conftest import EXAMPLES, ROOT
from engines import duckdb_python_path, guest_error, missing_function_error

import wasmudf
from wasmudf.build import build


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wasmudf", *args], capture_output=True, text=True, cwd=ROOT)


UDF = """
#include "wasmudf.h"
#include "scale.h"
/* a comment with a /* inside it: a warning, not an error */
static double scaled(double x) { return x * SCALE * FACTOR; }
WASMUDF_SCALAR(scaled, float64, "x times SCALE times FACTOR", float64)
"""


def test_build_takes_include_dirs_and_defines_and_warnings_do_not_fail_it(tmp_path):
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "scale.h").write_text("#define SCALE 3.0\n")
    (tmp_path / "scaled.c").write_text(UDF)
    out = tmp_path / "scaled.wasm"
    proc = run_cli("build", str(tmp_path / "scaled.c"), "-I", str(tmp_path / "inc"), "-D", "FACTOR=2", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wasmudf: warning: the compiler warned" in proc.stderr and "-Wcomment" in proc.stderr
    assert f"wrote {out}: 1 function (scaled)" in proc.stdout  # one function, not "1 functions"
    assert wasmudf.load(out).functions["scaled"]([1.5]).to_pylist() == [9.0]
    with pytest.warns(wasmudf.BuildWarning, match="the compiler warned"):  # (zig caches: a new define)
        build([tmp_path / "scaled.c"], out, include_dirs=[tmp_path / "inc"], defines=["FACTOR=4"])
    # The project's own examples are held to no warnings at all.
    with pytest.raises(wasmudf.BuildError, match="-Werror,-Wcomment"):
        build([tmp_path / "scaled.c"], out, include_dirs=[tmp_path / "inc"], defines=["FACTOR=2"], strict=True)
    # Without the define the build fails, naming the missing name.
    proc = run_cli("build", str(tmp_path / "scaled.c"), "-I", str(tmp_path / "inc"), "-o", str(out))
    assert proc.returncode == 1 and "FACTOR" in proc.stderr


CLASH = """
#include "wasmudf.h"
static int64_t upper(int64_t x) { return x; }
WASMUDF_SCALAR(upper, int64, "named like a built-in", int64)
static int64_t fine(int64_t x) { return x; }
WASMUDF_SCALAR(fine, int64, "not", int64)
"""


def test_names_of_builtins_are_warned_about_at_build_and_inspect_and_refused_with_a_way_out(tmp_path):
    (tmp_path / "clash.c").write_text(CLASH)
    out = tmp_path / "clash.wasm"
    proc = run_cli("build", str(tmp_path / "clash.c"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "`upper` is also a built-in SQLite and DuckDB function" in proc.stderr
    assert "`fine`" not in proc.stderr
    assert "warning: `upper` is also a built-in" in run_cli("inspect", str(out)).stdout
    import apsw

    with pytest.raises(wasmudf.RegistrationError, match=r"`upper` is a built-in sqlite function .* rename .*`udf_upper`"):
        wasmudf.register(apsw.Connection(":memory:"), out)


def test_inspect_of_a_missing_file_is_a_clear_error():
    proc = run_cli("inspect", "nope.wasm")
    assert proc.returncode == 1
    assert "cannot read nope.wasm: No such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_inspect_into_a_closed_pipe_ends_quietly():
    # `wasmudf inspect x.wasm | head -1`: the reader leaves after one line.
    cli = subprocess.Popen(
        [sys.executable, "-m", "wasmudf", "inspect", str(EXAMPLES["text"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        bufsize=0,
    )
    cli.stdout.read(10)
    cli.stdout.close()
    _, err = cli.communicate()
    assert cli.returncode == 0 and b"BrokenPipeError" not in err and b"Traceback" not in err


def test_help_names_every_language():
    text = run_cli("build", "--help").stdout + run_cli("--help").stdout
    for language in ("C", "Zig", "Rust", "AssemblyScript"):
        assert language in text, language
    assert "C or Zig" not in text


def test_an_out_of_bounds_access_reads_plainly():
    body = '(func (export "oob") (param i32 i32 i32) (result i32) (i32.load (i32.const -1)))'
    module = wasmudf.load(wat.module(body, [wat.scalar("oob", ["int64"], "int64")]))
    with pytest.raises(wasmudf.GuestTrap) as info:
        module.functions["oob"]([1])
    message = str(info.value)
    assert "trapped: out of bounds memory access (memory fault at wasm address 0xffffffff" in message
    assert ": 1:" not in message and "wasm trap:" not in message


BOOM = '(func (export "boom") (param i32 i32 i32) (result i32) unreachable)'


@pytest.mark.parametrize("engine", ["duckdb", "sqlite", "sqlite3"])
def test_the_wasmudf_error_behind_any_engines_error(engine):
    from conftest import connect

    module = wasmudf.load(wat.module(BOOM + wat.ADD_I64, [wat.scalar("boom", ["int64"], "int64"),
                                                          wat.scalar("add_i64", ["int64", "int64"], "int64")]))
    con = connect(engine)
    wasmudf.register(con, module)
    with pytest.raises(guest_error(con, wasmudf.GuestTrap)) as info:
        con.execute("SELECT boom(1)").fetchall()
    error = wasmudf.error_from(info.value)
    assert isinstance(error, wasmudf.GuestTrap)
    assert error.function == "boom" and "(boom, add_i64)" in error.module
    assert "trapped: wasm `unreachable` instruction executed" in str(error)
    # An engine error of the statement's own is not a wasmudf error.
    with pytest.raises(missing_function_error(con)) as info:
        con.execute("SELECT no_such_function(1)").fetchall()
    assert wasmudf.error_from(info.value) is None
    con.close()


def test_duckdb_tries_a_failing_constant_call_once(monkeypatch):
    # DuckDB folds constants while planning and retries in execution: without care a guest
    # that loops takes its time limit three times over for `SELECT spin(1)` (Python path).
    import duckdb

    from wasmudf.functions import ScalarFunction

    body = '(func (export "spin") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0))'
    functions = [wat.scalar("spin", ["int64"], "int64"), wat.scalar("spin_v", ["int64"], "int64", export="spin",
                                                                    deterministic=False)]
    module = wasmudf.load(wat.module(body, functions[:1]), limits=wasmudf.Limits(timeout_ms=50))
    volatile = wasmudf.load(wat.module(body, [dict(functions[1], export="spin")]), limits=wasmudf.Limits(timeout_ms=50))
    calls: list[str] = []
    original = ScalarFunction.__call__
    monkeypatch.setattr(ScalarFunction, "__call__", lambda self, *a, **k: calls.append(self.name) or original(self, *a, **k))
    con = duckdb_python_path()
    wasmudf.register(con, module)
    wasmudf.register(con, volatile)
    for sql, new_calls in (("SELECT spin(1)", 1), ("SELECT spin(1)", 0), ("SELECT spin(2)", 1), ("SELECT spin_v(1)", 1)):
        before = len(calls)
        with pytest.raises(duckdb.InvalidInputException, match="TimeLimitExceeded"):
            con.execute(sql).fetchall()
        assert len(calls) - before == new_calls, sql


LIBC = r"""
#include "wasmudf.h"
#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_value(const void *a, const void *b) { return *(const char *)a - *(const char *)b; }

/* The sorted upper-case letters of s, then its length and sqrt(len) as text. */
static wasmudf_str letters(wasmudf_str s) {
    char *c = wasmudf_cstr(s);
    size_t n = strlen(c);
    assert(n < 100);
    char *buf = malloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) if (isalpha((unsigned char)c[i])) buf[k++] = (char)toupper((unsigned char)c[i]);
    qsort(buf, k, 1, by_value);
    char out[160];
    snprintf(out, sizeof out, "%.*s/%zu/%.3f", (int)k, buf, n, sqrt((double)n));
    free(buf);
    return wasmudf_str_from_cstr(out);
}
WASMUDF_SCALAR(letters, utf8, "letters", utf8)
"""


def test_c_code_has_its_standard_library_without_imports(tmp_path):
    import math

    (tmp_path / "letters.c").write_text(LIBC)
    build([tmp_path / "letters.c"], tmp_path / "letters.wasm")
    module = wasmudf.load(tmp_path / "letters.wasm")
    assert list(module._compiled.imports) == []
    words = ["Hello, World", "", "zyx 123 abc", "é!"]
    want = [f"{''.join(sorted(c.upper() for c in w if c.isascii() and c.isalpha()))}/{len(w.encode())}/"
            f"{math.sqrt(len(w.encode())):.3f}" for w in words]
    assert module.functions["letters"](words).to_pylist() == want
    # A failed assert() fails the call with its expression, and the module goes on.
    with pytest.raises(wasmudf.GuestTrap, match=r"guest says: assertion failed: n < 100"):
        module.functions["letters"](["x" * 100])
    assert module.functions["letters"](["b a"]).to_pylist() == ["AB/3/1.732"]


def test_c_code_that_needs_the_system_is_refused_unless_wasi_is_granted(tmp_path):
    (tmp_path / "hello.c").write_text(
        '#include "wasmudf.h"\n#include <stdio.h>\n'
        'static int64_t hello(int64_t x) { printf("hi\\n"); return x; }\n'
        'WASMUDF_SCALAR(hello, int64, "prints", int64)\n'
    )
    build([tmp_path / "hello.c"], tmp_path / "hello.wasm")
    with pytest.raises(wasmudf.PolicyError, match="wasi"):
        wasmudf.load(tmp_path / "hello.wasm")


def test_set_up_again_installs_nothing():
    # The demo runs the set-up each time: once done (the test command ran it), again is a no-op.
    proc = subprocess.run(["bash", "scripts/setup.sh"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "installing" not in proc.stderr and proc.stdout == ""
