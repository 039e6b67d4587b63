"""The example modules from ``udfs/``, which ``wasmudf sql`` registers by default."""

from __future__ import annotations

from pathlib import Path

NAMES = ("numeric", "text", "binary", "stats", "strings", "rust", "assemblyscript")
UDFS_DIR = Path(__file__).resolve().parent.parent / "udfs"


def example_paths() -> list[Path]:
    """Paths of the example ``.wasm`` modules (present in a source checkout)."""
    return [
        UDFS_DIR / name / f"{name}.wasm" for name in NAMES if (UDFS_DIR / name / f"{name}.wasm").is_file()
    ]
