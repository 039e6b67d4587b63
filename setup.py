"""Build the optional C accelerator; everything else is in pyproject.toml.

``optional=True``: without a C compiler the package still installs and runs on its pure-Python
paths (wasmudf._native reports which one is in use).
"""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

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
    cmdclass={"build_py": BuildPyWithExamples},
    ext_modules=[
        Extension(
            "wasmudf._speedups",
            ["wasmudf/_speedups.c", "wasmudf/adapters/_sqlite.c"],
            depends=["wasmudf/_speedups.h"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-missing-braces", "-fvisibility=hidden"],
        )
    ]
)
