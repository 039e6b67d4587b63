#!/usr/bin/env bash
# The test command from the README: set up, lint, check the wheel (every SDK and the example
# modules inside it), run the whole suite on the C accelerator, the native and hostile tests
# again on a build of it with AddressSanitizer and UndefinedBehaviorSanitizer, then the whole
# suite on the pure-Python path that installs without a compiler (Spark's tests once, on the
# accelerator: a Spark session costs seconds to start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check wasmudf tests udfs bench
bash scripts/check_wheel.sh
.venv/bin/python -m pytest -q "$@"
bash scripts/sanitizers.sh
# Spark's tests run once, above: its workers would take the pure-Python path the same way.
WASMUDF_PURE_PYTHON=1 .venv/bin/python -m pytest -q -m "not spark" "$@"
