"""The ``wasmudf`` command line: ``sql``, ``build``, ``inspect``."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import wasmbin
from .errors import WasmUdfError


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


def cmd_sql(args: argparse.Namespace) -> int:
    from .examples import example_paths
    from .registration import register

    modules = [] if args.no_examples else example_paths()
    modules += args.udf or []
    if args.engine == "duckdb":
        import duckdb

        con: Any = duckdb.connect(args.db or ":memory:")
    else:
        import apsw

        con = apsw.Connection(args.db or ":memory:")
    try:
        for path in modules:
            register(con, path)
        if args.engine == "duckdb":
            result = con.execute(args.query)
            columns = [d[0] for d in result.description or []]
            rows = result.fetchall()
        else:
            cursor = con.execute(args.query)
            try:
                columns = [d[0] for d in cursor.get_description()]
            except apsw.ExecutionCompleteError:  # a statement that returns no rows
                columns = []
            rows = list(cursor)
        if args.json:
            print(json.dumps([dict(zip(columns, r)) for r in rows], default=str))
        elif columns:
            print(_table(columns, rows))
    finally:
        con.close()
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from .build import build

    manifest = build(args.sources, args.output)
    names = ", ".join(f["name"] for f in manifest["functions"])
    print(f"wrote {args.output}: {len(manifest['functions'])} functions ({names})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .module import load, read_manifest

    with open(args.module, "rb") as f:
        wasm = f.read()
    manifest = read_manifest(wasm, args.module)
    module = load(wasm, grant=manifest.capabilities, tenant="inspect")
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
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"module        {info['module']}")
    print(f"sha256        {info['sha256']}")
    print(f"size          {info['size']} bytes, ABI {info['abi']}")
    print(f"capabilities  {', '.join(info['capabilities']) or '(none)'}")
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
    return 0


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
    sql.add_argument("--engine", choices=("duckdb", "sqlite"), default="duckdb")
    sql.add_argument("--db", help="database file (default: in memory)")
    sql.add_argument("--udf", action="append", metavar="X.wasm", help="register another module")
    sql.add_argument("--no-examples", action="store_true", help="do not register the examples")
    sql.add_argument("--json", action="store_true", help="print rows as JSON objects")
    sql.set_defaults(run=cmd_sql)

    build = sub.add_parser(
        "build",
        help="compile C or Zig UDF sources into a module",
        description="Compile C files or one Zig file with the pinned zig toolchain and embed the manifest.",
    )
    build.add_argument("sources", nargs="+", help=".c files, or one .zig file")
    build.add_argument("-o", "--output", required=True, help="the .wasm file to write")
    build.set_defaults(run=cmd_build)

    inspect = sub.add_parser(
        "inspect",
        help="show a module's manifest, imports, exports, sha256",
        description="Check a module as load() would and describe it.",
    )
    inspect.add_argument("module", help="the .wasm file")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(run=cmd_inspect)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except WasmUdfError as exc:
        print(f"wasmudf: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # database errors: report them like the engine's own shell
        if type(exc).__module__.split(".")[0] in ("duckdb", "_duckdb", "apsw"):
            print(f"wasmudf: {type(exc).__name__}: {str(exc).strip()}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
