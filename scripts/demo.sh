#!/usr/bin/env bash
# The main job from the README: set up, then run SQL with the example modules registered.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/wasmudf sql "${1:-SELECT slugify('Crème Brûlée: a recipe') AS slug,
       edit_distance('kitten', 'sitting') AS edits,
       round(haversine_km(51.5074, -0.1278, 48.8566, 2.3522), 1) AS london_paris_km,
       luhn_check('4539 1488 0343 6467') AS card_ok,
       crc32(CAST('hello' AS BLOB)) AS crc}"
