"""GPU check of `CudaPythonMemory` (cuda-python's ``cuda.bindings``), the calibrator's memory when pycuda is absent.

What it proves on a CUDA machine with ``pip install cuda-python`` (TensorRT not needed):
- host -> device -> host round trips are byte-exact for 1 B, 1 MiB and 64 MiB buffers;
- allocations are counted and freed (device free memory returns to within 1 MiB);
- the calibrator's `BatchFeeder` on this memory uploads every batch byte-exact, into one
  buffer reused for all batches;
- with pycuda also installed: a pointer allocated here is readable through pycuda in the
  primary context (the one TensorRT uses), i.e. both providers share the context.

Run: ``python benchmarks/gpu/check_cuda_python_memory.py``; prints one JSON line, exit 0 when all hold.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sppquant.backends.tensorrt.memory import CudaPythonMemory, _import_cudart  # noqa: E402
from sppquant.config import config_from_dict  # noqa: E402
from sppquant.pipeline.trt_feed import BatchFeeder  # noqa: E402
from tests.conftest import write_tiny_spp_model  # noqa: E402


def _free_bytes(rt) -> int:
    err, free, _total = rt.cudaMemGetInfo()
    return int(free)


def round_trips(memory: CudaPythonMemory) -> dict:
    rng = np.random.default_rng(0)
    ok = {}
    for nbytes in (1, 1 << 20, 64 << 20):
        host = rng.integers(0, 256, nbytes, dtype=np.uint8)
        ptr = memory.allocate(nbytes)
        memory.upload(ptr, host)
        back = np.empty_like(host)
        memory.download(ptr, back)
        memory.free(ptr)
        ok[str(nbytes)] = bool(np.array_equal(host, back))
    return ok


def feeder_check(memory: CudaPythonMemory) -> dict:
    work = Path(tempfile.mkdtemp(prefix="cudapy-"))
    rng = np.random.default_rng(7)
    (work / "imgs").mkdir()
    for i in range(20):
        cv2.imwrite(str(work / "imgs" / f"{i:03d}.png"), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    write_tiny_spp_model(work / "m.onnx")
    cfg = config_from_dict({"model": {"path": "m.onnx"}, "input": {"sizes": [[32, 32]]},
                            "calibration": {"images": "imgs", "batch_size": 8, "output": "t.cache"}}, base=work)
    shape = (8, 3, 32, 32)
    equal, pointers = [], []

    def on_upload(batch, ptrs) -> None:
        back = np.empty(shape, np.float32)
        memory.download(ptrs[cfg.model.input_name], back)
        equal.append(back.tobytes() == np.ascontiguousarray(batch.inputs[0]).tobytes())
        pointers.append(ptrs[cfg.model.input_name])

    feeder = BatchFeeder(cfg, shape, memory, progress=False, on_upload=on_upload)
    while feeder.next_batch([cfg.model.input_name]) is not None:
        pass
    feeder.close()
    return {"batches": len(equal), "all_byte_equal": all(equal), "distinct_pointers": len(set(pointers))}


def pycuda_interop(memory: CudaPythonMemory) -> bool | None:
    try:
        import pycuda.driver as cuda

        from sppquant.backends.tensorrt.memory import cuda_context
    except ImportError:
        return None
    cuda_context()
    host = np.arange(1024, dtype=np.float32)
    ptr = memory.allocate(host.nbytes)
    memory.upload(ptr, host)
    back = np.empty_like(host)
    cuda.memcpy_dtoh(back, ptr)
    memory.free(ptr)
    return bool(np.array_equal(host, back))


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    rt = _import_cudart()
    memory = CudaPythonMemory()
    before = _free_bytes(rt)
    summary = {"round_trips": round_trips(memory), "feeder": feeder_check(memory)}
    summary["allocations"] = memory.allocations
    summary["leaked_bytes"] = max(0, before - _free_bytes(rt))
    summary["pycuda_interop"] = pycuda_interop(memory)
    ok = (all(summary["round_trips"].values()) and summary["feeder"]["batches"] == 2
          and summary["feeder"]["all_byte_equal"] and summary["feeder"]["distinct_pointers"] == 1
          and summary["leaked_bytes"] <= (1 << 20) and summary["pycuda_interop"] is not False)
    summary["ok"] = ok
    print(json.dumps(summary))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
