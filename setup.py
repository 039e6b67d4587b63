"""Build the optional C accelerator and the DuckDB extension; everything else is in pyproject.toml.

``optional=True``: without a C compiler the package still installs and runs on its pure-Python
paths (wasmudf._native reports which one is in use). The DuckDB extension needs DuckDB's C API
headers, taken from DuckDB's pinned source distribution on PyPI (see duckdb_headers); without
them (offline, say) the accelerator is built without it and DuckDB runs on its Python path.
"""

import hashlib
import io
import os
import platform
import shutil
import struct
import sys
import tarfile
import urllib.request
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

#: DuckDB's source distribution on PyPI, whose headers the extension is compiled against:
#: the version wasmudf's ``duckdb`` extra pins, checked by its sha256.
DUCKDB_SDIST = (
    "https://files.pythonhosted.org/packages/49/d8/ebb8ff07c617d1a8c25e7f7718a6955d2d5f7e539ec5219be1da478c0a42/"
    "duckdb-2.0.1.tar.gz",
    "5b3f493140e35b75298ee0fc606d98e3065e8601e64fe81b09326de7a6fd68e0",
)
DUCKDB_HEADERS = ("duckdb.h", "duckdb_extension.h")
#: The C API the extension asks for (duckdb_extension.h's default in that release); DuckDB
#: 1.5.6 and 2.0 load it.
DUCKDB_C_API = "v1.5.6"
DUCKDB_PLATFORMS = {"x86_64": "linux_amd64", "aarch64": "linux_arm64"}
EXTENSION_FILE = "wasmudf.duckdb_extension"
PUBLIC_KEY_FILE = "duckdb_extension_key.pem"


def duckdb_headers() -> Path | None:
    """A folder holding DuckDB's C API headers, extracted from the pinned source distribution
    (downloaded once into build/, or read from $WASMUDF_DUCKDB_SDIST), or None."""
    url, sha256 = DUCKDB_SDIST
    name = url.rsplit("/", 1)[1]
    target = Path("build") / f"{name.removesuffix('.tar.gz')}-include"
    if all((target / h).exists() for h in DUCKDB_HEADERS):
        return target.resolve()
    try:
        local = os.environ.get("WASMUDF_DUCKDB_SDIST")
        if local:
            data = Path(local).read_bytes()
        else:
            with urllib.request.urlopen(url, timeout=120) as response:
                data = response.read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"{name} does not have the pinned sha256")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for header in DUCKDB_HEADERS:
                member = tar.extractfile(f"{name.removesuffix('.tar.gz')}/external/duckdb/src/include/{header}")
                (target / header).write_bytes(member.read())
    except Exception as exc:  # noqa: BLE001 - any failure means: no native DuckDB path
        print(f"wasmudf: DuckDB's headers are not available ({exc}); building without the DuckDB extension",
              file=sys.stderr)
        return None
    return target.resolve()


def extension_footer(version: str) -> bytes:
    """DuckDB's 512-byte metadata footer: eight 32-byte fields, stored last to first, then
    the 256-byte signature (zeros until signed)."""
    platform_name = DUCKDB_PLATFORMS[platform.machine()]
    fields = ["", "", "", "C_STRUCT", version, DUCKDB_C_API, platform_name, "4"]
    return b"".join(f.encode().ljust(32, b"\0") for f in fields) + bytes(256)


def sign_extension(path: Path, key_path: Path) -> None:
    """Sign the extension with a key made now (RSA-2048, PKCS#1 v1.5 over SHA-256 of the
    concatenated SHA-256 of each 1 MiB chunk, as DuckDB checks it) and keep only the public
    key: the private key never leaves this function."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    body = path.read_bytes()[:-256]
    chunks = b"".join(hashlib.sha256(body[i : i + (1 << 20)]).digest() for i in range(0, len(body), 1 << 20))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # DuckDB verifies the digest itself (mbedtls_pk_verify on the two-level hash): prehashed.
    signature = key.sign(hashlib.sha256(chunks).digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    path.write_bytes(body + signature)
    key_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


class BuildExtWithDuckDB(build_ext):
    """Build the accelerator with DuckDB's headers when they can be had, then the extension
    file DuckDB loads (adapters/_duckdb_shim.c, with its footer), signed."""

    def build_extensions(self) -> None:
        include = duckdb_headers() if platform.system() == "Linux" and platform.machine() in DUCKDB_PLATFORMS else None
        if include:
            for ext in self.extensions:
                ext.include_dirs.append(str(include))
                ext.define_macros.append(("WASMUDF_DUCKDB", "1"))
        super().build_extensions()
        accelerator = Path(self.get_ext_fullpath("wasmudf._speedups"))
        if include and accelerator.exists():
            self.build_duckdb_extension(include, accelerator.parent)

    def build_duckdb_extension(self, include: Path, package_dir: Path) -> None:
        objects = self.compiler.compile(
            ["wasmudf/adapters/_duckdb_shim.c"],
            output_dir=self.build_temp,
            include_dirs=[str(include), *self.include_dirs],
            extra_postargs=["-O2", "-fvisibility=hidden", "-fPIC"],
        )
        target = package_dir / EXTENSION_FILE
        self.compiler.link_shared_object(objects, str(target))
        version = "v" + self.distribution.get_version()
        target.write_bytes(target.read_bytes() + extension_footer(version))
        sign_extension(target, package_dir / PUBLIC_KEY_FILE)
        self.duckdb_outputs = [target, package_dir / PUBLIC_KEY_FILE]

    def copy_extensions_to_source(self) -> None:
        """An editable install (or --inplace) gets the extension next to the accelerator too."""
        super().copy_extensions_to_source()
        for built in getattr(self, "duckdb_outputs", []):
            shutil.copy2(built, Path("wasmudf") / built.name)

class BuildPyWithExamples(build_py):
    """Also put the example modules (built and committed in udfs/) into the package, so an
    installed wheel's ``wasmudf sql`` has them (see wasmudf/examples.py)."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "wasmudf" / "example_modules"
        target.mkdir(parents=True, exist_ok=True)
        for module in sorted(Path("udfs").glob("*/*.wasm")):
            shutil.copy2(module, target / module.name)


setup(
    cmdclass={"build_py": BuildPyWithExamples, "build_ext": BuildExtWithDuckDB},
    ext_modules=[
        Extension(
            "wasmudf._speedups",
            ["wasmudf/_speedups.c", "wasmudf/adapters/_sqlite.c", "wasmudf/adapters/_duckdb.c"],
            depends=["wasmudf/_speedups.h"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-missing-braces", "-fvisibility=hidden"],
        )
    ]
)
