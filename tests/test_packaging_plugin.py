"""The plugin from a wheel: sources shipped, build-plugin errors, cache folder search; cuda-python memory; license."""

from __future__ import annotations

import ctypes
import enum
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sppquant.backends.tensorrt import memory as mem
from sppquant.cli import main
from sppquant.errors import BackendUnavailable
from sppquant.ops import plugin_library as plugin

ROOT = Path(__file__).resolve().parents[1]


class _Err(enum.Enum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


class _Kind(enum.Enum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class FakeCudart:
    """cuda.bindings.runtime's call shapes ((error, value) tuples) on host memory."""

    cudaError_t, cudaMemcpyKind = _Err, _Kind

    def __init__(self, devices: int = 1, fail_malloc: bool = False) -> None:
        self.devices, self.fail_malloc, self.buffers, self.copies = devices, fail_malloc, {}, []

    def cudaSetDevice(self, device: int):
        return (_Err.cudaSuccess if device < self.devices else _Err.cudaErrorNoDevice,)

    def cudaFree(self, ptr: int):
        self.buffers.pop(ptr, None)
        return (_Err.cudaSuccess,)

    def cudaMalloc(self, nbytes: int):
        if self.fail_malloc:
            return _Err.cudaErrorMemoryAllocation, 0
        buf = ctypes.create_string_buffer(nbytes)
        self.buffers[ctypes.addressof(buf)] = buf
        return _Err.cudaSuccess, ctypes.addressof(buf)

    def cudaMemcpy(self, dst: int, src: int, count: int, kind: _Kind):
        self.copies.append(kind)
        ctypes.memmove(dst, src, count)
        return (_Err.cudaSuccess,)


def test_cuda_python_memory_round_trip() -> None:
    rt = FakeCudart()
    m = mem.CudaPythonMemory(rt)
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    ptr = m.allocate(data.nbytes)
    m.upload(ptr, data)
    out = np.empty_like(data)
    m.download(ptr, out)
    np.testing.assert_array_equal(out, data)
    assert rt.copies == [_Kind.cudaMemcpyHostToDevice, _Kind.cudaMemcpyDeviceToHost] and m.allocations == 1
    m.free(ptr)
    assert ptr not in rt.buffers


def test_cuda_python_memory_errors() -> None:
    with pytest.raises(BackendUnavailable, match="no usable CUDA GPU .*cudaErrorNoDevice"):
        mem.CudaPythonMemory(FakeCudart(devices=0))
    with pytest.raises(RuntimeError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        mem.CudaPythonMemory(FakeCudart(fail_malloc=True)).allocate(16)


def test_default_memory_prefers_pycuda_then_cuda_python(monkeypatch) -> None:
    rt = FakeCudart()
    monkeypatch.setitem(sys.modules, "pycuda", None)  # pycuda absent
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    monkeypatch.setattr(mem, "_import_cudart", lambda: rt)
    chosen = mem.default_memory()
    assert isinstance(chosen, mem.CudaPythonMemory)

    def missing():
        raise ImportError("No module named 'cuda'")

    monkeypatch.setattr(mem, "_import_cudart", missing)
    with pytest.raises(BackendUnavailable, match="neither pycuda nor cuda-python"):
        mem.default_memory()
    fake_driver = types.ModuleType("pycuda.driver")
    monkeypatch.setitem(sys.modules, "pycuda", types.ModuleType("pycuda"))
    monkeypatch.setitem(sys.modules, "pycuda.driver", fake_driver)
    monkeypatch.setattr(mem, "PycudaMemory", lambda: "pycuda")
    assert mem.default_memory() == "pycuda"


def test_user_cache_is_searched(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(plugin.ENV_LIBRARY, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = plugin.user_cache_dir()
    assert cache.parent == tmp_path / "sppquant" / "plugins"
    assert cache / plugin.PLUGIN_LIBRARY in plugin.candidate_paths()


@pytest.mark.parametrize(("arch", "expected"), [("sm_90", "90"), ("86", "86"), ("sm_90a", "90a")])
def test_parse_arch(arch: str, expected: str) -> None:
    assert plugin.parse_arch(arch) == expected


@pytest.mark.parametrize(("argv", "missing", "message"), [
    (["--arch", "sm_x"], None, "--arch 'sm_x': expected native, sm_XX or XX"),
    (["--arch", "90"], "cmake", "cmake not found on PATH"),
    (["--arch", "90"], "nvcc", "nvcc (CUDA toolkit) not found on PATH"),
    (["--arch", "90", "--tensorrt-include", "/nonexistent"], None, "TensorRT headers not found: /nonexistent"),
])
def test_build_plugin_errors_are_one_line(monkeypatch, capsys, argv, missing, message) -> None:
    real_which = plugin.shutil.which
    monkeypatch.setattr(plugin.shutil, "which", lambda name: None if name == missing else (real_which(name) or name))
    monkeypatch.setattr(plugin.Path, "is_file", lambda self: (str(self) != "/usr/local/cuda/bin/nvcc"
                                                              and Path.exists(self) and not Path.is_dir(self)))
    assert main(["build-plugin", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_pyproject_license_and_bounded_build_requirement() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["license"] == "Apache-2.0" and data["project"]["license-files"] == ["LICENSE"]
    (req,) = data["build-system"]["requires"]
    assert req.startswith("setuptools>=77") and "<" in req
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


def test_package_data_config_ships_the_whole_cuda_tree() -> None:
    """setup.py copies cuda/ (any layout: cuda/common, cuda/spp, ...) minus build outputs; MANIFEST.in grafts it."""
    assert "graft cuda" in (ROOT / "MANIFEST.in").read_text()
    import importlib.util

    spec = importlib.util.spec_from_file_location("sppquant_setup_probe", ROOT / "setup.py")
    source = (ROOT / "setup.py").read_text()
    assert "copytree(src, dst, ignore=CUDA_EXCLUDE)" in source and spec is not None
    ignored = {"build", "build-x", "spp.so", "CMakeCache.txt", "kernels.cu", "spp"}
    namespace: dict = {}
    exec(compile(source.split("class BuildPyWithCuda")[0], "setup.py", "exec"), namespace)  # the pattern only
    assert namespace["CUDA_EXCLUDE"]("cuda", ignored) == {"build", "build-x", "spp.so", "CMakeCache.txt"}


def test_wheel_contains_cuda_sources(tmp_path: Path) -> None:
    """`pip wheel .` (isolated build, local index) ships cuda/ as sppquant/_cuda and the license."""
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        pytest.skip(f"pip wheel could not run here: {res.stderr.strip().splitlines()[-1:]}")
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("sppquant/_cuda/") for n in names if n.startswith("sppquant/_cuda/")}
    expected = {str(p.relative_to(ROOT / "cuda")) for p in (ROOT / "cuda").rglob("*")
                if p.is_file() and "build" not in p.relative_to(ROOT / "cuda").parts[0] and p.suffix not in (".so", ".o")}
    assert expected and expected <= shipped and "CMakeLists.txt" in shipped
    assert any(n.endswith("licenses/LICENSE") for n in names)
