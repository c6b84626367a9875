"""Compile the CUDA kernels and the TensorRT plugin on a CPU machine (no GPU needed).

Builds with CMake + nvcc for one architecture (sm_75, a few seconds per file) against the
TensorRT 10.16 headers in ``../shared/tensorrt-10.16-include`` (or $SPPQUANT_TRT_INCLUDE),
then checks what needs no GPU: exported symbols, argument validation, the plugin's own
interfaces (tests/plugin_harness.cpp in CPU-only mode) and load-time registration against a
stand-in libnvinfer. Skips with the reason when nvcc, cmake or the headers are absent.
Kernel results are checked on a GPU machine: benchmarks/gpu/run_spp_gpu.sh.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CUDA_DIR = REPO / "cuda"


def _trt_include() -> Path | None:
    env = os.environ.get("SPPQUANT_TRT_INCLUDE")
    for folder in ([Path(env)] if env else []) + [REPO.parent / "shared" / "tensorrt-10.16-include"]:
        if (folder / "NvInferRuntime.h").is_file():
            return folder
    return None


def _nvcc() -> str | None:
    return shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").is_file() else None)


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    nvcc, cmake, inc = _nvcc(), shutil.which("cmake"), _trt_include()
    if nvcc is None:
        pytest.skip("nvcc not found: CUDA build tests need the CUDA toolkit")
    if cmake is None:
        pytest.skip("cmake not found")
    out = tmp_path_factory.mktemp("sppq_cuda_build")
    args = [cmake, "-S", str(CUDA_DIR), "-B", str(out), f"-DCMAKE_CUDA_COMPILER={nvcc}",
            "-DCMAKE_CUDA_ARCHITECTURES=75"]
    if inc is not None:
        args += [f"-DTENSORRT_INCLUDE_DIR={inc}", "-DSPPQ_BUILD_HARNESS=ON"]
    for cmd in (args, [cmake, "--build", str(out), "-j", str(min(4, os.cpu_count() or 2))]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return out


@pytest.fixture()
def plugin_dir(build_dir: Path) -> Path:
    if not (build_dir / "libsppquant_plugins.so").is_file():
        pytest.skip("TensorRT headers not found (../shared/tensorrt-10.16-include or SPPQUANT_TRT_INCLUDE)")
    return build_dir


def test_kernel_library_builds_and_validates(build_dir: Path) -> None:
    lib = ctypes.CDLL(str(build_dir / "libsppquant_spp_kernels.so"))
    lib.sppq_error_string.restype = ctypes.c_char_p
    lib.sppq_spp_output_width.restype = ctypes.c_longlong
    lv = (ctypes.c_int * 4)(6, 3, 2, 1)
    assert lib.sppq_spp_output_width(256, lv, 4) == 256 * 50
    assert lib.sppq_spp_output_width(0, lv, 4) == -1
    f = ctypes.c_float
    ok = lib.sppq_spp_validate(0, 0, 2, 3, 13, 13, lv, 4, f(1.0), f(1.0))
    assert ok == 0
    assert lib.sppq_spp_validate(3, 0, 2, 3, 13, 13, lv, 4, f(1.0), f(1.0)) == 2   # dtype
    assert lib.sppq_spp_validate(0, 2, 2, 3, 13, 13, lv, 4, f(1.0), f(1.0)) == 3   # pooling
    assert lib.sppq_spp_validate(0, 0, 2, 3, 0, 13, lv, 4, f(1.0), f(1.0)) == 4    # shape
    assert lib.sppq_spp_validate(0, 0, 2, 3, 13, 13, lv, 0, f(1.0), f(1.0)) == 5   # levels
    assert lib.sppq_spp_validate(2, 0, 2, 3, 13, 13, lv, 4, f(0.0), f(1.0)) == 6   # int8 scale
    assert lib.sppq_spp_forward(None, None, 0, 0, 2, 3, 13, 13, lv, 4, f(1.0), f(1.0), None) == 1
    assert b"levels" in lib.sppq_error_string(5)
    if not _has_gpu():
        # valid arguments, no GPU: a CUDA error status, not a crash
        assert lib.sppq_spp_forward(ctypes.c_void_p(16), ctypes.c_void_p(16), 0, 0, 2, 3, 13, 13, lv, 4,
                                    f(1.0), f(1.0), None) == 8


def test_plugin_exports_and_loads_without_tensorrt(plugin_dir: Path) -> None:
    nm = shutil.which("nm")
    if nm is not None:
        syms = subprocess.run([nm, "-D", "--defined-only", str(plugin_dir / "libsppquant_plugins.so")],
                              capture_output=True, text=True, check=True).stdout
        for name in ("getCreators", "setLoggerFinder", "sppq_spp_forward", "sppq_register_plugins"):
            assert f" {name}\n" in syms
    # a fresh process without libnvinfer: loads, registers nothing
    code = textwrap.dedent(f"""
        import ctypes
        lib = ctypes.CDLL({str(plugin_dir / 'libsppquant_plugins.so')!r}, mode=ctypes.RTLD_GLOBAL)
        assert lib.sppq_plugins_registered() == 0
        assert lib.sppq_register_plugins() == 0
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_plugin_harness_cpu_paths(plugin_dir: Path) -> None:
    """Creator, fields, shapes, formats, configurePlugin/onShapeChange, serialization, errors."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # CPU paths only, also on a GPU machine
    res = subprocess.run([str(plugin_dir / "sppq_plugin_harness")], capture_output=True, text=True, timeout=120,
                         env=env, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 failures" in res.stdout


def test_load_time_registration_with_stand_in_libnvinfer(plugin_dir: Path) -> None:
    code = textwrap.dedent(f"""
        import ctypes
        trt = ctypes.CDLL({str(plugin_dir / 'fake_trt' / 'libnvinfer.so.10')!r}, mode=ctypes.RTLD_GLOBAL)
        trt.fake_registered_name.restype = ctypes.c_char_p
        trt.fake_registered_namespace.restype = ctypes.c_char_p
        lib = ctypes.CDLL({str(plugin_dir / 'libsppquant_plugins.so')!r}, mode=ctypes.RTLD_GLOBAL)
        assert trt.fake_registered_count() == 1
        assert trt.fake_registered_name(0) == b"SpatialPyramidPooling"
        assert trt.fake_registered_namespace(0) == b"sppquant"
        assert lib.sppq_plugins_registered() == 1
        assert lib.sppq_register_plugins() == 1 and trt.fake_registered_count() == 1  # no double registration
        # the loadLibrary route: getCreators withdraws the load-time registration first
        n = ctypes.c_int(0)
        lib.getCreators.restype = ctypes.c_void_p
        assert lib.getCreators(ctypes.byref(n)) and n.value == 1
        assert trt.fake_registered_count() == 0 and lib.sppq_plugins_registered() == 0
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
