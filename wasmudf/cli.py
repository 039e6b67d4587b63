"""The ``wasmudf`` command line: ``sql``, ``build``, ``inspect``; the catalog (``install``,
``attach``, ``list``, ``uninstall``); signatures (``keygen``, ``sign``, ``verify``).

Exit status 0 on success, 1 on a refusal or error (message on stderr); ``--json`` where a
script would want to read the output."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import trust, wasmbin
from .adapters import Adapter, adapter_named, file_engine, is_engine_error
from .catalog import AttachReport, attach, install, installed, uninstall
from .errors import BuildWarning, UsageError, WasmUdfError
from .limits import Limits
from .trust import Policy

T = TypeVar("T")


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "NULL"
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return "x'" + bytes(v).hex() + "'"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |", line]
    out += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in text]
    out.append(line)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _engine_for(db: str | None, engine: str | None) -> str:
    """The engine a database file belongs to, from its header; ``engine`` (or DuckDB) for a
    new file or memory."""
    if db and Path(db).is_file() and Path(db).stat().st_size > 0:  # SQLite leaves new files empty
        with open(db, "rb") as f:
            found = file_engine(f.read(16))
        if found is None:
            raise UsageError(f"{db} is neither a SQLite nor a DuckDB database")
        if engine and engine != found:
            raise UsageError(f"{db} is a {found} database, not {engine}")
        return found
    return engine or "duckdb"


def _connect(db: str | None, engine: str | None) -> tuple[Any, Adapter]:
    adapter = adapter_named(_engine_for(db, engine))
    return adapter.connect(db), adapter


def _on_db(args: argparse.Namespace, work: Callable[[Any], T]) -> T:
    """``work(con)`` on the --db database, closed afterwards."""
    con, _ = _connect(args.db, args.engine)
    try:
        return work(con)
    finally:
        con.close()


def _policy(args: argparse.Namespace) -> Policy | None:
    keys = args.trusted_key or []
    if not keys and not args.require_signature:
        return None
    return Policy(require_signature=args.require_signature, trusted_keys=keys)


def _print_refused(report: AttachReport) -> None:
    for name, reason in report.refused.items():
        print(f"wasmudf: refused installed module {name!r}: {reason}", file=sys.stderr)


def cmd_sql(args: argparse.Namespace) -> int:
    from .examples import example_paths
    from .registration import register

    modules = [] if args.no_examples else example_paths()
    modules += args.udf or []
    con, adapter = _connect(args.db, args.engine)
    try:
        refused = False
        if args.db:
            report = attach(con, policy=_policy(args))
            _print_refused(report)
            refused = bool(report.refused)
            installed_names = {n.lower() for names in report.registered.values() for n in names}
            modules = [m for m in modules if not _all_installed(m, installed_names)]
        for path in modules:
            reg = register(con, path, replace=True)
            if args.verbose:
                print(f"wasmudf: {Path(str(path)).name}: {', '.join(reg)} ({reg.path}: {reg.path_reason})",
                      file=sys.stderr)
        columns, rows = adapter.query(con, args.query)
        if args.json:
            print(json.dumps([dict(zip(columns, r)) for r in rows], default=str))
        elif columns:
            print(_table(columns, rows))
    finally:
        con.close()
    return 1 if refused else 0


def _all_installed(path: Any, installed_names: set[str]) -> bool:
    """Whether every function of an example module is already there from the catalog (an
    installed version wins over the bundled one)."""
    from .module import read_manifest

    manifest = read_manifest(Path(path).read_bytes(), str(path))
    return all(f.name.lower() in installed_names for f in manifest.functions)


def cmd_install(args: argparse.Namespace) -> int:
    config = {}
    for item in args.config or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--config takes KEY=VALUE, not {item!r}")
        config[key] = value
    limits = None
    if args.timeout_ms is not None or args.memory_mb is not None:
        limits = Limits(
            timeout_ms=args.timeout_ms if args.timeout_ms is not None else Limits().timeout_ms,
            memory_bytes=args.memory_mb * 1024 * 1024 if args.memory_mb is not None else Limits().memory_bytes,
        )
    record = _on_db(
        args,
        lambda con: install(
            con,
            args.module,
            name=args.name,
            tenant=args.tenant,
            grant=args.grant or [],
            config=config,
            limits=limits,
            policy=_policy(args),
            sha256=args.sha256,
        ),
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(record)))
    else:
        signer = f", signed by {record.key_id}" if record.key_id else ", unsigned"
        print(f"installed {record.name} ({record.sha256[:12]}{signer}): {len(record.functions)} functions")
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    report = _on_db(args, lambda con: attach(con, policy=_policy(args)))
    if args.json:
        print(json.dumps(dataclasses.asdict(report)))
    else:
        for name, functions in report.registered.items():
            print(f"attached {name}: {', '.join(functions)}")
    _print_refused(report)
    return 1 if report.refused else 0


def cmd_list(args: argparse.Namespace) -> int:
    modules = _on_db(args, installed)
    if args.json:
        print(json.dumps([dataclasses.asdict(m) for m in modules]))
        return 0
    for m in modules:
        signer = f"signed by {m.key_id}" if m.key_id else "unsigned"
        extra = f", tenant {m.tenant}" if m.tenant else ""
        grants = f", grants {', '.join(m.grants)}" if m.grants else ""
        print(f"{m.name}  sha256:{m.sha256[:12]}  {signer}{extra}{grants}")
        for f in m.functions:
            print(f"    {f}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    functions = _on_db(args, lambda con: uninstall(con, args.name))
    print(f"uninstalled {args.name}: {', '.join(functions)}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    key, pub, kid = trust.generate_key(args.out)
    print(f"wrote {key} (private, keep it secret) and {pub} (public); key id {kid}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    wasm = Path(args.module).read_bytes()
    signed = trust.sign(wasm, trust.load_private_key(args.key))
    out = Path(args.output or args.module)
    out.write_bytes(signed)
    sig = trust.read_signature(signed)
    assert sig is not None
    print(f"signed {out} with key {sig.key_id}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    wasm = Path(args.module).read_bytes()
    sig = Policy(require_signature=True, trusted_keys=args.trusted_key).check(wasm, args.module)
    assert sig is not None
    print(f"{args.module}: signed by {sig.key_id}, signature valid")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .build import build

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BuildWarning)
        manifest = build(args.sources, args.output, include_dirs=args.include or (), defines=args.define or ())
    for warning in caught:
        print(f"wasmudf: warning: {warning.message}", file=sys.stderr)
    names = ", ".join(f["name"] for f in manifest["functions"])
    print(f"wrote {args.output}: {_count(len(manifest['functions']), 'function')} ({names})")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def cmd_inspect(args: argparse.Namespace) -> int:
    from .build import builtin_clashes
    from .module import load, read_manifest

    try:
        wasm = Path(args.module).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.module}: {exc.strerror}") from None
    manifest = read_manifest(wasm, args.module)
    module = load(wasm, grant=manifest.capabilities, tenant="inspect")
    signature = trust.read_signature(wasm, args.module)
    compiled = module._compiled
    info = {
        "module": args.module,
        "sha256": hashlib.sha256(wasm).hexdigest(),
        "size": len(wasm),
        "abi": manifest.abi,
        "capabilities": list(manifest.capabilities),
        "functions": [
            {
                "name": s.name,
                "kind": s.kind,
                "signature": s.signature(),
                "nulls": s.nulls,
                "window": s.window,
                "merge": s.kind == "aggregate" and f"{s.export}__merge" in {e.name for e in compiled.exports},
                "deterministic": s.deterministic,
                "doc": s.doc,
            }
            for s in manifest.functions
        ],
        "imports": [f"{i.module}.{i.name}" for i in compiled.imports],
        "exports": [e.name for e in compiled.exports],
        "custom_sections": [s.name for s in wasmbin.sections(wasm) if s.name is not None],
        "signed_by": signature.key_id if signature else None,
        "warnings": builtin_clashes(s.name for s in manifest.functions),
    }
    if args.engine:
        info["engine"] = _registration_path(module, args.engine)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"module        {info['module']}")
    print(f"sha256        {info['sha256']}")
    print(f"size          {info['size']} bytes, ABI {info['abi']}")
    print(f"capabilities  {', '.join(info['capabilities']) or '(none)'}")
    print(f"signed by     {info['signed_by'] or '(unsigned)'}")
    print(f"imports       {', '.join(info['imports']) or '(none)'}")
    print(f"exports       {', '.join(info['exports'])}")
    print("functions")
    for fn in info["functions"]:
        flags = [fn["kind"], f"nulls={fn['nulls']}"]
        flags += (["window"] if fn["window"] else []) + (["merge"] if fn["merge"] else [])
        flags += [] if fn["deterministic"] else ["volatile"]
        print(f"  {fn['signature']:<58} [{', '.join(flags)}]")
        if fn["doc"]:
            print(f"      {fn['doc']}")
    for warning in info["warnings"]:
        print(f"warning: {warning}")
    if args.engine:
        engine = info["engine"]
        print(f"on {engine['name']:<10} {engine['path']}: {engine['reason']}")
    return 0


def _registration_path(module: Any, engine: str) -> dict[str, str]:
    """How the module's functions would run on a new in-memory database of ``engine``."""
    from .registration import register

    con, _ = _connect(None, engine)
    try:
        reg = register(con, module)
        return {"name": engine, "path": reg.path, "reason": reg.path_reason}
    finally:
        con.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wasmudf", description="Sandboxed WebAssembly SQL functions.")
    sub = p.add_subparsers(dest="command", required=True)

    sql = sub.add_parser(
        "sql",
        help="run SQL with the example modules (and --udf ones) registered",
        description="Run one SQL statement on an in-memory database (or --db) with "
        "the example UDF modules registered, and print the result.",
    )
    sql.add_argument("query", help="the SQL statement")
    sql.add_argument("--engine", choices=("duckdb", "sqlite"), help="default: the --db file's, else duckdb")
    sql.add_argument("--db", help="database file (default: in memory); its installed modules are attached")
    sql.add_argument("--udf", action="append", metavar="X.wasm", help="register another module")
    sql.add_argument("--no-examples", action="store_true", help="do not register the examples")
    sql.add_argument("--json", action="store_true", help="print rows as JSON objects")
    sql.add_argument("-v", "--verbose", action="store_true",
                     help="say, for each module, how the engine calls its functions (DuckDB: natively or not, and why)")
    _policy_args(sql)
    sql.set_defaults(run=cmd_sql)

    build = sub.add_parser(
        "build",
        help="compile C, Zig, Rust or AssemblyScript UDF sources into a module",
        description="Compile C files (with the pinned zig toolchain), or one Zig, Rust (.rs) or AssemblyScript "
        "(.ts) file, and embed the manifest. Compiler warnings are shown; they do not fail the build.",
    )
    build.add_argument("sources", nargs="+", help=".c files, or one .zig, .rs or .ts file")
    build.add_argument("-I", dest="include", action="append", metavar="DIR", help="C: an include directory")
    build.add_argument("-D", dest="define", action="append", metavar="NAME[=VALUE]", help="C: a macro definition")
    build.add_argument("-o", "--output", required=True, help="the .wasm file to write")
    build.set_defaults(run=cmd_build)

    inspect = sub.add_parser(
        "inspect",
        help="show a module's manifest, imports, exports, sha256",
        description="Check a module as load() would and describe it.",
    )
    inspect.add_argument("module", help="the .wasm file")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.add_argument("--engine", choices=("duckdb", "sqlite"),
                         help="also register it on a new in-memory database and say how it runs there")
    inspect.set_defaults(run=cmd_inspect)

    install_p = sub.add_parser(
        "install",
        help="check a module, store it in a database's catalog and register it",
        description="Store a module in the database's wasmudf_modules table (replacing one of the same "
        "name), after checking it as load() does. Capabilities must be granted with --grant.",
    )
    install_p.add_argument("module", help="the .wasm file")
    _db_args(install_p)
    install_p.add_argument("--name", help="catalog name (default: the file name without .wasm)")
    install_p.add_argument("--tenant", help="whose secrets secret_get may read")
    install_p.add_argument("--grant", action="append", metavar="CAP", help="allow a capability (repeat)")
    install_p.add_argument("--config", action="append", metavar="KEY=VALUE", help="config for config_get")
    install_p.add_argument("--timeout-ms", type=float, help="Limits.timeout_ms for this module")
    install_p.add_argument("--memory-mb", type=int, help="Limits.memory_bytes for this module, in MiB")
    install_p.add_argument("--sha256", help="refuse the module unless it has this digest")
    install_p.add_argument("--json", action="store_true", help="print the catalog record as JSON")
    _policy_args(install_p)
    install_p.set_defaults(run=cmd_install)

    attach_p = sub.add_parser(
        "attach",
        help="check every installed module of a database again",
        description="Load every module in the database's catalog as a new connection would, re-checking "
        "digests, signatures and grants; exit 1 when any is refused.",
    )
    _db_args(attach_p)
    attach_p.add_argument("--json", action="store_true", help="print the report as JSON")
    _policy_args(attach_p)
    attach_p.set_defaults(run=cmd_attach)

    list_p = sub.add_parser("list", help="list installed modules", description="List a database's installed modules.")
    _db_args(list_p)
    list_p.add_argument("--json", action="store_true", help="print JSON")
    list_p.set_defaults(run=cmd_list)

    uninstall_p = sub.add_parser(
        "uninstall", help="remove an installed module", description="Remove a module from the catalog."
    )
    uninstall_p.add_argument("name", help="the catalog name")
    _db_args(uninstall_p)
    uninstall_p.set_defaults(run=cmd_uninstall)

    keygen = sub.add_parser(
        "keygen",
        help="make an Ed25519 signing key",
        description="Write a private key (PEM, mode 0600) to OUT and its public key (hex) to OUT.pub.",
    )
    keygen.add_argument("--out", required=True, help="where to write the private key")
    keygen.set_defaults(run=cmd_keygen)

    sign_p = sub.add_parser(
        "sign",
        help="sign a module",
        description="Add (or replace) the module's wasmudf.signature section, covering every other byte.",
    )
    sign_p.add_argument("module", help="the .wasm file")
    sign_p.add_argument("--key", required=True, help="the private key from keygen")
    sign_p.add_argument("-o", "--output", help="where to write the signed module (default: in place)")
    sign_p.set_defaults(run=cmd_sign)

    verify_p = sub.add_parser(
        "verify",
        help="check a module's signature",
        description="Exit 0 when the module is signed by one of the trusted keys and unchanged since.",
    )
    verify_p.add_argument("module", help="the .wasm file")
    verify_p.add_argument("--trusted-key", action="append", required=True, metavar="PUB", help="a .pub file or hex key")
    verify_p.set_defaults(run=cmd_verify)
    return p


def _db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, help="the SQLite or DuckDB database file")
    p.add_argument("--engine", choices=("duckdb", "sqlite"), help="for a new file (default: duckdb)")


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--require-signature", action="store_true", help="refuse unsigned modules")
    p.add_argument("--trusted-key", action="append", metavar="PUB", help="a trusted public key (.pub or hex)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:  # `wasmudf inspect x.wasm | head`: the reader has gone, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except WasmUdfError as exc:
        print(f"wasmudf: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # database errors: report them like the engine's own shell
        if is_engine_error(exc):
            print(f"wasmudf: {type(exc).__name__}: {str(exc).strip()}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
