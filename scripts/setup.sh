#!/usr/bin/env bash
# Create .venv and install wasmudf with its pinned test and build dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=24,<27"
.venv/bin/python -m pip install --quiet -e ".[test]"
