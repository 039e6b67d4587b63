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

guest_log = logging.getLogger("wasmudf.guest")

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
    """Secrets held in memory: ``{tenant: {key: value}}``."""

    def __init__(self, secrets: Mapping[str, Mapping[str, bytes | str]]):
        self._secrets = {t: dict(v) for t, v in secrets.items()}

    def get(self, tenant: str, key: str) -> bytes | str | None:
        return self._secrets.get(tenant, {}).get(key)


@dataclass
class CapabilityContext:
    """What one module's host imports may see: its config, its tenant, its secret store."""

    label: str
    config: Mapping[str, Any] = field(default_factory=dict)
    tenant: str | None = None
    secrets: SecretStore | None = None
    log_budget: int = LOG_MAX_MESSAGES_PER_CALL

    def new_call(self) -> None:
        self.log_budget = LOG_MAX_MESSAGES_PER_CALL


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


def _value_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


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


def host_imports(ctx: CapabilityContext, granted: set[str]) -> dict[str, tuple[wasmtime.FuncType, Any]]:
    """The granted host imports as name → (type, callable taking a Caller first)."""

    def log(caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
        try:
            if ctx.log_budget <= 0:
                return
            ctx.log_budget -= 1
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
                if value is None:
                    return -1
                return _copy_value(caller, _value_bytes(value), buf, cap)
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
