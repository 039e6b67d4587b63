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
        if _is_series(v):
            return type(v).__module__.partition(".")[0], v
    return None


def _is_series(v: Any) -> bool:
    return type(v).__module__.partition(".")[0] in ("pandas", "polars") and type(v).__name__ == "Series"


def nullable_pandas(values: Any) -> bool:
    """Whether a pandas Series among ``values`` has a nullable (extension) dtype such as
    ``Int64``: the result then comes back nullable too, not as float64 with NaN."""
    for v in values:
        if _is_series(v) and type(v).__module__.startswith("pandas"):
            import pandas as pd

            if isinstance(v.dtype, pd.api.extensions.ExtensionDtype):
                return True
    return False


def to_arrow(value: Any) -> Any:
    """A pandas/polars Series as a pyarrow array (NaN stays NaN; None/NA become NULL)."""
    package = type(value).__module__.partition(".")[0]
    if package == "pandas" and type(value).__name__ == "Series":
        return pa.Array.from_pandas(value)
    if package == "polars" and type(value).__name__ == "Series":
        return value.to_arrow()
    return value


def from_arrow(
    kind: str, template: Any, result: pa.Array | pa.ChunkedArray, name: str, nullable: bool = False
) -> Any:
    """``result`` as the caller's kind of Series (pandas: with a nullable dtype if asked)."""
    if kind == "pandas":
        series = result.to_pandas(types_mapper=_nullable_dtypes().get if nullable else None)
        series.index = template.index
        series.name = name
        return series
    import polars as pl

    return pl.Series(name, result)


def _nullable_dtypes() -> dict[pa.DataType, Any]:
    import pandas as pd

    return {
        pa.bool_(): pd.BooleanDtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
        pa.float32(): pd.Float32Dtype(),
        pa.float64(): pd.Float64Dtype(),
        pa.string(): pd.StringDtype(),
    }


def is_scalar(value: Any) -> bool:
    """A single value to broadcast over the other arguments' rows (as pyarrow.compute does)."""
    import numpy as np

    return value is None or isinstance(value, (bool, int, float, str, bytes, np.generic, pa.Scalar))
