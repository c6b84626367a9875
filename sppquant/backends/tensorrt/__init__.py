"""TensorRT 10.x backend: calibrator, engine builds, engine runner.

Import the submodules you need; ``tensorrt`` and ``pycuda`` are imported only when a
function that needs them runs, and their absence is a one-line BackendUnavailable.

- `calibrator`: ``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator`` subclasses
- `builder.build_engines`: FP32/FP16/INT8 engines + JSON records (`EngineRecord`)
- `runner.TrtRunner`: engine inference with NumPy in and out
- `calibrate.calibrate_tensorrt`: ``sppquant calibrate --backend tensorrt``
- `settings`: the config -> builder settings mapping, as pure functions
"""
