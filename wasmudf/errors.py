"""The exceptions wasmudf raises, one tree rooted at :class:`WasmUdfError`.

::

    WasmUdfError
    ├── ModuleError                 the bytes are not a module wasmudf can run
    │   ├── ManifestError           the `wasmudf` section is missing or wrong
    │   └── ExportError             a required export is missing or has the wrong signature
    ├── PolicyError                 the module asks for something the host did not grant,
    │   │                           or is not the pinned module
    │   └── SignatureError          unsigned, changed after signing, or by an untrusted key
    ├── UsageError                  the caller (not the guest) did something wrong
    │   ├── ArgumentTypeError       a value of the wrong type or out of range for a parameter
    │   └── RegistrationError       a name already exists, an engine cannot take a type
    └── GuestError                  the guest failed while running; its instance is discarded
        ├── GuestTrap               a Wasm trap (unreachable, out-of-bounds access, …)
        ├── GuestFailure            the guest returned a non-zero status
        ├── InvalidGuestOutput      the guest returned data that breaks the ABI
        ├── CallInterrupted         the query was interrupted while the guest ran
        └── LimitExceeded           a host limit was hit
            ├── TimeLimitExceeded
            ├── FuelExhausted
            ├── MemoryLimitExceeded
            ├── TableLimitExceeded
            ├── StackLimitExceeded
            ├── OutputLimitExceeded
            └── RowLimitExceeded    a table function returned more than Limits.table_rows

Every message says which function and module are involved, what happened and, where there is
one, what to do about it.
"""

from __future__ import annotations


class WasmUdfError(Exception):
    """Root of every error wasmudf raises."""


class ModuleError(WasmUdfError):
    """The module is malformed, uses a disallowed feature, or breaks a load-time ABI rule."""


class ManifestError(ModuleError):
    """The `wasmudf` manifest section is missing, not valid JSON, or breaks the schema."""


class ExportError(ModuleError):
    """An export the manifest or the ABI requires is missing or has the wrong signature."""


class PolicyError(WasmUdfError):
    """The module needs an import or capability that the host did not grant."""


class SignatureError(PolicyError):
    """A module is unsigned where a signature is required, was changed after it was signed,
    or was signed by a key the policy does not trust."""


class UsageError(WasmUdfError):
    """The caller used wasmudf wrongly; the guest is not involved."""


class ArgumentTypeError(UsageError, TypeError):
    """A value has the wrong type for a parameter, or is out of the parameter's range."""


class RegistrationError(UsageError):
    """A function cannot be registered: its name exists, or the engine cannot take a type."""


class GuestError(WasmUdfError):
    """The guest failed during a call. The instance that failed has been discarded.

    Attributes:
        function: the SQL name of the function, or None during instantiation.
        module: a short label for the module (file name or sha256 prefix).
    """

    def __init__(self, message: str, *, function: str | None = None, module: str | None = None):
        super().__init__(message)
        self.function = function
        self.module = module


class GuestTrap(GuestError):
    """The guest trapped. ``trap_code`` is wasmtime's trap code name, when it gave one."""

    def __init__(self, message: str, *, trap_code: str | None = None, **kw: str | None):
        super().__init__(message, **kw)
        self.trap_code = trap_code


class GuestFailure(GuestError):
    """The guest returned a non-zero status; ``guest_message`` is its `wasmudf_error` text."""

    def __init__(self, message: str, *, guest_message: str | None = None, **kw: str | None):
        super().__init__(message, **kw)
        self.guest_message = guest_message


class InvalidGuestOutput(GuestError):
    """The guest returned an address, length, offset or string that breaks the ABI."""


class CallInterrupted(GuestError):
    """The engine's query was interrupted (apsw ``Connection.interrupt()``) while the guest ran."""


class LimitExceeded(GuestError):
    """A limit from :class:`wasmudf.Limits` was hit; ``limit`` names the field."""

    limit: str = ""


class TimeLimitExceeded(LimitExceeded):
    limit = "timeout_ms"


class FuelExhausted(LimitExceeded):
    limit = "fuel"


class MemoryLimitExceeded(LimitExceeded):
    limit = "memory_bytes"


class TableLimitExceeded(LimitExceeded):
    limit = "table_elements"


class StackLimitExceeded(LimitExceeded):
    limit = "stack_bytes"


class OutputLimitExceeded(LimitExceeded):
    limit = "output_bytes"


class RowLimitExceeded(LimitExceeded):
    limit = "table_rows"


class BuildError(WasmUdfError):
    """The compiler failed, or the sources declare no function or an invalid one."""


class BuildWarning(UserWarning):
    """What the compiler warned about, or a function name an engine would refuse."""


class RegistrationWarning(UserWarning):
    """A function of the module was left out: the connection's engine cannot take its kind
    (a table function on Python's sqlite3); the others were registered."""
