"""NumPy reference of Spatial Pyramid Pooling (He et al. 2014, appendix A).

Everything else (the ONNX Runtime rewrite, the CUDA kernels, the TensorRT plugin) is
tested against this module, so it is written for clarity, not speed.

Bins follow PyTorch's AdaptiveMaxPool2d rule: along an axis of length ``a`` split into
``n`` bins, bin ``i`` spans ``[floor(i*a/n), ceil((i+1)*a/n))``. Bins are never empty,
cover the whole axis and overlap by at most one element, also when ``a < n``.

Output layout is Caffe's: ``(N, C * sum(n*n))``, level-major, then channel, then bin
row-major.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POOLINGS = ("max", "avg")


def bin_edges(length: int, bins: int) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` ranges of the ``bins`` adaptive bins of an axis."""
    if length <= 0 or bins <= 0:
        raise ValueError(f"length and bins must be positive, got {length}, {bins}")
    return [((i * length) // bins, -((-(i + 1) * length) // bins)) for i in range(bins)]


def spp_output_width(channels: int, levels: Sequence[int]) -> int:
    """Number of features per image: ``C * sum(n*n)``."""
    return int(channels) * sum(int(n) * int(n) for n in levels)


def validate_levels(levels: Sequence[int]) -> tuple[int, ...]:
    """Levels as a tuple of positive ints; raises ValueError otherwise."""
    out = tuple(int(n) for n in levels)
    if not out or any(n <= 0 for n in out) or any(int(n) != n for n in levels):
        raise ValueError(f"levels must be a non-empty list of positive integers, got {list(levels)}")
    return out


def spp_reference(x: np.ndarray, levels: Sequence[int], pooling: str = "max") -> np.ndarray:
    """SPP of an NCHW array. Max keeps the input dtype (NaN propagates); avg is float64-accumulated."""
    if x.ndim != 4:
        raise ValueError(f"expected an NCHW array, got shape {x.shape}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    levels = validate_levels(levels)
    n, c, h, w = x.shape
    out_dtype = x.dtype if pooling == "max" else np.result_type(x.dtype, np.float32)
    parts = []
    for lvl in levels:
        pooled = np.empty((n, c, lvl, lvl), dtype=out_dtype)
        for by, (y0, y1) in enumerate(bin_edges(h, lvl)):
            for bx, (x0, x1) in enumerate(bin_edges(w, lvl)):
                window = x[:, :, y0:y1, x0:x1]
                if pooling == "max":
                    # np.max propagates NaN, which is what the kernels must do too.
                    pooled[:, :, by, bx] = window.max(axis=(2, 3))
                else:
                    pooled[:, :, by, bx] = window.astype(np.float64).mean(axis=(2, 3))
        parts.append(pooled.reshape(n, c * lvl * lvl))
    return np.concatenate(parts, axis=1)
