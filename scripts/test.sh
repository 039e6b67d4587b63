#!/usr/bin/env bash
# The test command from the README: set up, lint, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check wasmudf tests udfs bench
.venv/bin/python -m pytest -q "$@"
