"""TensorRT 10.x backend: calibrator, engine builds, engine runner.

Import the submodules you need; ``tensorrt`` and ``pycuda`` are imported only when a
function that needs them runs, and their absence is a one-line BackendUnavailable.

- `calibrator`: ``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator`` subclasses
- `builder.build_engines`: FP32/FP16/INT8 engines + JSON records (`EngineRecord`)
- `runner.TrtRunner`: engine inference with NumPy in and out (also ``sppquant.backends.tensorrt.TrtRunner``,
  which is how ``sppquant report --backend tensorrt`` finds the engine runner)
- `calibrate.calibrate_tensorrt`: ``sppquant calibrate --backend tensorrt``
- `settings`: the config -> builder settings mapping, as pure functions
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrtRunner"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): importing the package stays free of numpy/pycuda/tensorrt work, while
    # `hasattr(sppquant.backends.tensorrt, "TrtRunner")` (the report's runner lookup) is True.
    if name == "TrtRunner":
        from sppquant.backends.tensorrt.runner import TrtRunner  # noqa: PLC0415

        return TrtRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
