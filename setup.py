"""Build the optional C accelerator; everything else is in pyproject.toml.

``optional=True``: without a C compiler the package still installs and runs on its pure-Python
paths (wasmudf._native reports which one is in use).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "wasmudf._speedups",
            ["wasmudf/_speedups.c", "wasmudf/_rows.c"],
            depends=["wasmudf/_speedups.h"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-missing-braces", "-fvisibility=hidden"],
        )
    ]
)
