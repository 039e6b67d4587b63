#!/usr/bin/env bash
# The C accelerator built with AddressSanitizer and UndefinedBehaviorSanitizer, and the tests
# that exercise native code (the core, SQLite's and DuckDB's C parts, the hostile suite) run on
# that build. DuckDB's extension file is the shim: it calls into this sanitized build.
# Run after scripts/setup.sh (scripts/test.sh does). Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A copy of the package whose extension is the sanitized build; tests import it first.
cp -r wasmudf "$work/wasmudf"
rm -f "$work"/wasmudf/_speedups*.so
# The same sources and warnings as setup.py's Extension, compiled here directly.
include="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
# DuckDB's C API headers, extracted from the pinned sdist by the package build (setup.py).
duckdb_include="$(ls -d build/duckdb-*-include | head -1)"
suffix="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
gcc -shared -fPIC -std=c11 -Wall -Werror -Wno-missing-braces -fvisibility=hidden -g -O1 \
    -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
    -I"$include" -I"$duckdb_include" -DWASMUDF_DUCKDB=1 \
    wasmudf/_speedups.c wasmudf/adapters/_sqlite.c wasmudf/adapters/_duckdb.c -o "$work/wasmudf/_speedups$suffix" -lpthread

# wasmtime turns out-of-bounds accesses and stack overflows into traps with its own signal
# handlers, so ASan must leave SIGSEGV/SIGBUS/SIGFPE to them. The interpreter itself is not
# instrumented, and leaks at exit are CPython's, not ours: leak detection is off.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:handle_segv=0:handle_sigbus=0:handle_sigfpe=0:allow_user_segv_handler=1:abort_on_error=1"
export PYTHONSAFEPATH=1  # not the working directory's wasmudf: the copy in $work
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# The tests must see the sanitized build, not the one installed in .venv.
PYTHONPATH="$work" .venv/bin/python -c '
import sys, wasmudf._native as n
assert n.speedups is not None and n.speedups.__file__.startswith(sys.argv[1]), n.speedups' "$work"
# --capture=sys: a sanitizer report (written to fd 2 before the abort) reaches the log. The
# SDK build test is left out: the compilers it runs would inherit LD_PRELOAD, and ASan reports
# rustc's own allocator mismatches.
PYTHONPATH="$work" .venv/bin/python -m pytest -q -p no:cacheprovider --capture=sys -m "not slow" \
    tests/test_fast_paths.py tests/test_sqlite_native.py tests/test_sqlite_text.py tests/test_sqlite3_adapter.py \
    tests/test_calls.py tests/test_guest_failures.py \
    tests/test_aggregates.py tests/test_duckdb_native.py tests/test_tables.py tests/test_dates.py tests/test_nested.py tests/hostile \
    --deselect "tests/test_dates.py::test_every_sdk_declares_dates_and_timestamps" \
    --deselect "tests/test_nested.py::test_every_sdk_declares_decimals_lists_and_structs" "$@"
