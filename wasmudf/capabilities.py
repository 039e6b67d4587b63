"""Host imports of module ``wasmudf`` (ABI §6), bound to one registration's tenant.

A host import never raises into the guest: wasmtime-py parks a host function's exception in
one process-wide variable, where another thread's store could pick it up. Every import here
catches everything and answers with a status instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import wasmtime

from .abi import HOST_IMPORT_SIGNATURES
from .errors import UsageError

guest_log = logging.getLogger("wasmudf.guest")
host_log = logging.getLogger("wasmudf")

#: Bounds on ``log``: longer messages are truncated, extra messages in one call dropped.
LOG_MAX_MESSAGE_BYTES = 4096
LOG_MAX_MESSAGES_PER_CALL = 100
#: The longest key ``config_get``/``secret_get`` accept.
MAX_KEY_BYTES = 1024
_LEVELS = {10, 20, 30, 40, 50}


class SecretStore(Protocol):
    """Where ``secret_get`` looks. ``tenant`` is bound by the host, never given by the guest."""

    def get(self, tenant: str, key: str) -> bytes | str | None: ...


class DictSecretStore:
    """Secrets held in memory: ``{tenant: {key: value}}``, each value ``str`` or ``bytes``.

    ``load(..., secrets={...})`` wraps a plain mapping of that shape in one of these.
    """

    def __init__(self, secrets: Mapping[str, Mapping[str, bytes | str]]):
        self._secrets = {t: dict(v) for t, v in secrets.items()}

    def get(self, tenant: str, key: str) -> bytes | str | None:
        return self._secrets.get(tenant, {}).get(key)


def secret_store(secrets: Any) -> SecretStore | None:
    """``secrets`` as a store: None, a store (an object with ``get(tenant, key)``), or a
    mapping ``{tenant: {key: value}}`` wrapped in a :class:`DictSecretStore`.

    A plain dict has a ``get`` too, but ``dict.get(tenant, key)`` answers a tenant's whole
    mapping for any missing key, so a mapping is never taken as a store.

    Raises:
        UsageError: anything else.
    """
    if secrets is None:
        return None
    if isinstance(secrets, Mapping):
        if not all(isinstance(v, Mapping) for v in secrets.values()):
            raise UsageError("secrets= as a mapping must be {tenant: {key: value}}")
        return DictSecretStore(secrets)
    if callable(getattr(secrets, "get", None)):
        return secrets
    raise UsageError(
        f"secrets= must be a secret store (an object with get(tenant, key)) or a mapping "
        f"{{tenant: {{key: value}}}}, not a {type(secrets).__name__}"
    )


@dataclass
class CapabilityContext:
    """What one module's host imports may see: its config, its tenant, its secret store."""

    label: str
    config: Mapping[str, Any] = field(default_factory=dict)
    tenant: str | None = None
    secrets: SecretStore | None = None


class LogBudget:
    """How many more messages ``log`` takes in the current call. One per instance: an
    instance runs one call at a time (ABI §7), so the count cannot race between threads."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = LOG_MAX_MESSAGES_PER_CALL

    def new_call(self) -> None:
        self.left = LOG_MAX_MESSAGES_PER_CALL


def _memory(caller: wasmtime.Caller) -> tuple[Any, int] | None:
    mem = caller.get("memory")
    if not isinstance(mem, wasmtime.Memory):
        return None
    return mem, mem.data_len(caller)


def _read(caller: wasmtime.Caller, ptr: int, length: int, cap: int) -> bytes | None:
    """Guest bytes [ptr, ptr+length), or None when outside memory or longer than ``cap``."""
    found = _memory(caller)
    if found is None:
        return None
    mem, size = found
    ptr &= 0xFFFFFFFF  # the guest passes u32 addresses as i32
    length &= 0xFFFFFFFF
    if length > cap or ptr + length > size:
        return None
    return bytes(mem.read(caller, ptr, ptr + length))


def _value_bytes(ctx: CapabilityContext, source: str, key: str, value: Any) -> bytes | None:
    """A config or secret value as the guest receives it: only ``str`` and ``bytes`` are
    values. Anything else (a nested mapping, a number) is a host-side mistake: logged here,
    and absent for the guest, never its ``str()`` (which could hand over a whole mapping)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    host_log.error(
        "%s: %s value for key %r is a %s, not str or bytes; the guest was told it is absent",
        ctx.label,
        source,
        key,
        type(value).__name__,
    )
    return None


def _copy_value(caller: wasmtime.Caller, value: bytes, buf: int, cap: int) -> int:
    found = _memory(caller)
    if found is None:
        return -1
    mem, size = found
    buf &= 0xFFFFFFFF
    cap &= 0xFFFFFFFF
    if buf + cap > size:
        return -1
    if len(value) <= cap:
        mem.write(caller, value, buf)
    return len(value)


def host_imports(
    ctx: CapabilityContext, granted: set[str], budget: LogBudget
) -> dict[str, tuple[wasmtime.FuncType, Any]]:
    """The granted host imports of one instance as name → (type, callable taking a Caller
    first); ``log`` counts against that instance's ``budget``."""

    def log(caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
        try:
            if budget.left <= 0:
                return
            budget.left -= 1
            data = _read(caller, ptr, min(length & 0xFFFFFFFF, LOG_MAX_MESSAGE_BYTES), LOG_MAX_MESSAGE_BYTES)
            if data is None:
                return
            text = data.decode("utf-8", errors="replace")
            guest_log.log(level if level in _LEVELS else logging.INFO, "[%s] %s", ctx.label, text)
        except Exception:  # noqa: BLE001 - nothing may cross into the guest
            return

    def lookup(source: str):
        def get(caller: wasmtime.Caller, key_ptr: int, key_len: int, buf: int, cap: int) -> int:
            try:
                raw = _read(caller, key_ptr, key_len, MAX_KEY_BYTES)
                if raw is None:
                    return -1
                key = raw.decode("utf-8")
                if source == "config":
                    value = ctx.config.get(key)
                elif ctx.tenant is None or ctx.secrets is None:
                    value = None
                else:
                    value = ctx.secrets.get(ctx.tenant, key)
                data = None if value is None else _value_bytes(ctx, source, key, value)
                if data is None:
                    return -1
                return _copy_value(caller, data, buf, cap)
            except Exception:  # noqa: BLE001 - nothing may cross into the guest
                return -1

        return get

    impls = {"log": log, "config_get": lookup("config"), "secret_get": lookup("secret")}
    out = {}
    for name in granted & set(impls):
        params, results = HOST_IMPORT_SIGNATURES[name]
        ty = wasmtime.FuncType(
            [wasmtime.ValType.i32() for _ in params], [wasmtime.ValType.i32() for _ in results]
        )
        out[name] = (ty, impls[name])
    return out
