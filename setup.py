"""Builds the native media plane (tonebridge._mediaplane); everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

NATIVE = "src/tonebridge/_native"

setup(
    ext_modules=[
        Extension(
            "tonebridge._mediaplane",
            sources=[
                f"{NATIVE}/{name}.c" for name in ("module", "g711", "jitter", "events", "rxstats", "plane")
            ],
            depends=[f"{NATIVE}/{name}.h" for name in ("common", "jitter", "events", "rxstats")],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        )
    ]
)
