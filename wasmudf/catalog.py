"""Modules installed in the database itself, so they come back after a restart.

``install`` stores a module's bytes, digest, signer, manifest, tenant, grants, config and
limits in the table ``wasmudf_modules`` of the same database (SQLite or DuckDB file) and
registers its functions; ``attach`` registers every installed module on a newly opened
connection, checking each one again (digest, signature policy, grants) and reporting what
it refused. Secrets are never stored: pass the secret store to ``attach``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import abi
from .adapters import adapter_for
from .capabilities import SecretStore
from .errors import RegistrationError, UsageError, WasmUdfError
from .limits import Limits
from .module import Module, Source, load
from .registration import register, unregister
from .trust import Policy, read_signature

TABLE = "wasmudf_modules"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    wasm BLOB NOT NULL,
    key_id TEXT,
    manifest TEXT NOT NULL,
    tenant TEXT,
    grants TEXT NOT NULL,
    config TEXT NOT NULL,
    limits TEXT,
    installed_at TEXT NOT NULL
)"""
_COLUMNS = "name, sha256, wasm, key_id, manifest, tenant, grants, config, limits, installed_at"


@dataclass
class InstalledModule:
    """One row of the catalog, as ``installed`` lists it."""

    name: str
    sha256: str
    key_id: str | None
    tenant: str | None
    grants: list[str]
    functions: list[str]
    installed_at: str


@dataclass
class AttachReport:
    """What ``attach`` registered (module name → function names) and what it refused
    (module name → the reason)."""

    registered: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def _rows(con: Any, sql: str, params: tuple = ()) -> list[tuple]:
    return adapter_for(con).query(con, sql, params)[1]


def _transaction(con: Any) -> AbstractContextManager[None]:
    return adapter_for(con).transaction(con)


def _has_table(con: Any) -> bool:
    return adapter_for(con).has_table(con, TABLE)


def _default_name(source: Source | Module, module: Module) -> str:
    if isinstance(source, (str, Path)):
        return Path(source).stem
    return module.label.removesuffix(".wasm").replace(":", "-")


def install(
    con: Any,
    source: Source,
    *,
    name: str | None = None,
    tenant: str | None = None,
    grant: tuple[str, ...] | list[str] = (),
    config: dict[str, Any] | None = None,
    limits: Limits | None = None,
    policy: Policy | None = None,
    secrets: SecretStore | None = None,
    sha256: str | None = None,
) -> InstalledModule:
    """Check a module, store it in the connection's database and register its functions.

    A module of the same ``name`` is replaced: its functions on this connection now run the
    new code, and functions the new version no longer has are removed. Capabilities must be
    granted explicitly (``grant=``): a module asking for more is refused, naming the import.

    Raises:
        WasmUdfError: from ``load`` (including the policy and the pin), or RegistrationError
            when a function name belongs to another installed module.
    """
    module = load(
        source,
        limits=limits,
        grant=grant,
        config=config,
        tenant=tenant,
        secrets=secrets,
        sha256=sha256,
        policy=policy,
    )
    name = name or _default_name(source, module)
    if not _NAME.match(name):
        raise UsageError(f"module name {name!r} must be 1-128 of A-Z a-z 0-9 _ . -")
    signature = read_signature(module.wasm, module.label)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with _transaction(con):
        _rows(con, _SCHEMA)
        previous = _rows(con, f"SELECT manifest FROM {TABLE} WHERE name = ?", (name,))
        taken = {
            f.name.lower(): other
            for other, manifest in _rows(con, f"SELECT name, manifest FROM {TABLE} WHERE name <> ?", (name,))
            for f in _manifest_functions(manifest)
        }
        for fn in module.manifest.functions:
            if fn.name.lower() in taken:
                raise RegistrationError(
                    f"`{fn.name}` belongs to the installed module {taken[fn.name.lower()]!r}; "
                    "uninstall it first or rename the function"
                )
        _rows(con, f"DELETE FROM {TABLE} WHERE name = ?", (name,))
        _rows(
            con,
            f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                module.sha256,
                module.wasm,
                signature.key_id if signature else None,
                json.dumps(module.manifest.raw, sort_keys=True),
                tenant,
                json.dumps(sorted(set(grant))),
                json.dumps(config or {}, sort_keys=True),
                json.dumps(dataclasses.asdict(limits)) if limits is not None else None,
                now,
            ),
        )
    if previous:
        kept = {f.name.lower() for f in module.manifest.functions}
        unregister(con, [f for f in _manifest_functions(previous[0][0]) if f.name.lower() not in kept])
    register(con, module, replace=True)
    key = signature.key_id if signature else None
    return _describe(name, module.sha256, key, tenant, sorted(set(grant)), module.manifest.raw, now)


def attach(con: Any, *, policy: Policy | None = None, secrets: SecretStore | None = None) -> AttachReport:
    """Register every installed module on ``con`` again, checking each one as ``install``
    did (its stored digest, the signature policy, its grants); a module that fails is
    refused, the others still attach."""
    report = AttachReport()
    if not _has_table(con):
        return report
    for row in _rows(con, f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY name"):
        name = str(row[0])
        try:
            report.registered[name] = _attach_row(con, row, policy, secrets)
        except (WasmUdfError, ValueError, TypeError, KeyError) as exc:
            report.refused[name] = f"{type(exc).__name__}: {exc}"
    return report


def _attach_row(con: Any, row: tuple, policy: Policy | None, secrets: SecretStore | None) -> list[str]:
    name, digest, wasm, _key_id, _manifest, tenant, grants, config, limits, _at = row
    wasm = bytes(wasm)
    if hashlib.sha256(wasm).hexdigest() != digest:
        raise WasmUdfError(f"the stored bytes of {name!r} do not match the stored sha256 (the row was modified)")
    module = load(
        wasm,
        grant=json.loads(grants),
        config=json.loads(config),
        tenant=tenant,
        secrets=secrets,
        limits=Limits(**json.loads(limits)) if limits else None,
        sha256=digest,
        policy=policy,
        name=name,
    )
    return register(con, module, replace=True).names


def uninstall(con: Any, name: str) -> list[str]:
    """Remove an installed module and its functions from ``con``; returns the function names."""
    found = _rows(con, f"SELECT manifest FROM {TABLE} WHERE name = ?", (name,)) if _has_table(con) else []
    if not found:
        raise UsageError(f"no module named {name!r} is installed")
    functions = _manifest_functions(found[0][0])
    with _transaction(con):
        _rows(con, f"DELETE FROM {TABLE} WHERE name = ?", (name,))
    unregister(con, functions)
    return [f.name for f in functions]


def installed(con: Any) -> list[InstalledModule]:
    """The installed modules, by name."""
    if not _has_table(con):
        return []
    out = []
    for name, digest, key, manifest, tenant, grants, at in _rows(
        con, f"SELECT name, sha256, key_id, manifest, tenant, grants, installed_at FROM {TABLE} ORDER BY name"
    ):
        try:
            raw = json.loads(manifest)
            grant_list = json.loads(grants)
        except ValueError:
            raw, grant_list = {"functions": []}, []
        out.append(_describe(name, digest, key, tenant, grant_list, raw, at))
    return out


def _manifest_functions(manifest_json: str) -> list[abi.FunctionSpec]:
    try:
        return list(abi.parse_manifest(manifest_json.encode()).functions)
    except (WasmUdfError, ValueError):
        return []


def _describe(
    name: str,
    digest: str,
    key: str | None,
    tenant: str | None,
    grants: list[str],
    raw_manifest: dict[str, Any],
    at: str,
) -> InstalledModule:
    functions = _manifest_functions(json.dumps(raw_manifest))
    return InstalledModule(name, digest, key, tenant, grants, [f.signature() for f in functions], at)


