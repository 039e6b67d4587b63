"""pandas and polars Series in, the same kind of Series out.

Function objects work on Arrow; these helpers let them take a pandas or polars Series
directly (neither package is required: they are recognized by their module) and answer in
the caller's own type, a pandas Series keeping the input's index.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def series_kind(values: Any) -> tuple[str, Any] | None:
    """("pandas" | "polars", the first such Series) when any value is one, else None."""
    for v in values:
        package = type(v).__module__.partition(".")[0]
        if package in ("pandas", "polars") and type(v).__name__ == "Series":
            return package, v
    return None


def to_arrow(value: Any) -> Any:
    """A pandas/polars Series as a pyarrow array (NaN stays NaN; None/NA become NULL)."""
    package = type(value).__module__.partition(".")[0]
    if package == "pandas" and type(value).__name__ == "Series":
        return pa.Array.from_pandas(value)
    if package == "polars" and type(value).__name__ == "Series":
        return value.to_arrow()
    return value


def from_arrow(kind: str, template: Any, result: pa.Array | pa.ChunkedArray, name: str) -> Any:
    """``result`` as the caller's kind of Series."""
    if kind == "pandas":
        series = result.to_pandas()
        series.index = template.index
        series.name = name
        return series
    import polars as pl

    return pl.Series(name, result)
