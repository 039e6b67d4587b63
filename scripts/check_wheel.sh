#!/usr/bin/env bash
# Build the wheel, install it into a clean venv (no source tree on its path) and, from there,
# build a UDF in each of the four guest languages and run it: proves the wheel ships every SDK
# and the example modules. Run by scripts/test.sh after setup (needs .venv and node_modules).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

.venv/bin/python -m pip wheel --quiet --no-deps -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/wasmudf-*.whl "ziglang==0.17.1"

cp udfs/numeric/numeric.c udfs/text/text.zig udfs/text/fold_table.zig udfs/rust/rust.rs \
   udfs/assemblyscript/assemblyscript.ts "$work/"
cd "$work"
export WASMUDF_ASC="$root/node_modules/.bin/asc" WASMUDF_CACHE_DIR=""
for src in numeric.c text.zig rust.rs assemblyscript.ts; do
    venv/bin/wasmudf build "$src" -o "${src%.*}.wasm" >/dev/null
done
venv/bin/python - <<'PY'
import wasmudf
from wasmudf.examples import NAMES, PACKAGED_DIR, example_paths

assert wasmudf.__file__.startswith(__import__("sys").prefix), wasmudf.__file__  # the installed copy
assert [p.parent for p in example_paths()] == [PACKAGED_DIR] * len(NAMES), example_paths()
checks = {
    "numeric.wasm": ("add_i64", ([40], [2]), [42]),
    "text.wasm": ("slugify", (["Hello World"],), ["hello-world"]),
    "rust.wasm": ("collatz_steps", ([27],), [111]),
    "assemblyscript.wasm": ("fizzbuzz", ([15],), ["FizzBuzz"]),
}
for path, (fn, args, want) in checks.items():
    got = wasmudf.load(path).functions[fn](*args).to_pylist()
    assert got == want, (path, got, want)
print("wheel: built and ran a UDF in C, Zig, Rust and AssemblyScript from the installed wheel")
PY
