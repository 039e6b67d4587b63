"""The example modules from ``udfs/``, which ``wasmudf sql`` registers by default.

A wheel carries the built ``.wasm`` files in ``wasmudf/example_modules/`` (setup.py copies them
there when it builds); a source checkout, an editable install among them, reads ``udfs/``.
"""

from __future__ import annotations

from pathlib import Path

NAMES = ("numeric", "text", "binary", "stats", "strings", "rust", "assemblyscript", "similarity", "tables", "dates", "money", "nested")
PACKAGED_DIR = Path(__file__).resolve().parent / "example_modules"
SOURCE_DIR = Path(__file__).resolve().parent.parent / "udfs"


def example_paths() -> list[Path]:
    """Paths of the example ``.wasm`` modules, from the installed package or the checkout."""
    packaged = [PACKAGED_DIR / f"{name}.wasm" for name in NAMES]
    if all(p.is_file() for p in packaged):
        return packaged
    return [p for p in (SOURCE_DIR / name / f"{name}.wasm" for name in NAMES) if p.is_file()]
