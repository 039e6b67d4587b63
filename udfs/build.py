"""Rebuild every example module in udfs/ from its source: python udfs/build.py"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: module path (relative to udfs/) → its sources
MODULES = {
    "numeric/numeric.wasm": ["numeric/numeric.c"],
    "text/text.wasm": ["text/text.zig"],
    "binary/binary.wasm": ["binary/binary.c"],
    "stats/stats.wasm": ["stats/stats.c"],
    "tables/tables.wasm": ["tables/tables.c"],
    "dates/dates.wasm": ["dates/dates.c"],
    "money/money.wasm": ["money/money.c"],
    "nested/nested.wasm": ["nested/nested.c"],
    "strings/strings.wasm": ["strings/strings.c"],
    # fuzzy.c is a plain C library, compiled unchanged beside the glue in similarity.c.
    "similarity/similarity.wasm": ["similarity/similarity.c", "similarity/fuzzy.c"],
    "rust/rust.wasm": ["rust/rust.rs"],
    "assemblyscript/assemblyscript.wasm": ["assemblyscript/assemblyscript.ts"],
}


def build_all(out_dir: Path = HERE) -> list[Path]:
    from wasmudf.build import build

    written = []
    for target, sources in MODULES.items():
        out = out_dir / target
        out.parent.mkdir(parents=True, exist_ok=True)
        build([HERE / s for s in sources], out, strict=True)  # the examples build without a warning
        written.append(out)
    return written


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    for path in build_all():
        print(f"built {path.relative_to(HERE.parent)} ({path.stat().st_size} bytes)")
