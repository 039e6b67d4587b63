"""``%%wasmudf``: write a UDF in a notebook cell, in C or Zig.

    %load_ext wasmudf.ipython

    %%wasmudf --lang c --con con
    #include "wasmudf.h"
    static double fahrenheit(double c) { return c * 9 / 5 + 32; }
    WASMUDF_SCALAR(fahrenheit, float64, "Celsius to Fahrenheit", float64)

compiles the cell with the pinned toolchain (``wasmudf build``), caches the module by a hash
of the source, the language, the SDK and the toolchain version (an unchanged cell is not
compiled again), registers its functions on the connection named by ``--con`` (DuckDB or
apsw, replacing earlier versions), and binds the loaded :class:`~wasmudf.Module` to the
variable named by ``--as`` (default ``udf``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .build import build, guest_dir
from .module import Module, load
from .registration import register

SUFFIXES = {"c": ".c", "zig": ".zig"}


def build_dir() -> Path:
    """Where built cells are kept: under WASMUDF_CACHE_DIR (default ~/.cache/wasmudf)."""
    root = os.environ.get("WASMUDF_CACHE_DIR") or str(Path.home() / ".cache" / "wasmudf")
    return Path(root) / "cells"


def _toolchain() -> str:
    try:
        return version("ziglang")
    except PackageNotFoundError:  # pragma: no cover - the build extra is missing
        return "missing"


def cell_key(source: str, lang: str) -> str:
    """The cache key of a cell: everything that changes the module it builds."""
    digest = hashlib.sha256()
    digest.update(f"wasmudf-cell-1;{lang};ziglang={_toolchain()};".encode())
    for sdk in sorted(guest_dir().iterdir()):
        if sdk.is_file():
            digest.update(sdk.name.encode() + b"\0" + sdk.read_bytes())
    digest.update(source.encode())
    return digest.hexdigest()


def compile_cell(source: str, lang: str) -> tuple[Path, bool]:
    """The module built from ``source``, and whether it came from the cache."""
    if lang not in SUFFIXES:
        raise ValueError(f"--lang must be one of {', '.join(SUFFIXES)}, not {lang!r}")
    target = build_dir() / f"{cell_key(source, lang)}.wasm"
    if target.is_file():
        return target, True
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wasmudf-cell-") as tmp:
        src = Path(tmp) / f"cell{SUFFIXES[lang]}"
        src.write_text(source)
        out = Path(tmp) / "cell.wasm"
        build([src], out)
        partial = target.with_suffix(".tmp")
        shutil.copyfile(out, partial)
        os.replace(partial, target)  # atomic: a concurrent reader never sees half a module
    return target, False


@magics_class
class WasmUdfMagics(Magics):
    @magic_arguments()
    @argument("--lang", default="c", choices=sorted(SUFFIXES), help="the cell's language")
    @argument("--con", help="name of a DuckDB or apsw connection to register the functions on")
    @argument("--as", dest="var", default="udf", help="variable to bind the loaded Module to")
    @cell_magic
    def wasmudf(self, line: str, cell: str) -> None:
        """Compile the cell into a wasmudf module and register it (see the module docs)."""
        args = parse_argstring(self.wasmudf, line)
        path, cached = compile_cell(cell, args.lang)
        module: Module = load(path)
        self.shell.user_ns[args.var] = module
        where = ""
        if args.con:
            if args.con not in self.shell.user_ns:
                raise NameError(f"--con {args.con}: no such variable in this notebook")
            names = register(self.shell.user_ns[args.con], module, replace=True)
            where = f" and registered {', '.join(names)} on {args.con}"
        how = "from the cache" if cached else "compiled"
        print(f"{how}: {len(module.functions)} function(s) bound to `{args.var}`{where}")


def load_ipython_extension(ipython) -> None:  # noqa: ANN001 - IPython's own hook
    ipython.register_magics(WasmUdfMagics)
