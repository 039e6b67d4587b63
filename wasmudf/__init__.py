"""wasmudf: run sandboxed WebAssembly modules as SQL functions in DuckDB and SQLite.

>>> import duckdb, wasmudf                                          # doctest: +SKIP
>>> con = duckdb.connect()                                          # doctest: +SKIP
>>> wasmudf.register(con, "udfs/numeric/numeric.wasm")              # doctest: +SKIP
['haversine_km', 'clamp', ...]
>>> con.sql("SELECT clamp(15.0, 0.0, 10.0)").fetchall()             # doctest: +SKIP
[(10.0,)]
"""

from . import duckdb
from .abi import FunctionSpec, Manifest
from .adapters import error_from
from .aggregates import AggregateFunction
from .capabilities import DictSecretStore, SecretStore
from .catalog import AttachReport, InstalledModule, attach, install, installed, uninstall
from .errors import (
    ArgumentTypeError,
    BuildError,
    BuildWarning,
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
    RegistrationWarning,
    RowLimitExceeded,
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
from .registration import Registration, interrupt, register, table, unregister
from .tables import TableFunction
from .trust import Policy

__version__ = "0.1.0"

__all__ = [
    "AggregateFunction",
    "ArgumentTypeError",
    "AttachReport",
    "BuildError",
    "BuildWarning",
    "CallInterrupted",
    "DictSecretStore",
    "ExportError",
    "FuelExhausted",
    "FunctionSpec",
    "GuestError",
    "GuestFailure",
    "GuestTrap",
    "InstalledModule",
    "InvalidGuestOutput",
    "LimitExceeded",
    "Limits",
    "Manifest",
    "ManifestError",
    "MemoryLimitExceeded",
    "Module",
    "ModuleError",
    "OutputLimitExceeded",
    "Policy",
    "PolicyError",
    "Registration",
    "RegistrationError",
    "RegistrationWarning",
    "RowLimitExceeded",
    "ScalarFunction",
    "SecretStore",
    "SignatureError",
    "StackLimitExceeded",
    "TableFunction",
    "TableLimitExceeded",
    "TimeLimitExceeded",
    "UsageError",
    "WasmUdfError",
    "attach",
    "duckdb",
    "error_from",
    "install",
    "installed",
    "interrupt",
    "load",
    "register",
    "table",
    "uninstall",
    "unregister",
]
