"""Compile the CUDA kernels and both TensorRT plugins on a CPU machine (no GPU needed).

Builds ``cuda/`` with CMake + nvcc for one architecture (sm_75) against TensorRT 10.16 headers:
$SPPQUANT_TRT_INCLUDE, else ``<repo>/../shared/tensorrt-10.16-include`` (found here, not through
the product's ``find_tensorrt_include``, which does not search the development layout). Then
checks what needs no GPU: exported symbols of both libraries, argument validation of both ops,
the plugins' own interfaces (cuda/tests/plugin_harness.cpp and roi_plugin_harness.cpp in
CPU-only mode) and load-time registration of both creators against a stand-in libnvinfer.
Skips with the reason when nvcc, cmake or the headers are absent. Kernel results are checked
on a GPU machine: benchmarks/gpu/run_gpu.sh.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CUDA_DIR = REPO / "cuda"
# the C API both libraries export (the Python loader and the GPU scripts depend on these names)
KERNEL_SYMBOLS = ("sppq_spp_forward", "sppq_spp_validate", "sppq_spp_output_width", "sppq_error_string",
                  "sppq_last_cuda_error", "sppq_empty_launch", "sppq_api_version", "sppq_roi_spp_forward",
                  "sppq_roi_spp_validate", "sppq_roi_spp_output_width")


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
        pytest.skip("TensorRT headers not found ($SPPQUANT_TRT_INCLUDE or <repo>/../shared/tensorrt-10.16-include): "
                    "plugin build not tested")
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


def test_kernel_library_exports(build_dir: Path) -> None:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm not found")
    syms = subprocess.run([nm, "-D", "--defined-only", str(build_dir / "libsppquant_spp_kernels.so")],
                          capture_output=True, text=True, check=True).stdout
    for name in KERNEL_SYMBOLS:
        assert f" {name}\n" in syms, name
    assert " getCreators\n" not in syms  # kernels only


def test_roi_spp_validation(build_dir: Path) -> None:
    lib = ctypes.CDLL(str(build_dir / "libsppquant_spp_kernels.so"))
    lib.sppq_roi_spp_output_width.restype = ctypes.c_longlong
    lib.sppq_error_string.restype = ctypes.c_char_p
    assert lib.sppq_api_version() == 2
    lv = (ctypes.c_int * 4)(6, 3, 2, 1)
    f = ctypes.c_float
    assert lib.sppq_roi_spp_output_width(256, lv, 4) == 256 * 50
    assert lib.sppq_roi_spp_output_width(256, lv, 0) == -1
    big = (ctypes.c_int * 3)(64, 64, 1)
    assert lib.sppq_roi_spp_output_width(1, big, 3) == -1  # sum of levels > 128

    def validate(dtype=0, pooling=0, n=1, c=256, h=43, w=43, r=2000, levels=lv, nlev=4, scale=1 / 16, ins=1.0, outs=1.0):
        return lib.sppq_roi_spp_validate(dtype, pooling, n, c, h, w, r, levels, nlev, f(scale), f(ins), f(outs))

    assert validate() == 0
    assert validate(r=0) == 0                       # R = 0 is valid
    assert validate(r=-1) == 4                      # shape
    assert validate(pooling=1) == 3                 # avg is not implemented for RoI SPP
    assert validate(dtype=3) == 2
    assert validate(levels=None) == 1
    assert validate(nlev=17) == 5
    assert validate(scale=0.0) == 9 and validate(scale=math.inf) == 9 and validate(scale=math.nan) == 9
    assert validate(dtype=2, ins=0.0) == 6
    assert b"spatial_scale" in lib.sppq_error_string(9)
    # R = 0 launches nothing: OK even without buffers or a GPU
    assert lib.sppq_roi_spp_forward(None, None, None, 0, 0, 1, 4, 8, 8, 0, lv, 4, f(1.0), f(1.0), f(1.0), None) == 0
    assert lib.sppq_roi_spp_forward(None, None, None, 0, 0, 1, 4, 8, 8, 3, lv, 4, f(1.0), f(1.0), f(1.0), None) == 1
    if not _has_gpu():
        assert lib.sppq_roi_spp_forward(ctypes.c_void_p(16), ctypes.c_void_p(16), ctypes.c_void_p(16), 0, 0, 1, 4, 8, 8,
                                        3, lv, 4, f(1.0), f(1.0), f(1.0), None) == 8


def test_spp_plan_fixed_kernel_rules(tmp_path: Path) -> None:
    """The planner's fixed-kernel rules (threshold by shape and dtype, one-warp blocks) on hand-chosen shapes."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found: CUDA build tests need the CUDA toolkit")
    exe = tmp_path / "plan_rule_check"
    src = [CUDA_DIR / "tests" / "plan_rule_check.cpp", CUDA_DIR / "spp" / "spp_plan.cpp", CUDA_DIR / "common" / "level_plan.cpp"]
    res = subprocess.run([nvcc, "-std=c++17", f"-I{CUDA_DIR / 'spp'}", f"-I{CUDA_DIR / 'common'}", *map(str, src), "-o", str(exe)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and " 0 failures" in run.stdout, run.stdout[-4000:]


def test_plugin_exports_and_loads_without_tensorrt(plugin_dir: Path) -> None:
    nm = shutil.which("nm")
    if nm is not None:
        syms = subprocess.run([nm, "-D", "--defined-only", str(plugin_dir / "libsppquant_plugins.so")],
                              capture_output=True, text=True, check=True).stdout
        for name in ("getCreators", "setLoggerFinder", "sppq_register_plugins", "sppq_plugins_registered",
                     *KERNEL_SYMBOLS):
            assert f" {name}\n" in syms, name
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


@pytest.mark.parametrize("harness", ["sppq_plugin_harness", "sppq_roi_plugin_harness"])
def test_plugin_harness_cpu_paths(plugin_dir: Path, harness: str) -> None:
    """Creators, fields, shapes, formats, configurePlugin/onShapeChange, serialization, errors."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # CPU paths only, also on a GPU machine
    res = subprocess.run([str(plugin_dir / harness)], capture_output=True, text=True, timeout=120,
                         env=env, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert " 0 failures" in res.stdout and "checks" in res.stdout


def test_load_time_registration_with_stand_in_libnvinfer(plugin_dir: Path) -> None:
    code = textwrap.dedent(f"""
        import ctypes
        trt = ctypes.CDLL({str(plugin_dir / 'fake_trt' / 'libnvinfer.so.10')!r}, mode=ctypes.RTLD_GLOBAL)
        trt.fake_registered_name.restype = ctypes.c_char_p
        trt.fake_registered_namespace.restype = ctypes.c_char_p
        lib = ctypes.CDLL({str(plugin_dir / 'libsppquant_plugins.so')!r}, mode=ctypes.RTLD_GLOBAL)
        assert trt.fake_registered_count() == 2
        names = sorted(trt.fake_registered_name(i) for i in range(2))
        assert names == [b"RoiSpatialPyramidPooling", b"SpatialPyramidPooling"], names
        assert [trt.fake_registered_namespace(i) for i in range(2)] == [b"sppquant"] * 2
        assert lib.sppq_plugins_registered() == 1
        assert lib.sppq_register_plugins() == 1 and trt.fake_registered_count() == 2  # no double registration
        # the loadLibrary route: getCreators withdraws the load-time registrations first
        n = ctypes.c_int(0)
        lib.getCreators.restype = ctypes.c_void_p
        assert lib.getCreators(ctypes.byref(n)) and n.value == 2
        assert trt.fake_registered_count() == 0 and lib.sppq_plugins_registered() == 0
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
