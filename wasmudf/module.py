"""``load``: from bytes to a checked, compiled :class:`Module` with callable functions."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import wasmtime

from . import abi, wasmbin
from .abi import FunctionSpec, Manifest, format_signature
from .aggregates import AggregateFunction
from .caches import LruCache
from .capabilities import CapabilityContext, SecretStore, secret_store
from .errors import ExportError, GuestError, ManifestError, ModuleError, PolicyError
from .functions import ScalarFunction
from .instance import Instance, InstancePool, InstanceSpec
from .limits import Limits
from .runtime import ENGINES, EPOCH_TICK_MS, EngineKey
from .tables import TableFunction
from .trust import Policy, check_pin

Source = str | os.PathLike[str] | bytes | bytearray | memoryview


class Module:
    """A loaded module: its manifest, its functions, and a pool of per-thread instances.

    Attributes:
        functions: a read-only mapping from SQL name to a function object.
        manifest: the parsed :class:`wasmudf.abi.Manifest`.
        sha256: hex digest of the module's bytes.
        label: a short name for messages: the ``name`` given to :func:`load`, the file name, or
            for bytes ``sha256:<first 12 digits> (<its first functions>)``.
    """

    def __init__(
        self,
        wasm: bytes,
        *,
        sha256: str,
        label: str,
        limits: Limits,
        manifest: Manifest,
        compiled: wasmtime.Module,
        granted: set[str],
        capabilities: CapabilityContext,
    ):
        self.wasm = wasm
        self.sha256 = sha256
        self.label = label
        self.limits = limits
        self.manifest = manifest
        self.granted = frozenset(granted)
        self._compiled = compiled
        facts = _facts(sha256, compiled)
        export_names = facts.exports
        engine, ticker = ENGINES.engine(EngineKey.for_limits(limits))
        self._spec = InstanceSpec(
            label=label,
            compiled=compiled,
            engine=engine,
            ticker=ticker,
            limits=limits,
            capabilities=capabilities,
            granted_imports=set(facts.host_imports),
            wasi=facts.wasi,
            has_initialize="_initialize" in export_names,
            has_error_export="wasmudf_error" in export_names,
            tick_ms=EPOCH_TICK_MS,
        )
        self._pool = InstancePool(self._spec)
        funcs: dict[str, Any] = {}
        for spec in manifest.functions:
            if spec.kind == "scalar":
                funcs[spec.name] = ScalarFunction(self._pool, spec)
            elif spec.kind == "table":
                funcs[spec.name] = TableFunction(self._pool, spec)
            else:
                parts = {p for p in abi.STATE_MOVING_PARTS if f"{spec.export}__{p}" in export_names}
                funcs[spec.name] = AggregateFunction(self._pool, spec, optional_parts=parts)
        self.functions: Mapping[str, Any] = MappingProxyType(funcs)
        try:
            # A module that cannot start (a start function that loops, a memory over the
            # limit, a lying ABI version) is refused now, not at its first query; the
            # instance stays with this thread.
            self._pool.get()
        except GuestError as exc:
            raise ModuleError(f"{exc}; raise the limit named above, or fix the module") from exc

    def __repr__(self) -> str:
        return f"<wasmudf.Module {self.label} functions={list(self.functions)}>"

    def instantiate(self) -> Instance:
        """This thread's instance (created now if needed): runs the start function and
        ``_initialize``, so a module that fails there fails here."""
        return self._pool.get()


def load(
    source: Source,
    *,
    limits: Limits | None = None,
    grant: Iterable[str] = (),
    config: Mapping[str, Any] | None = None,
    tenant: str | None = None,
    secrets: SecretStore | Mapping[str, Mapping[str, str | bytes]] | None = None,
    sha256: str | None = None,
    policy: Policy | None = None,
    name: str | None = None,
) -> Module:
    """Load, check and compile a module (ABI §1–§2); instances are made lazily per thread.

    Args:
        source: a path to a ``.wasm`` file, or its bytes.
        limits: resource limits; ``Limits()`` (the defaults) when None.
        grant: capabilities the host allows (``log``, ``config_get``, ``secret_get``, ``wasi``).
        config: values the guest may read with ``config_get``.
        tenant: the tenant whose secrets ``secret_get`` may read; bound here, never by the guest.
        secrets: the secret store ``secret_get`` reads from: an object with
            ``get(tenant, key)`` (see :class:`SecretStore`), or a mapping
            ``{tenant: {key: value}}``. A value reaches the guest only as ``str`` or ``bytes``.
        sha256: the module's pinned digest: other bytes are refused.
        policy: a :class:`Policy` for signatures (e.g. require one by a trusted key).
        name: what messages call the module (default: its file name, or for bytes its digest
            and first function names).

    Raises:
        ModuleError: malformed bytes, a disallowed Wasm feature, a missing memory.
        ManifestError: a missing, invalid or inconsistent manifest.
        ExportError: a missing export or one with the wrong signature, naming both signatures.
        PolicyError: an import that is unknown or was not granted, naming it; a digest that
            is not the pinned one.
        UsageError: ``secrets`` is neither a secret store nor a mapping of tenants.
        SignatureError: the policy refuses the module's signature (or its absence).
    """
    limits = limits or Limits()
    store = secret_store(secrets)
    wasm, sha, label = _read_source(source)
    label = name or label
    if sha256 is not None:
        check_pin(sha, sha256, label)
    if policy is not None:
        policy.check(wasm, label)
    grant_set = set(grant)
    unknown = sorted(grant_set - set(abi.CAPABILITIES))
    if unknown:
        raise PolicyError(
            f"grant names unknown capability {unknown[0]!r}; known: {', '.join(abi.CAPABILITIES)}"
        )
    if "secret_get" in grant_set and tenant is None:
        raise PolicyError("secret_get was granted without a tenant: pass tenant= to say whose secrets")
    if limits.module_bytes is not None and len(wasm) > limits.module_bytes:
        raise ModuleError(f"{label} is {len(wasm)} bytes, over Limits.module_bytes = {limits.module_bytes}")
    manifest, count = _parsed(wasm, sha, label)
    if name is None and isinstance(source, (bytes, bytearray, memoryview)):
        label = f"{label} ({_function_list(manifest)})"
    if limits.max_functions is not None and count > limits.max_functions:
        raise ModuleError(f"{label} defines {count} functions, over Limits.max_functions = {limits.max_functions}")
    key = EngineKey.for_limits(limits)
    try:
        compiled = ENGINES.compile(key, sha, wasm)
    except wasmtime.WasmtimeError as exc:
        raise ModuleError(f"{label} is not a module wasmudf can run: {_first_line(exc)}") from exc
    checked = (key, sha, frozenset(grant_set))
    if checked not in _PASSED_CHECKS:  # the checks depend only on these; a reload skips them
        _check_imports(compiled, manifest, grant_set, label)
        _check_exports(compiled, manifest, label)
        _PASSED_CHECKS.put(checked, True)
    caps = CapabilityContext(label=label, config=dict(config or {}), tenant=tenant, secrets=store)
    return Module(
        wasm,
        sha256=sha,
        label=label,
        limits=limits,
        manifest=manifest,
        compiled=compiled,
        granted=grant_set,
        capabilities=caps,
    )


def _read_source(source: Source) -> tuple[bytes, str, str]:
    """The module's bytes, their sha256 and a label for messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        wasm = bytes(source)
        sha = hashlib.sha256(wasm).hexdigest()
        return wasm, sha, f"sha256:{sha[:12]}"
    path = Path(source)
    try:
        wasm = path.read_bytes()
    except OSError as exc:
        raise ModuleError(f"cannot read module {str(path)!r}: {exc.strerror}") from exc
    return wasm, hashlib.sha256(wasm).hexdigest(), path.name


#: How many distinct modules the load-time caches below remember (a few KiB each).
FACT_CACHE_BOUND = 1024

#: The manifest and defined-function count of modules read before, by sha256: both depend
#: only on the bytes, and parsing them is most of the cost of reloading a cached module.
_PARSED: LruCache[str, tuple[Manifest, int]] = LruCache(FACT_CACHE_BOUND)


def _parsed(wasm: bytes, sha: str, label: str) -> tuple[Manifest, int]:
    return _PARSED.get_or_make(sha, lambda: (read_manifest(wasm, label), wasmbin.defined_function_count(wasm)))


#: Modules (engine key, sha256, grants) that passed the import and export checks.
_PASSED_CHECKS: LruCache[tuple[EngineKey, str, frozenset[str]], bool] = LruCache(FACT_CACHE_BOUND)


@dataclass(frozen=True)
class _Facts:
    exports: frozenset[str]
    host_imports: frozenset[str]
    wasi: bool


#: By sha256: what a module exports and imports depends only on its bytes, and a module
#: compiled again (or read back from the disk cache) would otherwise be listed again.
_FACTS: LruCache[str, _Facts] = LruCache(FACT_CACHE_BOUND)


def _facts(sha256: str, compiled: wasmtime.Module) -> _Facts:
    """What a compiled module exports and imports (wasmtime-py's listings are slow to build)."""
    return _FACTS.get_or_make(
        sha256,
        lambda: _Facts(
            exports=frozenset(e.name for e in compiled.exports),
            host_imports=frozenset(i.name for i in compiled.imports if i.module == "wasmudf"),
            wasi=any(i.module == "wasi_snapshot_preview1" for i in compiled.imports),
        ),
    )


def read_manifest(wasm: bytes, label: str = "module") -> Manifest:
    """The parsed ``wasmudf`` section of a module's bytes."""
    found = wasmbin.custom_sections(wasm, abi.MANIFEST_SECTION)
    if not found:
        raise ManifestError(
            f"{label} has no 'wasmudf' custom section: it is not a wasmudf module "
            "(build it with `wasmudf build`, or add the manifest section)"
        )
    if len(found) > 1:
        raise ManifestError(f"{label} has {len(found)} 'wasmudf' sections; exactly one is allowed")
    try:
        return abi.parse_manifest(found[0])
    except ManifestError as exc:
        raise ManifestError(f"{label}: {exc}") from None


def _function_list(manifest: Manifest, most: int = 3) -> str:
    """The first few function names, for a label that says which module is meant."""
    names = [f.name for f in manifest.functions]
    return ", ".join(names[:most]) + (", …" if len(names) > most else "")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip() != "Caused by:"]
    # wasmtime puts the cause ("... support is not enabled") on a later line.
    return ": ".join(lines[:3]) if lines else type(exc).__name__


def _sig(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)


def _check_imports(compiled: wasmtime.Module, manifest: Manifest, granted: set[str], label: str) -> None:
    asked = set(manifest.capabilities)
    for imp in compiled.imports:
        where = f"{imp.module}.{imp.name}"
        if imp.module == "wasmudf" and imp.name in abi.HOST_IMPORTS:
            cap = imp.name
        elif imp.module == "wasi_snapshot_preview1":
            cap = "wasi"
        else:
            raise PolicyError(
                f"{label} imports {where}, which wasmudf does not provide; a module may import "
                "only wasmudf.log, wasmudf.config_get, wasmudf.secret_get (and WASI when granted)"
            )
        if cap not in asked:
            raise PolicyError(
                f"{label} imports {where} but its manifest does not list the capability {cap!r}"
            )
        if cap not in granted:
            raise PolicyError(
                f"{label} needs the capability {cap!r} (import {where}); pass grant=[{cap!r}] to allow it"
            )
        if cap != "wasi":
            ty = imp.type
            want = abi.HOST_IMPORT_SIGNATURES[cap]
            if not isinstance(ty, wasmtime.FuncType) or _sig(ty) != want:
                found = format_signature(_sig(ty)) if isinstance(ty, wasmtime.FuncType) else "not a function"
                raise PolicyError(f"{label} imports {where} as {found}; expected {format_signature(want)}")
    ungranted = sorted(asked - granted)
    if ungranted:
        raise PolicyError(
            f"{label} asks for the capability {ungranted[0]!r}, which was not "
            f"granted; pass grant=[{ungranted[0]!r}] to allow it"
        )


def _check_exports(compiled: wasmtime.Module, manifest: Manifest, label: str) -> None:
    exports = {e.name: e.type for e in compiled.exports}
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise ExportError(f"{label} does not export its linear memory as 'memory' (ABI §1)")
    if memory.is_64:
        raise ModuleError(f"{label}: a 64-bit memory is not allowed (ABI §1)")
    memories = [n for n, t in exports.items() if isinstance(t, wasmtime.MemoryType)]
    if len(memories) > 1:
        raise ModuleError(f"{label} exports {len(memories)} memories; exactly one is allowed")
    required = {
        "wasmudf_abi_version": abi.SIG_ABI_VERSION,
        "wasmudf_alloc": abi.SIG_ALLOC,
        "wasmudf_reset": abi.SIG_RESET,
    }
    optional = {"_initialize": abi.SIG_INITIALIZE, "wasmudf_error": abi.SIG_ERROR}
    for spec in manifest.functions:
        for name, sig in abi.required_exports(spec).items():
            _check_export(exports, name, sig, label, f"function {spec.name!r} needs")
        if spec.kind == "aggregate":
            for part in abi.STATE_MOVING_PARTS:
                optional[f"{spec.export}__{part}"] = abi.AGGREGATE_EXPORTS[part]
            _check_state_moving(spec, exports, label)
    for name, sig in required.items():
        _check_export(exports, name, sig, label, "the ABI requires")
    for name, sig in optional.items():
        if name in exports:
            _check_export(exports, name, sig, label, "the ABI defines")


def _check_state_moving(spec: FunctionSpec, exports: dict[str, Any], label: str) -> None:
    """``__serialize`` and ``__deserialize`` come as a pair, and only with ``__merge``: a
    state that moves between instances is only of use where it can be combined."""
    have = [p for p in ("serialize", "deserialize") if f"{spec.export}__{p}" in exports]
    if not have:
        return
    missing = [p for p in abi.STATE_MOVING_PARTS if f"{spec.export}__{p}" not in exports]
    if missing:
        raise ExportError(
            f"{label}: aggregate {spec.name!r} exports {', '.join(f'{spec.export}__{p}' for p in have)} "
            f"without {', '.join(f'{spec.export}__{p}' for p in missing)}; "
            "serialize, deserialize and merge come together (ABI §5)"
        )


def _check_export(exports: dict[str, Any], name: str, sig: Any, label: str, why: str) -> None:
    ty = exports.get(name)
    if ty is None:
        raise ExportError(f"{label}: {why} the export {name!r} {format_signature(sig)}, which is missing")
    if not isinstance(ty, wasmtime.FuncType):
        raise ExportError(f"{label}: export {name!r} must be a function {format_signature(sig)}")
    found = _sig(ty)
    if found != sig:
        raise ExportError(
            f"{label}: export {name!r} has signature {format_signature(found)}; "
            f"expected {format_signature(sig)}"
        )
