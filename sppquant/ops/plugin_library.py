"""Locate, build and load the CUDA plugin library (``libsppquant_plugins.so``).

The library holds the kernels of every custom op (plain C API, e.g. ``sppq_spp_forward``)
and one TensorRT IPluginV3 creator per op in `sppquant.ops.OPS` (name, version and
namespace from each op's spec). Loading it with ``RTLD_GLOBAL`` after TensorRT registers
the creators with TensorRT's global registry; ``IPluginRegistry.load_library(path)`` /
``trtexec --dynamicPlugins=path`` work too.

Search order of :func:`find_plugin_library`: ``$SPPQUANT_PLUGIN_LIB``, then the build
folders of a source checkout (``cuda/build``, the default of :func:`build_plugin` there, and
``build/cuda``), the user cache ``$XDG_CACHE_HOME/sppquant/plugins/<version>`` (the default
build folder of an installed wheel, whose sources ship as ``sppquant/_cuda``) and the
package's own ``sppquant/ops/_build``. Never the current
directory: loading a shared library found in whatever folder a user happens to run from
would let any file dropped there run code.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sppquant.errors import BackendUnavailable

log = logging.getLogger(__name__)

PLUGIN_LIBRARY = "libsppquant_plugins.so"
KERNEL_LIBRARY = "libsppquant_spp_kernels.so"
ENV_LIBRARY = "SPPQUANT_PLUGIN_LIB"
ENV_TRT_INCLUDE = "SPPQUANT_TRT_INCLUDE"

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_DIR = _PACKAGE_DIR.parents[1]
# A source checkout has pyproject.toml next to cuda/; an installed package's parent is
# site-packages, whose ``cuda`` folder is NVIDIA's cuda-python, not our sources.
IN_CHECKOUT = (_REPO_DIR / "pyproject.toml").is_file() and (_REPO_DIR / "cuda" / "CMakeLists.txt").is_file()
CUDA_SOURCE_DIR = _REPO_DIR / "cuda" if IN_CHECKOUT else _PACKAGE_DIR.parent / "_cuda"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sppquant/plugins/<version>`` (default ``~/.cache``): builds of an installed package."""
    from sppquant import __version__  # noqa: PLC0415

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "sppquant" / "plugins" / __version__


DEFAULT_BUILD_DIR = CUDA_SOURCE_DIR / "build" if IN_CHECKOUT else user_cache_dir()  # cuda/build: ignored by git

_loaded: dict[Path, ctypes.CDLL] = {}


def candidate_paths(name: str = PLUGIN_LIBRARY) -> list[Path]:
    """Where :func:`find_plugin_library` looks, in order (the env var first when set)."""
    paths: list[Path] = []
    env = os.environ.get(ENV_LIBRARY)
    if env:
        paths.append(Path(env).expanduser())
    folders = [DEFAULT_BUILD_DIR, _REPO_DIR / "build" / "cuda"] if IN_CHECKOUT else []
    for folder in dict.fromkeys([*folders, user_cache_dir(), _PACKAGE_DIR / "_build"]):
        paths.append(folder / name)
    return paths


def find_plugin_library(name: str = PLUGIN_LIBRARY) -> Path:
    """Path of the built library; raises BackendUnavailable (one line) when none exists."""
    env = os.environ.get(ENV_LIBRARY)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise BackendUnavailable(f"{ENV_LIBRARY}={env} does not name a file")
        return path
    for path in candidate_paths(name):
        if path.is_file():
            return path
    raise BackendUnavailable(
        f"{name} not found (run `sppquant build-plugin`, or build_plugin() from Python, or set {ENV_LIBRARY}); "
        f"looked in {', '.join(str(p.parent) for p in candidate_paths(name))}"
    )


def find_tensorrt_include(explicit: str | os.PathLike[str] | None = None) -> Path:
    """A folder with NvInferRuntime.h: the argument, $SPPQUANT_TRT_INCLUDE, $TENSORRT_ROOT/include,
    or the usual system places."""
    if explicit:
        folder = Path(explicit).expanduser()
        if (folder / "NvInferRuntime.h").is_file():
            return folder
        raise BackendUnavailable(f"TensorRT headers not found: {explicit} has no NvInferRuntime.h")
    candidates: list[Path] = []
    if os.environ.get(ENV_TRT_INCLUDE):
        candidates.append(Path(os.environ[ENV_TRT_INCLUDE]).expanduser())
    if os.environ.get("TENSORRT_ROOT"):
        candidates.append(Path(os.environ["TENSORRT_ROOT"]).expanduser() / "include")
    candidates += [
        Path("/usr/include/x86_64-linux-gnu"),
        Path("/usr/include/aarch64-linux-gnu"),
        Path("/usr/include"),
        Path("/usr/local/TensorRT/include"),
    ]
    for folder in candidates:
        if (folder / "NvInferRuntime.h").is_file():
            return folder
    raise BackendUnavailable(f"TensorRT headers (NvInferRuntime.h) not found; set {ENV_TRT_INCLUDE} to their folder")


def detect_cuda_arch() -> str | None:
    """Compute capability of GPU 0 as CMake wants it (e.g. "90"), or None without a GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        res = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"\s*(\d+)\.(\d+)", res.stdout) if res.returncode == 0 else None
    return f"{match.group(1)}{match.group(2)}" if match else None


def parse_arch(arch: str) -> str | None:
    """``--arch``: ``native`` (the GPU's compute capability, else CMake's default list), ``sm_90`` or ``90``."""
    if arch == "native":
        return detect_cuda_arch()
    match = re.fullmatch(r"(?:sm_)?(\d{2,3}[af]?)", arch)
    if match is None:
        raise BackendUnavailable(f"--arch {arch!r}: expected native, sm_XX or XX (e.g. sm_90)")
    return match.group(1)


def build_plugin(
    build_dir: str | os.PathLike[str] | None = None,
    *,
    tensorrt_include: str | os.PathLike[str] | None = None,
    tensorrt_lib: str | os.PathLike[str] | None = None,
    cuda_archs: str | Sequence[str] | None = None,
    kernels_only: bool = False,
    jobs: int | None = None,
) -> Path:
    """Configure and build the library with CMake; returns the built .so path.

    ``cuda_archs`` defaults to the detected GPU's compute capability, else CMake's default
    list (sm_75..sm_90 with PTX). ``kernels_only`` builds libsppquant_spp_kernels.so, which
    needs no TensorRT headers.
    """
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BackendUnavailable("cmake not found on PATH (needed to build the plugin library)")
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)
    if nvcc is None:
        raise BackendUnavailable("nvcc (CUDA toolkit) not found on PATH (needed to build the SPP plugin)")
    if not (CUDA_SOURCE_DIR / "CMakeLists.txt").is_file():
        raise BackendUnavailable(f"CUDA sources not found at {CUDA_SOURCE_DIR} (reinstall sppquant from a wheel "
                                 "built with setup.py, or build from a source checkout)")
    out = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    args = [cmake, "-S", str(CUDA_SOURCE_DIR), "-B", str(out), f"-DCMAKE_CUDA_COMPILER={nvcc}"]
    if not kernels_only:
        args.append(f"-DTENSORRT_INCLUDE_DIR={find_tensorrt_include(tensorrt_include)}")
        if tensorrt_lib:
            args.append(f"-DTENSORRT_LIB_DIR={tensorrt_lib}")
    archs = cuda_archs if cuda_archs is not None else detect_cuda_arch()
    if archs:
        archs = archs if isinstance(archs, str) else ";".join(archs)
        args.append(f"-DCMAKE_CUDA_ARCHITECTURES={archs}")
    target = "sppquant_spp_kernels" if kernels_only else "sppquant_plugins"
    build = [cmake, "--build", str(out), "--target", target, "-j", str(jobs or os.cpu_count() or 2)]
    for cmd in (args, build):
        log.info("running %s", " ".join(cmd))
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            tail = (res.stdout + res.stderr).strip().splitlines()[-15:]
            log.error("build output:\n%s", "\n".join(tail))
            last = tail[-1] if tail else "no output"
            raise BackendUnavailable(f"building the SPP plugin failed ({Path(cmd[0]).name} exit {res.returncode}): {last}")
    lib = out / (KERNEL_LIBRARY if kernels_only else PLUGIN_LIBRARY)
    if not lib.is_file():
        raise BackendUnavailable(f"the build finished but {lib} is missing")
    log.info("built %s", lib)
    return lib


def load_plugin(path: str | os.PathLike[str] | None = None, *, build: bool = False) -> ctypes.CDLL:
    """Load the plugin library (RTLD_GLOBAL) and register its creator with TensorRT if loaded.

    With ``build=True`` a missing library is built first (:func:`build_plugin`).
    """
    if path is not None:
        lib_path = Path(path)
        if not lib_path.is_file():
            raise BackendUnavailable(f"SPP plugin library {lib_path} does not exist")
    else:
        try:
            lib_path = find_plugin_library()
        except BackendUnavailable:
            if not build:
                raise
            lib_path = build_plugin()
    lib_path = lib_path.resolve()
    if lib_path in _loaded:
        return _loaded[lib_path]
    try:
        lib = ctypes.CDLL(str(lib_path), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise BackendUnavailable(f"cannot load {lib_path}: {exc}") from exc
    for symbol in ("sppq_spp_forward", "sppq_error_string"):
        if not hasattr(lib, symbol):
            raise BackendUnavailable(f"{lib_path} is not an sppquant library (no {symbol})")
    lib.sppq_error_string.restype = ctypes.c_char_p
    lib.sppq_error_string.argtypes = [ctypes.c_int]
    if hasattr(lib, "sppq_register_plugins"):
        registered = lib.sppq_register_plugins() == 1
        log.info("loaded %s; TensorRT plugins %s %s", lib_path, plugin_names(),
                 "registered" if registered else "not registered (TensorRT not loaded)")
    _loaded[lib_path] = lib
    return lib


def plugin_names() -> str:
    """``sppquant::SpatialPyramidPooling v1, ...``: every registered op's plugin, for messages."""
    from sppquant.ops import OPS  # noqa: PLC0415 - the registry imports the op specs

    return ", ".join(f"{s.plugin.namespace}::{s.plugin.name} v{s.plugin.version}" for s in OPS.values())


def plugin_registered(lib: ctypes.CDLL) -> bool:
    """Whether the library registered its creator with TensorRT's global plugin registry."""
    return bool(hasattr(lib, "sppq_plugins_registered") and lib.sppq_plugins_registered() == 1)


__all__ = [
    "CUDA_SOURCE_DIR", "PLUGIN_LIBRARY", "build_plugin", "candidate_paths", "parse_arch", "user_cache_dir", "detect_cuda_arch", "find_plugin_library",
    "find_tensorrt_include", "load_plugin", "plugin_names", "plugin_registered",
]
