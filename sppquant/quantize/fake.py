"""INT8 fake quantization, the NumPy reference every INT8 path here is checked against.

Symmetric, zero point 0, round half to even (ONNX QuantizeLinear, TensorRT), weights per output channel
with ``max|w| / 127`` scales.
"""

from __future__ import annotations

import numpy as np

QMIN, QMAX = -128, 127


def fake_quantize(x: np.ndarray, scale: float | np.ndarray, axis: int | None = None) -> np.ndarray:
    """NumPy reference of ``DequantizeLinear(QuantizeLinear(x))``: int8, zero point 0, half-to-even."""
    x = np.asarray(x, dtype=np.float32)
    s = np.asarray(scale, dtype=np.float32)
    if axis is not None and s.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = s.size
        s = s.reshape(shape)
    q = np.clip(np.rint(x / s), QMIN, QMAX)  # np.rint rounds half to even, as ONNX does
    return (q * s).astype(np.float32)


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-output-channel ``max|w| / 127`` in float32; all-zero channels get 1.0."""
    w = np.asarray(w, dtype=np.float32)
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    maxabs = np.abs(w).max(axis=reduce) if reduce else np.abs(w)
    scales = (maxabs.astype(np.float32) / np.float32(127.0)).astype(np.float32)
    scales[~(scales > 0)] = 1.0
    return scales
