#!/usr/bin/env bash
# Install the benchmark extras (Extism, matplotlib), run the whole suite once and write the
# report to bench/results/ (RESULTS.md, ns_per_row.png, benchmark.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pip install --quiet -e ".[bench]"
.venv/bin/python bench/report.py "$@"
