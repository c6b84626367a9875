"""Load TensorRT's REAL Python bindings with its three native libraries replaced by stubs.

The bindings (``pip install tensorrt-cu13-bindings==10.16.*`` or ``-cu12-``; module
``tensorrt_bindings``) link against libnvinfer.so.10, libnvonnxparser.so.10 and
libnvinfer_plugin.so.10, which cannot be installed here (DESIGN.md section 4). The C
files beside this one define every symbol the bindings import (``nm -D
--undefined-only tensorrt.so``) and return NULL/0. Compiled with gcc (soname set) and
preloaded with ``RTLD_GLOBAL``, they satisfy the dynamic loader, so the bindings import
in-process: classes subclass, enums and attributes exist, Python callbacks run; a
Builder/Runtime/OnnxParser cannot be created (TypeError "returned nullptr").

`load_bindings` returns the module or raises `StubsUnavailable` with the reason (tests
turn that into a skip). `aliased` makes ``import tensorrt`` resolve to it, temporarily.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent

# soname -> stub source; the symbols each one must define (checked against the bindings).
LIBRARIES = {
    "libnvinfer.so.10": "nvinfer_stub.c",
    "libnvonnxparser.so.10": "nvonnxparser_stub.c",
    "libnvinfer_plugin.so.10": "nvinfer_plugin_stub.c",
}
STUBBED_SYMBOLS = frozenset({
    "createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL", "createInferRuntime_INTERNAL",
    "getPluginRegistry", "getBuilderPluginRegistry", "getInferLibVersion",
    "createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL", "getNvOnnxParserVersion",
    "initLibNvInferPlugins",
})
INSTALL_HINT = "pip install 'tensorrt-cu13-bindings==10.16.*' (or tensorrt-cu12-bindings)"

_LOADED: ModuleType | None = None


class StubsUnavailable(RuntimeError):
    """Why the bindings cannot be loaded here (the tests skip with this text)."""


def bindings_so() -> Path:
    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        raise StubsUnavailable(f"TensorRT Python bindings are not installed: {INSTALL_HINT}")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("tensorrt*.so"))
    if not found:
        raise StubsUnavailable("tensorrt_bindings has no tensorrt*.so extension")
    return found[0]


def undefined_trt_symbols(so: Path | None = None) -> set[str]:
    """Symbols the bindings import that are neither libc/libstdc++ nor Python's."""
    nm = shutil.which("nm")
    if nm is None:
        raise StubsUnavailable("nm (binutils) is not installed")
    out = subprocess.run([nm, "-D", "--undefined-only", str(so or bindings_so())], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[0] != "U" or "@" in parts[1]:  # versioned: glibc / libstdc++
            continue
        if not parts[1].startswith(("Py", "_Py")):
            names.add(parts[1])
    return names


def compile_stubs(dest: Path) -> Path:
    """gcc the stubs into ``dest`` (skips files already built); returns ``dest``."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise StubsUnavailable("no C compiler (gcc) to build the TensorRT library stubs")
    dest.mkdir(parents=True, exist_ok=True)
    for soname, source in LIBRARIES.items():
        target = dest / soname
        if not target.exists():
            subprocess.run([gcc, "-shared", "-fPIC", "-O0", f"-Wl,-soname,{soname}", "-o", str(target),
                            str(HERE / source)], check=True, capture_output=True)
    return dest


def load_bindings(build_dir: Path) -> ModuleType:
    """Compile + preload the stubs (RTLD_GLOBAL), then import ``tensorrt_bindings``."""
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    so = bindings_so()
    compile_stubs(build_dir)
    for soname in LIBRARIES:
        ctypes.CDLL(str(build_dir / soname), mode=ctypes.RTLD_GLOBAL)
    try:
        _LOADED = importlib.import_module("tensorrt_bindings")
    except ImportError as exc:
        raise StubsUnavailable(f"{so}: the bindings still do not import with the stubs: {exc}") from exc
    return _LOADED


@contextlib.contextmanager
def aliased(module: ModuleType) -> Iterator[ModuleType]:
    """``import tensorrt`` yields ``module`` inside the block (restored afterwards)."""
    previous = sys.modules.get("tensorrt")
    sys.modules["tensorrt"] = module
    try:
        yield module
    finally:
        if previous is None:
            sys.modules.pop("tensorrt", None)
        else:
            sys.modules["tensorrt"] = previous


def default_build_dir() -> Path:
    """Where the GPU check and ad-hoc use put the compiled stubs."""
    return Path(os.environ.get("SPPQUANT_TRT_STUBS", "/tmp/sppquant-trt-stubs"))
