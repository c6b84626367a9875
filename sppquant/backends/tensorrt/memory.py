"""Device memory for the calibrator: pycuda, else cuda-python's ``cuda.bindings``; injectable for tests.

The calibrator only needs four operations; putting them behind a small protocol lets
CI (no CUDA) run the real calibrator callbacks on host memory, and lets the GPU check
count allocations and read buffers back.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import numpy as np

from sppquant.errors import BackendUnavailable


class DeviceMemory(Protocol):
    """Allocate / fill / read back / free raw buffers addressed by integer pointers."""

    allocations: int  # how many times `allocate` ran (tests assert buffers are reused)

    def allocate(self, nbytes: int) -> int: ...

    def upload(self, ptr: int, host: np.ndarray) -> None: ...

    def download(self, ptr: int, out: np.ndarray) -> None: ...

    def free(self, ptr: int) -> None: ...


class PycudaMemory:
    """`DeviceMemory` on the current CUDA device through pycuda (primary context).

    The primary context is the one the CUDA runtime (and so TensorRT) uses, so device
    pointers allocated here are valid inside TensorRT's calibration.
    """

    def __init__(self) -> None:
        try:
            import pycuda.driver as cuda  # noqa: PLC0415
        except Exception as exc:
            from sppquant.backends.tensorrt._trt import PYCUDA_INSTALL_HINT  # noqa: PLC0415

            raise BackendUnavailable(f"pycuda is not usable ({type(exc).__name__}: {exc}); {PYCUDA_INSTALL_HINT}") from None
        self._cuda = cuda
        self._ctx = cuda_context()
        self._live: dict[int, Any] = {}
        self.allocations = 0

    def allocate(self, nbytes: int) -> int:
        alloc = self._cuda.mem_alloc(max(1, int(nbytes)))
        self.allocations += 1
        self._live[int(alloc)] = alloc
        return int(alloc)

    def upload(self, ptr: int, host: np.ndarray) -> None:
        self._cuda.memcpy_htod(ptr, np.ascontiguousarray(host))

    def download(self, ptr: int, out: np.ndarray) -> None:
        self._cuda.memcpy_dtoh(out, ptr)

    def free(self, ptr: int) -> None:
        alloc = self._live.pop(ptr, None)
        if alloc is not None:
            alloc.free()


def _import_cudart() -> Any:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (12.6+/13), else the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime  # noqa: PLC0415

        return runtime
    except ImportError:
        from cuda import cudart  # noqa: PLC0415

        return cudart


class CudaPythonMemory:
    """`DeviceMemory` through cuda-python's runtime API (``pip install cuda-python``: wheels, unlike pycuda).

    The runtime API works in the device's primary context, the one TensorRT uses, so its
    pointers are valid in TensorRT's calibration. ``cudart`` is injectable (tests use a fake).
    """

    def __init__(self, cudart: Any = None, device: int = 0) -> None:
        if cudart is None:
            try:
                cudart = _import_cudart()
            except Exception as exc:
                raise BackendUnavailable(f"cuda-python is not usable ({type(exc).__name__}: {exc}); "
                                         "pip install cuda-python (or pycuda)") from None
        self._rt = cudart
        self._h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        try:
            self._check(cudart.cudaSetDevice(device), "cudaSetDevice")
            self._check(cudart.cudaFree(0), "cudaFree(0)")  # creates/binds the primary context now
        except RuntimeError as exc:
            raise BackendUnavailable(f"no usable CUDA GPU ({exc}); the TensorRT backend needs an NVIDIA GPU "
                                     "with its driver") from None
        self._live: set[int] = set()
        self.allocations = 0

    def _check(self, result: Any, what: str) -> Any:
        """cuda-python returns ``(error, *values)``: raise on an error, return the value(s)."""
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            raise RuntimeError(f"{what} failed: {name}")
        return values[0] if len(values) == 1 else tuple(values)

    def allocate(self, nbytes: int) -> int:
        ptr = int(self._check(self._rt.cudaMalloc(max(1, int(nbytes))), "cudaMalloc"))
        self.allocations += 1
        self._live.add(ptr)
        return ptr

    def upload(self, ptr: int, host: np.ndarray) -> None:
        data = np.ascontiguousarray(host)
        self._check(self._rt.cudaMemcpy(ptr, data.ctypes.data, data.nbytes, self._h2d), "cudaMemcpy (upload)")

    def download(self, ptr: int, out: np.ndarray) -> None:
        if not out.flags.c_contiguous:
            raise ValueError("download needs a C-contiguous output array")
        self._check(self._rt.cudaMemcpy(out.ctypes.data, ptr, out.nbytes, self._d2h), "cudaMemcpy (download)")

    def free(self, ptr: int) -> None:
        if ptr in self._live:
            self._live.discard(ptr)
            self._check(self._rt.cudaFree(ptr), "cudaFree")


def default_memory() -> DeviceMemory:
    """pycuda when it imports (unchanged behaviour), else cuda-python; one line naming both when neither does."""
    try:
        import pycuda.driver  # noqa: F401, PLC0415
    except Exception:
        try:
            _import_cudart()
        except Exception:
            from sppquant.backends.tensorrt._trt import PYCUDA_INSTALL_HINT  # noqa: PLC0415

            raise BackendUnavailable(f"neither pycuda nor cuda-python is installed; {PYCUDA_INSTALL_HINT}, "
                                     "or pip install cuda-python") from None
        return CudaPythonMemory()
    return PycudaMemory()


class HostMemory:
    """`DeviceMemory` in host RAM (ctypes buffers): for tests and dry runs without CUDA."""

    def __init__(self) -> None:
        self._live: dict[int, ctypes.Array[ctypes.c_char]] = {}
        self.allocations = 0
        self.frees = 0

    def allocate(self, nbytes: int) -> int:
        buf = ctypes.create_string_buffer(max(1, int(nbytes)))
        self.allocations += 1
        ptr = ctypes.addressof(buf)
        self._live[ptr] = buf
        return ptr

    def upload(self, ptr: int, host: np.ndarray) -> None:
        data = np.ascontiguousarray(host)
        if data.nbytes > len(self._live[ptr]):
            raise ValueError(f"upload of {data.nbytes} bytes into a {len(self._live[ptr])}-byte buffer")
        ctypes.memmove(ptr, data.ctypes.data, data.nbytes)

    def download(self, ptr: int, out: np.ndarray) -> None:
        ctypes.memmove(out.ctypes.data, ptr, out.nbytes)

    def free(self, ptr: int) -> None:
        if self._live.pop(ptr, None) is not None:
            self.frees += 1

    @property
    def live(self) -> int:
        return len(self._live)


_CONTEXT: Any = None


def cuda_context() -> Any:
    """Make device 0's primary context current once per process (what TensorRT uses too)."""
    global _CONTEXT
    if _CONTEXT is None:
        import atexit  # noqa: PLC0415

        import pycuda.driver as cuda  # noqa: PLC0415

        try:
            cuda.init()
            ctx = cuda.Device(0).retain_primary_context()
        except Exception as exc:
            raise BackendUnavailable(f"no usable CUDA GPU ({type(exc).__name__}: {exc}); "
                                     "the TensorRT backend needs an NVIDIA GPU with its driver") from None
        ctx.push()
        atexit.register(ctx.pop)
        _CONTEXT = ctx
    return _CONTEXT
