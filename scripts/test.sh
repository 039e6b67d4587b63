#!/usr/bin/env bash
# The test command from the README: set up, lint, check the wheel (every SDK and the example
# modules inside it), run the whole suite on the C accelerator, then again on the pure-Python
# path that installs without a compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check wasmudf tests udfs bench
bash scripts/check_wheel.sh
.venv/bin/python -m pytest -q "$@"
WASMUDF_PURE_PYTHON=1 .venv/bin/python -m pytest -q "$@"
