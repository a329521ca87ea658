"""Builds the Cython DSP kernels in cext/ as part of an ordinary `pip install .`.

Every cext/*.pyx becomes the extension cext.<name>. Kernels are compiled for the CPU
they will run on (-O3 -march=native: AVX2/AVX-512 on x86-64, NEON on the Pi's aarch64),
because the wheel is built on the box itself. Set BRANCHLINE_MARCH to override the
-march value (e.g. 'x86-64-v3' or 'armv8-a') when building for another machine, and
BRANCHLINE_EXT=name1,name2 to build only some kernels while working on them.
"""

import os
import platform
from glob import glob
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup


def _arch_flags():
    march = os.environ.get("BRANCHLINE_MARCH", "native")
    if platform.machine() in ("x86_64", "AMD64", "aarch64", "arm64"):
        return [f"-march={march}"]
    return []


def _extensions():
    only = {n for n in os.environ.get("BRANCHLINE_EXT", "").split(",") if n}
    exts = []
    for pyx in sorted(glob("cext/*.pyx")):
        name = Path(pyx).stem
        if only and name not in only:
            continue
        exts.append(
            Extension(
                f"cext.{name}",
                [pyx],
                extra_compile_args=["-O3", "-ffast-math", "-fno-math-errno", *_arch_flags()],
            )
        )
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=_extensions())
