"""wasmudf: run sandboxed WebAssembly modules as SQL functions in DuckDB and SQLite.

>>> import duckdb, wasmudf                                          # doctest: +SKIP
>>> con = duckdb.connect()                                          # doctest: +SKIP
>>> wasmudf.register(con, "udfs/numeric/numeric.wasm")              # doctest: +SKIP
['haversine_km', 'clamp', ...]
>>> con.sql("SELECT clamp(15.0, 0.0, 10.0)").fetchall()             # doctest: +SKIP
[(10.0,)]
"""

from .abi import FunctionSpec, Manifest
from .capabilities import DictSecretStore, SecretStore
from .catalog import AttachReport, InstalledModule, attach, install, installed, uninstall
from .errors import (
    ArgumentTypeError,
    CallInterrupted,
    ExportError,
    FuelExhausted,
    GuestError,
    GuestFailure,
    GuestTrap,
    InvalidGuestOutput,
    LimitExceeded,
    ManifestError,
    MemoryLimitExceeded,
    ModuleError,
    OutputLimitExceeded,
    PolicyError,
    RegistrationError,
    SignatureError,
    StackLimitExceeded,
    TableLimitExceeded,
    TimeLimitExceeded,
    UsageError,
    WasmUdfError,
)
from .functions import ScalarFunction
from .limits import Limits
from .module import Module, load
from .registration import interrupt, register
from .trust import Policy

__version__ = "0.1.0"

__all__ = [
    "ArgumentTypeError",
    "CallInterrupted",
    "DictSecretStore",
    "ExportError",
    "FuelExhausted",
    "FunctionSpec",
    "GuestError",
    "GuestFailure",
    "GuestTrap",
    "InvalidGuestOutput",
    "LimitExceeded",
    "Limits",
    "Manifest",
    "ManifestError",
    "MemoryLimitExceeded",
    "Module",
    "ModuleError",
    "OutputLimitExceeded",
    "PolicyError",
    "RegistrationError",
    "SignatureError",
    "ScalarFunction",
    "SecretStore",
    "StackLimitExceeded",
    "TableLimitExceeded",
    "TimeLimitExceeded",
    "UsageError",
    "WasmUdfError",
    "load",
    "AttachReport",
    "InstalledModule",
    "attach",
    "install",
    "installed",
    "interrupt",
    "uninstall",
    "Policy",
    "register",
]
