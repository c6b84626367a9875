"""GPU check of the TensorRT calibrator's device side, with real pycuda memory.

What it proves on a CUDA machine (no TensorRT native libraries needed):
- the calibrator is a subclass of the real ``tensorrt.IInt8EntropyCalibrator2`` (the
  cp312 bindings, loaded over the stub libraries from tests/trt_stubs);
- every batch uploaded by ``get_batch`` equals, byte for byte after a device->host
  copy, the preprocessing output computed independently per image;
- one device buffer is allocated once and reused (pointer identity, allocation count);
- end of data returns None; ``close`` frees the buffer.

Run through benchmarks/gpu/check_trt_calibrator.sh (``--memory pycuda``, the default, or
``--memory cuda-python``: the same checks on `CudaPythonMemory`); prints one JSON summary line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from sppquant.backends.tensorrt.calibrator import make_calibrator  # noqa: E402
from sppquant.backends.tensorrt.memory import CudaPythonMemory, PycudaMemory  # noqa: E402
from sppquant.config import config_from_dict  # noqa: E402
from sppquant.pipeline import trt_settings as S  # noqa: E402
from sppquant.pipeline.trt_cache import TableCache  # noqa: E402
from sppquant.pipeline.trt_feed import BatchFeeder  # noqa: E402
from sppquant.preprocess import load_image, preprocess_image  # noqa: E402
from tests.conftest import write_tiny_spp_model  # noqa: E402
from tests.trt_stubs import aliased, load_bindings  # noqa: E402


def gpu_name(kind: str) -> str:
    if kind == "pycuda":
        import pycuda.driver as cuda  # noqa: PLC0415

        return cuda.Device(0).name()
    from sppquant.backends.tensorrt.memory import _import_cudart  # noqa: PLC0415

    rt = _import_cudart()
    err, props = rt.cudaGetDeviceProperties(0)
    return props.name.decode() if isinstance(props.name, bytes) else str(props.name)


def main() -> int:
    kind = "pycuda"
    if "--memory" in sys.argv:
        kind = sys.argv[sys.argv.index("--memory") + 1]
    if kind not in ("pycuda", "cuda-python"):
        print(f"--memory {kind}: expected pycuda or cuda-python", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="trtcal-"))
    rng = np.random.default_rng(7)
    (work / "imgs").mkdir()
    for i in range(37):  # 37 = 4 full batches of 8 + 5 dropped
        h, w = int(rng.integers(12, 90)), int(rng.integers(12, 90))
        cv2.imwrite(str(work / "imgs" / f"{i:03d}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    write_tiny_spp_model(work / "m.onnx")
    cfg = config_from_dict({"model": {"path": "m.onnx"}, "input": {"sizes": [[48, 40], [32, 32]]},
                            "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
                            "calibration": {"images": "imgs", "batch_size": 8, "output": "t.cache"}}, base=work)
    trt = load_bindings(Path(os.environ.get("SPPQUANT_TRT_STUBS", work / "stubs")))
    summary: dict = {"tensorrt_bindings": trt.__version__, "memory": kind}
    with aliased(trt):
        memory = PycudaMemory() if kind == "pycuda" else CudaPythonMemory()
        summary["gpu"] = gpu_name(kind)
        shape = S.calibration_shape(cfg)
        feeder = BatchFeeder(cfg, shape, memory, progress=False)
        cache = TableCache(cfg, cfg.calibration.output, "entropy2", "EntropyCalibration2", "10.16.1", reuse=False)
        cal = make_calibrator(trt, "IInt8EntropyCalibrator2", feeder, cache)
        summary["subclass_of_real_IInt8EntropyCalibrator2"] = isinstance(cal, trt.IInt8EntropyCalibrator2)
        expected = [preprocess_image(load_image(p), cfg.preprocess, shape[2:]).tensor for p in feeder.images.paths]
        pointers, equal = [], []
        with cal:
            while (ptrs := cal.get_batch([cfg.model.input_name])) is not None:
                i = len(pointers)
                pointers.append(ptrs[0])
                back = np.empty(shape, np.float32)
                memory.download(ptrs[0], back)  # device -> host copy of what TensorRT would read
                equal.append(back.tobytes() == np.stack(expected[8 * i:8 * i + 8]).tobytes())
            cal.raise_pending()
            summary.update(batches=len(pointers), distinct_pointers=len(set(pointers)),
                           allocations=memory.allocations, all_batches_byte_equal=all(equal),
                           end_returns_none=cal.get_batch([cfg.model.input_name]) is None,
                           images=len(feeder.images), images_used=feeder.images_used, shape=list(shape))
        summary["live_buffers_after_close"] = len(memory._live)
    ok = (summary["subclass_of_real_IInt8EntropyCalibrator2"] and summary["batches"] == 4
          and summary["distinct_pointers"] == 1 and summary["allocations"] == 1 and summary["all_batches_byte_equal"]
          and summary["end_returns_none"] and summary["live_buffers_after_close"] == 0)
    summary["ok"] = bool(ok)
    print(json.dumps(summary))
    out = os.environ.get("OUT")
    if out:
        Path(out, f"check_trt_calibrator_{kind}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
