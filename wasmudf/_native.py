"""The optional C accelerator, wired to wasmtime-py's own copy of the wasmtime library.

``speedups`` is the ``wasmudf._speedups`` extension module, or None when it was not built
(no compiler at install time) or ``WASMUDF_PURE_PYTHON=1`` is set; every caller has a
pure-Python path doing the same work with the same checks.
"""

from __future__ import annotations

import ctypes
import os
from types import ModuleType

from wasmtime import _ffi as ffi


def symbol(name: str) -> int:
    """The address of a function in wasmtime-py's loaded wasmtime library."""
    return ctypes.cast(getattr(ffi.dll, name), ctypes.c_void_p).value  # type: ignore[return-value]


def _load() -> ModuleType | None:
    if os.environ.get("WASMUDF_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    _speedups.init(
        symbol("wasmtime_func_call_unchecked"),
        symbol("wasmtime_memory_data"),
        symbol("wasmtime_memory_data_size"),
        symbol("wasmtime_context_set_epoch_deadline"),
        symbol("wasmtime_context_set_fuel"),
        symbol("wasmtime_engine_increment_epoch"),
        symbol("wasmtime_error_new"),
        symbol("wasmtime_store_epoch_deadline_callback"),
    )
    return _speedups


speedups: ModuleType | None = _load()
