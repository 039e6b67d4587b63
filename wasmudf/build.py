"""``wasmudf build``: compile C, Zig, Rust or AssemblyScript UDF sources to a module with its manifest.

The SDKs leave one JSON fragment per declaration in the module's data, behind the marker
``WASMUDF-MANIFEST-FRAGMENT:`` (neither zig's linker nor wasm-ld merges custom sections the
way we need). The build collects them in order and writes the single ``wasmudf`` custom
section the host reads; the module's code is untouched.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from . import abi, wasmbin
from .errors import BuildError, BuildWarning

MARKER = b"WASMUDF-MANIFEST-FRAGMENT:"
ZIG_VERSION = "0.17.1"


def guest_dir() -> Path:
    """The directory holding the SDKs (``wasmudf.h``, ``wasmudf.zig``)."""
    return Path(str(files("wasmudf") / "guest"))


def _zig(*args: str, cwd: Path) -> None:
    cmd = [sys.executable, "-m", "ziglang", *args]
    env = dict(os.environ)
    # Keep zig's caches out of the source tree, so builds leave nothing behind.
    cache = Path(tempfile.gettempdir()) / "wasmudf-zig-cache"
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(cache))
    env.setdefault("ZIG_LOCAL_CACHE_DIR", str(cache))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        if "No module named ziglang" in proc.stderr:
            raise BuildError(
                f"the zig toolchain is missing: pip install 'wasmudf[build]' (ziglang=={ZIG_VERSION})"
            )
        raise BuildError(f"compilation failed:\n{proc.stderr.strip()}")
    if proc.stderr.strip():  # the compiler's warnings: shown, never fatal for the user's code
        warnings.warn(f"the compiler warned:\n{proc.stderr.strip()}", BuildWarning, stacklevel=4)


def compile_sources(
    sources: Sequence[str | os.PathLike[str]],
    output: Path,
    *,
    include_dirs: Sequence[str | os.PathLike[str]] = (),
    defines: Sequence[str] = (),
    strict: bool = False,
) -> dict[str, Any] | None:
    """Compile C files (any number) or one Zig, Rust or AssemblyScript file into ``output``;
    returns the manifest when the language declares it outside the code (AssemblyScript).
    ``include_dirs`` and ``defines`` (``NAME`` or ``NAME=value``) are for C; ``strict`` makes
    C warnings errors (the project's own examples are built so)."""
    paths = [Path(s).resolve() for s in sources]
    if not paths:
        raise BuildError("no source files given")
    for p in paths:
        if not p.is_file():
            raise BuildError(f"source file not found: {p}")
    kinds = {p.suffix for p in paths}
    sdk = guest_dir()
    if (include_dirs or defines) and not kinds <= {".c"}:
        raise BuildError("include directories (-I) and defines (-D) apply to C sources only")
    if kinds <= {".c"}:
        # wasi-libc gives C code its standard headers; only what needs the system imports
        # anything (stdio's files, say), and the host refuses that unless `wasi` is granted.
        _zig(
            "cc",
            "--target=wasm32-wasi",
            "-mexec-model=reactor",
            "-O3",
            "-msimd128",
            "-s",
            "-std=c11",
            "-Wall",
            "-UNDEBUG",  # assert() checks (and fails the call) unless the user passes -D NDEBUG
            *(["-Werror"] if strict else []),
            "-Wl,--no-entry",
            f"-I{sdk}",
            *(f"-I{Path(d).resolve()}" for d in include_dirs),
            *(f"-D{d}" for d in defines),
            # __FILE__ (in assert(), say) relative to the sources, so a build does not depend
            # on where the checkout is: the examples rebuild to the same bytes anywhere.
            *(f"-fmacro-prefix-map={d}/=" for d in sorted({str(p.parent) for p in paths})),
            "-o",
            str(output),
            *map(str, paths),
            cwd=paths[0].parent,
        )
    elif kinds == {".zig"} and len(paths) == 1:
        _zig(
            "build-exe",
            "-target",
            "wasm32-freestanding",
            "-mcpu",
            "generic+simd128",
            "-fno-entry",
            "-rdynamic",
            "-O",
            "ReleaseFast",
            "-fstrip",
            "--dep",
            "wasmudf",
            f"-Mroot={paths[0]}",
            f"-Mwasmudf={sdk / 'wasmudf.zig'}",
            f"-femit-bin={output}",
            cwd=paths[0].parent,
        )
    elif kinds == {".rs"} and len(paths) == 1:
        _rust(paths[0], output, sdk)
    elif kinds == {".ts"} and len(paths) == 1:
        return _assemblyscript(paths[0], output, sdk)
    else:
        raise BuildError("give C files (.c), one Zig (.zig), Rust (.rs) or AssemblyScript (.ts) file")
    return None


#: Debian's rustc 1.63 with libstd-rust-dev-wasm32 (scripts/setup.sh installs them); a
#: rustup toolchain usually has no wasm32 std, so /usr/bin/rustc comes first.
RUSTC_CANDIDATES = ("/usr/bin/rustc", "rustc")


def _rustc() -> str:
    configured = os.environ.get("WASMUDF_RUSTC")
    for candidate in ([configured] if configured else []) + list(RUSTC_CANDIDATES):
        found = shutil.which(candidate)
        if found:
            return found
    raise BuildError("no rustc: install Debian's rustc and libstd-rust-dev-wasm32 (scripts/setup.sh does)")


def _rust(source: Path, output: Path, sdk: Path) -> None:
    """The SDK as a crate of its own, then the UDF file as a cdylib linked against it."""
    rustc = _rustc()
    common = ["--edition", "2021", "--target", "wasm32-unknown-unknown", "-C", "opt-level=3", "-C", "debuginfo=0",
              # Panic messages carry source paths: make them the same wherever the checkout is.
              f"--remap-path-prefix={sdk.resolve()}=wasmudf", f"--remap-path-prefix={source.resolve().parent}=."]
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "libwasmudf.rlib"
        steps = [
            [rustc, *common, "--crate-type", "rlib", "--crate-name", "wasmudf", "-o", str(lib), str(sdk / "wasmudf.rs")],
            [rustc, *common, "--crate-type", "cdylib", "--crate-name", "udf", "-C", "strip=symbols",
             "-L", tmp, "--extern", f"wasmudf={lib}", "-o", str(output), str(source)],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=source.parent)
            if proc.returncode != 0:
                raise BuildError(f"compilation failed:\n{proc.stderr.strip()}")


# -- AssemblyScript: no macros, so `wasmudf build` reads the declaration comments and writes
#    the ABI exports around the author's functions itself.

_AS_DECLARATION = re.compile(
    r'^\s*//\s*@wasmudf\s+(scalar|aggregate)\s+(\w+)\s*\(((?:[^()]|\([^()]*\))*)\)\s*->\s*(\w+(?:\(\s*\d+\s*,\s*\d+\s*\))?)'
    r'((?:\s+(?:window|merge|serialize))*)\s+"([^"\\]*)"\s*$'
)
#: decimal(p,s) with p <= 18: the unscaled value as an i64 (scalars only).
_AS_DECIMAL = re.compile(r"decimal\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_AS_TYPES = {
    "bool": "bool", "int32": "i32", "int64": "i64", "float32": "f32", "float64": "f64", "utf8": "string",
    # days since 1970-01-01, and microseconds (timestamptz: UTC), as plain integers
    "date": "i32", "timestamp": "i64", "timestamptz": "i64",
}
_AS_ITEM = re.compile(r"^\s*export\s+(function|class)\s+(\w+)")


def _as_declarations(source: str) -> list[dict[str, Any]]:
    lines = source.splitlines()
    found = []
    for i, line in enumerate(lines):
        m = _AS_DECLARATION.match(line)
        if not m:
            if "@wasmudf" in line:
                raise BuildError(f"line {i + 1}: cannot read this declaration: {line.strip()}")
            continue
        kind, name, params, returns, flags, doc = m.groups()
        types = [re.sub(r"\s+", "", t) for t in re.split(r",(?![^()]*\))", params) if t.strip()]
        returns = re.sub(r"\s+", "", returns)
        for t in [*types, returns]:
            decimal = _AS_DECIMAL.fullmatch(t)
            if decimal and (kind != "scalar" or not 1 <= int(decimal.group(1)) <= 18):
                raise BuildError(f"line {i + 1}: AssemblyScript takes decimal(p,s) with p <= 18 (an i64), in scalars")
            if t not in _AS_TYPES and not decimal:
                raise BuildError(
                    f"line {i + 1}: AssemblyScript UDFs take {', '.join(_AS_TYPES)}, decimal(p,s) (p <= 18), not {t!r}"
                )
        item = next((_AS_ITEM.match(x) for x in lines[i + 1 :] if x.strip() and not x.strip().startswith("//")), None)
        want = "function" if kind == "scalar" else "class"
        if item is None or item.group(1) != want:
            raise BuildError(f"line {i + 1}: the declaration must be followed by `export {want} ...`")
        if kind == "scalar" and not 1 <= len(types) <= 3 or kind == "aggregate" and not 1 <= len(types) <= 2:
            raise BuildError(f"line {i + 1}: {name}: this SDK handles 1-3 parameters (aggregates 1-2)")
        found.append({"kind": kind, "name": name, "params": types, "returns": returns, "flags": flags.split(),
                      "doc": doc, "item": item.group(2)})
    if not found:
        raise BuildError("the source declares no function (a `// @wasmudf scalar ...` line)")
    return found


def _as_entry(decls: list[dict[str, Any]]) -> str:
    """The generated entry file: the SDK's exports and one ABI export per declaration."""
    items = ", ".join(sorted({f"{d['item']} as user_{d['item']}" for d in decls}))
    out = [
        'import * as udf from "./wasmudf";',
        f'import {{ {items} }} from "./udf_source";',
        'export { wasmudf_abi_version, wasmudf_alloc, wasmudf_reset, wasmudf_error } from "./wasmudf";',
    ]
    for d in decls:
        name, user = d["name"], f"user_{d['item']}"
        ts = [_AS_TYPES.get(t, "i64") for t in d["params"]]  # a decimal is its i64 unscaled value
        ret = _AS_TYPES.get(d["returns"], "i64")
        n = len(ts)
        if d["kind"] == "scalar":
            wide = sum(1 << i for i, t in enumerate(d["params"]) if _AS_DECIMAL.fullmatch(t))
            wide |= 256 if _AS_DECIMAL.fullmatch(d["returns"]) else 0
            out.append(
                f"export function {name}(args: u32, nargs: u32, out: u32): i32 {{ "
                f"return udf.scalar{n}<{', '.join(ts)}, {ret}>(args, nargs, out, {user}, {wide}); }}"
            )
            continue
        params = ", ".join(f"a{i}: {t}" for i, t in enumerate(ts))
        names = ", ".join(f"a{i}" for i in range(n))
        fold = f"udf.fold{n}<{user}, {', '.join(ts)}>"
        out += [
            f"export function {name}__init(): u32 {{ return udf.stateNew<{user}>(); }}",
            f"export function {name}__update(s: u32, args: u32, nargs: u32): i32 {{ return {fold}(s, args, nargs, "
            f"(st: {user}, {params}): void => {{ st.step({names}); }}); }}",
            f"export function {name}__finalize(s: u32, out: u32): i32 {{ return udf.result<{user}, {ret}>(s, out, "
            f"(st: {user}): {ret} => st.finish(), true); }}",
        ]
        if "window" in d["flags"]:
            out += [
                f"export function {name}__inverse(s: u32, args: u32, nargs: u32): i32 {{ return {fold}(s, args, nargs, "
                f"(st: {user}, {params}): void => {{ st.inverse({names}); }}); }}",
                f"export function {name}__value(s: u32, out: u32): i32 {{ return udf.result<{user}, {ret}>(s, out, "
                f"(st: {user}): {ret} => st.finish(), false); }}",
            ]
        if "merge" in d["flags"]:
            out.append(
                f"export function {name}__merge(s: u32, o: u32): i32 {{ return udf.merge<{user}>(s, o, "
                f"(st: {user}, other: {user}): void => {{ st.merge(other); }}); }}"
            )
        if "serialize" in d["flags"]:
            out += [
                f"export function {name}__serialize(s: u32, out: u32): i32 {{ return udf.serialize<{user}>(s, out, "
                f"(st: {user}): ArrayBuffer => st.serialize()); }}",
                f"export function {name}__deserialize(p: u32, len: u32): u32 {{ return udf.deserialize<{user}>(p, len, "
                f"(bytes: ArrayBuffer): {user} => {user}.deserialize(bytes)); }}",
            ]
    return "\n".join(out) + "\n"


def _asc() -> list[str]:
    configured = os.environ.get("WASMUDF_ASC")
    if configured:
        return [configured]
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            asc = folder / "node_modules" / ".bin" / "asc"
            if asc.is_file():
                return [str(asc)]
    raise BuildError(
        "the AssemblyScript compiler is missing: run `npm ci` in the project "
        "(assemblyscript@0.28.20 is pinned in package-lock.json), or set WASMUDF_ASC"
    )


def _assemblyscript(source: Path, output: Path, sdk: Path) -> dict[str, Any]:
    text = source.read_text()
    decls = _as_declarations(text)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "udf_source.ts").write_text(text)
        shutil.copyfile(sdk / "wasmudf.ts", work / "wasmudf.ts")
        (work / "entry.ts").write_text(_as_entry(decls))
        cmd = [*_asc(), "entry.ts", "--outFile", str(output), "--runtime", "stub", "--use", "abort=", "-O3",
               "--noAssert"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
        if proc.returncode != 0:
            raise BuildError(f"compilation failed:\n{(proc.stderr or proc.stdout).strip()}")
    functions = []
    for d in decls:
        entry: dict[str, Any] = {"name": d["name"], "kind": d["kind"], "params": d["params"], "returns": d["returns"]}
        if d["kind"] == "aggregate":
            entry["window"] = "window" in d["flags"]
        entry["doc"] = d["doc"]
        functions.append(entry)
    return {"abi": abi.ABI_VERSION, "functions": functions}


def columns_from_text(text: str, function: str) -> list[dict[str, str]]:
    """A table function's columns as the SDKs write them, ``"ordinal int32, part utf8"``, in
    the manifest's form (the manifest's own checks then apply to the names and types)."""
    columns = []
    for item in text.split(","):
        words = item.split()
        if len(words) != 2:
            raise BuildError(f"{function}: cannot read the column {item.strip()!r}; write columns as \"name type, ...\"")
        columns.append({"name": words[0], "type": words[1]})
    return columns


def manifest_from_fragments(wasm: bytes) -> dict[str, Any]:
    """Collect the SDK's fragments into a manifest object, in declaration order."""
    functions: list[dict[str, Any]] = []
    capabilities: list[str] = []
    for segment in wasmbin.data_segment_bytes(wasm):
        pos = segment.find(MARKER)
        while pos != -1:
            end = segment.find(b"\0", pos)
            raw = segment[pos + len(MARKER) : end if end != -1 else len(segment)]
            try:
                fragment = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise BuildError(
                    f"a declaration produced invalid JSON ({exc}): {raw[:200]!r}; "
                    "doc strings must not contain quotes or backslashes"
                ) from None
            if "capability" in fragment:
                capabilities.append(fragment["capability"])
            elif "manifest" in fragment:  # the Zig SDK emits the whole list at once
                functions.extend(fragment["manifest"]["functions"])
                capabilities.extend(fragment["manifest"].get("capabilities", []))
            else:
                functions.append(fragment)
            pos = segment.find(MARKER, pos + 1)
    if not functions:
        raise BuildError("the sources declare no function (use WASMUDF_SCALAR, udf.scalar or scalar!)")
    for f in functions:
        if isinstance(f.get("columns"), str):
            f["columns"] = columns_from_text(f["columns"], f.get("name", "?"))
    manifest: dict[str, Any] = {"abi": abi.ABI_VERSION}
    if capabilities:
        manifest["capabilities"] = list(dict.fromkeys(capabilities))
    manifest["functions"] = functions
    return manifest


def build(
    sources: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    include_dirs: Sequence[str | os.PathLike[str]] = (),
    defines: Sequence[str] = (),
    strict: bool = False,
) -> dict[str, Any]:
    """Compile ``sources`` and write a module with its manifest to ``output``.

    C sources take ``include_dirs`` and ``defines``; compiler warnings are shown as
    :class:`BuildWarning` (errors with ``strict``). A function named like a DuckDB or SQLite
    built-in is warned about: ``register`` would refuse it.

    Returns the manifest. Raises BuildError (compiler output included) or ManifestError.
    """
    out = Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.wasm"
        declared = compile_sources(sources, raw_path, include_dirs=include_dirs, defines=defines, strict=strict)
        wasm = raw_path.read_bytes()
    manifest = declared if declared is not None else manifest_from_fragments(wasm)
    content = json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode()
    abi.parse_manifest(content)  # refuse to write a module the host would reject
    out.write_bytes(wasmbin.with_custom_section(wasm, abi.MANIFEST_SECTION, content))
    for message in builtin_clashes(f["name"] for f in manifest["functions"]):
        warnings.warn(message, BuildWarning, stacklevel=2)
    return manifest


def builtin_clashes(names: Iterable[str]) -> list[str]:
    """A warning for each name that is also a built-in function of SQLite or (when it is
    installed) DuckDB: registering it there fails, so the function should be renamed."""
    found = []
    for name in names:
        engines = [engine for engine, builtins in _builtin_names().items() if name.lower() in builtins]
        if engines:
            found.append(
                f"`{name}` is also a built-in {' and '.join(engines)} function, so register() will refuse it "
                f"there: rename it (e.g. `udf_{name}`)"
            )
    return found


@functools.cache
def _builtin_names() -> dict[str, frozenset[str]]:
    import sqlite3

    con = sqlite3.connect(":memory:")
    names = {"SQLite": frozenset(r[0].lower() for r in con.execute("SELECT name FROM pragma_function_list"))}
    con.close()
    try:
        import duckdb
    except ImportError:
        return names
    duck = duckdb.connect()
    names["DuckDB"] = frozenset(r[0].lower() for r in duck.execute("SELECT function_name FROM duckdb_functions()").fetchall())
    duck.close()
    return names
