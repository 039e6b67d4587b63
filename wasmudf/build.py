"""``wasmudf build``: compile C or Zig UDF sources to a module and embed its manifest.

The SDKs leave one JSON fragment per declaration in the module's data, behind the marker
``WASMUDF-MANIFEST-FRAGMENT:`` (neither zig's linker nor wasm-ld merges custom sections the
way we need). The build collects them in order and writes the single ``wasmudf`` custom
section the host reads; the module's code is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from . import abi, wasmbin
from .errors import WasmUdfError

MARKER = b"WASMUDF-MANIFEST-FRAGMENT:"
ZIG_VERSION = "0.17.1"


class BuildError(WasmUdfError):
    """The compiler failed, or the sources declare no function or an invalid one."""


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


def compile_sources(sources: Sequence[str | os.PathLike[str]], output: Path) -> None:
    """Compile C files (any number) or one Zig root file into ``output``."""
    paths = [Path(s).resolve() for s in sources]
    if not paths:
        raise BuildError("no source files given")
    for p in paths:
        if not p.is_file():
            raise BuildError(f"source file not found: {p}")
    kinds = {p.suffix for p in paths}
    sdk = guest_dir()
    if kinds <= {".c"}:
        _zig(
            "cc",
            "--target=wasm32-freestanding",
            "-Os",
            "-s",
            "-std=c11",
            "-Wall",
            "-Werror",
            "-Wl,--no-entry",
            f"-I{sdk}",
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
            "-fno-entry",
            "-rdynamic",
            "-O",
            "ReleaseSmall",
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
    else:
        raise BuildError("give C files (.c), one Zig root file (.zig), or one Rust file (.rs)")


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
    common = ["--edition", "2021", "--target", "wasm32-unknown-unknown", "-C", "opt-level=3", "-C", "debuginfo=0"]
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
    manifest: dict[str, Any] = {"abi": abi.ABI_VERSION}
    if capabilities:
        manifest["capabilities"] = list(dict.fromkeys(capabilities))
    manifest["functions"] = functions
    return manifest


def build(sources: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]) -> dict[str, Any]:
    """Compile ``sources`` and write a module with its manifest to ``output``.

    Returns the manifest. Raises BuildError (compiler output included) or ManifestError.
    """
    out = Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.wasm"
        compile_sources(sources, raw_path)
        wasm = raw_path.read_bytes()
    manifest = manifest_from_fragments(wasm)
    content = json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode()
    abi.parse_manifest(content)  # refuse to write a module the host would reject
    out.write_bytes(wasmbin.with_custom_section(wasm, abi.MANIFEST_SECTION, content))
    return manifest
