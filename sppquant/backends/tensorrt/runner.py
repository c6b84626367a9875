"""Run a serialized engine: deserialize (plugin loaded), pycuda buffers, ``execute_async_v3``.

Honours `sppquant.backends.base.Runner` (feeds dict -> outputs dict), so `predict` and the
report switch backends without branching. Batches larger than the engine profile's
max N are split into chunks; device buffers grow only when a larger shape arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sppquant.backends.base import Runner
from sppquant.backends.tensorrt._trt import (
    create,
    gpu_name,
    import_tensorrt,
    init_standard_plugins,
    load_plugin,
    trt_logger,
)
from sppquant.backends.tensorrt.memory import PycudaMemory
from sppquant.errors import BackendUnavailable, UserError

log = logging.getLogger(__name__)


def chunk_feeds(feeds: dict[str, np.ndarray], image_input: str, start: int, stop: int) -> dict[str, np.ndarray]:
    """Images ``start:stop`` and, for region inputs ``(R, 5)`` ``[batch index, ...]``, their rows re-indexed.

    Region rows must be sorted by batch index, so per-region outputs of the chunks
    concatenate in the caller's row order.
    """
    out = {}
    for name, arr in feeds.items():
        if name == image_input:
            out[name] = arr[start:stop]
            continue
        if arr.ndim != 2 or arr.shape[1] != 5 or np.any(np.diff(arr[:, 0]) < 0):
            raise UserError(f"input {name!r} {arr.shape}: a batch larger than the engine's profile can only be "
                            "split when the other inputs are region rows [batch index, x1, y1, x2, y2] sorted "
                            "by batch index")
        rows = (arr[:, 0] >= start) & (arr[:, 0] < stop)
        part = arr[rows].copy()
        part[:, 0] -= start
        out[name] = part
    return out


class TrtRunner(Runner):
    """A TensorRT execution context over one engine file (profile 0)."""

    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, plugin_library: Path | None = None) -> None:
        path = Path(engine_path)
        if not path.is_file():
            raise UserError(f"{path}: engine file not found")
        trt = import_tensorrt()
        self._trt = trt
        self._memory = PycudaMemory()  # makes the CUDA context current before TensorRT allocates
        import pycuda.driver as cuda  # noqa: PLC0415 - PycudaMemory proved it imports

        self._cuda = cuda
        logger = trt_logger(trt)
        runtime = create(trt, trt.Runtime, logger)
        init_standard_plugins(trt, logger)
        load_plugin(plugin_library)  # engines embed the SPP layer: its creator must be registered first
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"{path}: TensorRT {trt.__version__} cannot deserialize this engine (built by another "
                            "TensorRT version or for another GPU? rebuild it with sppquant build)")
        self._runtime = runtime
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.model_outputs = list(self.output_names)
        self.device = gpu_name()
        ranks = {n: len(self.engine.get_tensor_shape(n)) for n in self.input_names}
        self.image_input = next((n for n in self.input_names if ranks[n] == 4), self.input_names[0])
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.image_input, 0)[2][0])
        self.stream = cuda.Stream()
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (pointer, capacity in bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, cap = self._buffers.get(name, (0, 0))
        if nbytes > cap:
            if ptr:
                self._memory.free(ptr)
            ptr, cap = self._memory.allocate(nbytes), nbytes
            self._buffers[name] = (ptr, cap)
        return ptr

    def _run_chunk(self, feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        trt, cuda, ctx = self._trt, self._cuda, self.context
        for name in self.input_names:
            arr = np.ascontiguousarray(feeds[name], dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            if not ctx.set_input_shape(name, tuple(arr.shape)):
                raise UserError(f"input {name!r} shape {arr.shape} is outside the engine's optimization profile")
            ptr = self._buffer(name, arr.nbytes)
            cuda.memcpy_htod_async(ptr, arr, self.stream)
            ctx.set_tensor_address(name, ptr)
        hosts = {}
        for name in self.output_names:
            shape = tuple(ctx.get_tensor_shape(name))
            hosts[name] = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            ctx.set_tensor_address(name, self._buffer(name, hosts[name].nbytes))
        if not ctx.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT errors logged above)")
        for name in outputs:
            cuda.memcpy_dtoh_async(hosts[name], self._buffers[name][0], self.stream)
        self.stream.synchronize()
        return {name: hosts[name] for name in outputs}

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """NumPy in, NumPy out; splits the batch into chunks of the profile's max N."""
        names = list(outputs) if outputs is not None else self.output_names
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise UserError(f"engine inputs {missing} were not given (engine inputs: {self.input_names})")
        n = len(feeds[self.image_input])
        if n <= self.max_batch:
            return self._run_chunk(feeds, names)
        parts = [self._run_chunk(chunk_feeds(feeds, self.image_input, i, i + self.max_batch), names)
                 for i in range(0, n, self.max_batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in names}

    def close(self) -> None:
        """Free the device buffers now; then the context, engine and runtime, in that order (idempotent)."""
        if getattr(self, "stream", None) is not None:
            self.stream.synchronize()  # nothing may still be writing into the buffers freed next
        for ptr, _ in self._buffers.values():
            self._memory.free(ptr)
        self._buffers.clear()
        for attr in ("context", "engine", "_runtime"):
            if hasattr(self, attr):
                setattr(self, attr, None)
