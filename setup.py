"""Wheel build step: ship the CUDA/C++ plugin sources (the whole ``cuda/`` tree) as ``sppquant/_cuda``.

Everything else is in pyproject.toml. Without the sources an installed sppquant cannot
build its TensorRT plugin (`sppquant build-plugin`); build outputs are never copied.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CUDA_EXCLUDE = shutil.ignore_patterns("build", "build-*", "build_*", "_build", "cmake-build-*", "CMakeFiles",
                                      "CMakeCache.txt", "*.so", "*.o", "*.a", "__pycache__", ".*")


class BuildPyWithCuda(build_py):
    """build_py, then copy cuda/ into the built package (skipped for editable installs: the checkout is used)."""

    def run(self) -> None:
        super().run()
        src = Path(__file__).resolve().parent / "cuda"
        if getattr(self, "editable_mode", False) or not src.is_dir():
            return
        dst = Path(self.build_lib) / "sppquant" / "_cuda"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=CUDA_EXCLUDE)


setup(cmdclass={"build_py": BuildPyWithCuda})
