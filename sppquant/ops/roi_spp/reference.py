"""NumPy reference of RoI spatial pyramid pooling (SPP-net's detection layer).

The CUDA kernels (``cuda/roi_spp/``) and the TensorRT plugin ``RoiSpatialPyramidPooling``
are tested against this module, so it is written as plain loops, for clarity, not speed.

Inputs: ``features`` (N, C, H, W) and ``rois`` (R, 5), rows ``[batch_index, x1, y1, x2, y2]``
in network-input pixels. Output: (R, C * sum(n*n)), level-major, then channel, then bin
row-major (the layout of the whole-map SPP op).

Region and bins (Fast R-CNN / Caffe ROIPooling, as ONNX ``MaxRoiPool`` specifies, with the
bin edges in exact integer arithmetic):

- corners ``x1' = round(x1 * spatial_scale)`` etc.: one float32 multiply, then rounding half
  away from zero (C ``roundf``), then clamped to ``[-2**30, 2**30]``;
- ``roi_w = max(x2' - x1' + 1, 1)``, ``roi_h = max(y2' - y1' + 1, 1)``;
- level ``n``, bin ``i`` along an axis of region length ``h`` spans
  ``[floor(i*h/n), ceil((i+1)*h/n))`` offset by the region start, then clipped to the map;
- an empty bin (after clipping) gives 0; for INT8 the quantized zero.

A RoI is *invalid* when its batch index is not a finite number in ``[0, N)`` or one of its
coordinates is not finite; its whole output row is 0. A valid batch index is truncated toward
zero (``int(1.7) == 1``), like the C cast in Caffe and ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COORD_LIMIT = 2**30


def validate_levels(levels: Sequence[int]) -> tuple[int, ...]:
    """Levels as a tuple of positive ints; raises ValueError otherwise."""
    out = tuple(int(n) for n in levels)
    if not out or any(n <= 0 for n in out) or any(int(n) != n for n in levels):
        raise ValueError(f"levels must be a non-empty list of positive integers, got {list(levels)}")
    return out


def roi_spp_output_width(channels: int, levels: Sequence[int]) -> int:
    """Features per RoI: ``C * sum(n*n)``."""
    return int(channels) * sum(int(n) * int(n) for n in levels)


def round_half_away(v: np.float32) -> int:
    """C ``roundf`` of a float32: half away from zero (exact: float64 holds every float32 + 0.5)."""
    d = float(v)
    return int(np.trunc(d + 0.5)) if d >= 0 else int(np.trunc(d - 0.5))


def scaled_corner(coord: float, spatial_scale: float) -> int:
    """``round(coord * spatial_scale)`` with a float32 multiply, clamped to +-2**30."""
    with np.errstate(over="ignore"):
        prod = np.float32(coord) * np.float32(spatial_scale)
    if np.isinf(prod):
        return COORD_LIMIT if prod > 0 else -COORD_LIMIT
    return max(-COORD_LIMIT, min(COORD_LIMIT, round_half_away(prod)))


def roi_region(roi: Sequence[float], spatial_scale: float) -> tuple[int, int, int, int]:
    """``(x_start, y_start, roi_w, roi_h)`` of one RoI on the feature map (not clipped)."""
    x1, y1, x2, y2 = (scaled_corner(float(np.float32(v)), spatial_scale) for v in roi[1:5])
    return x1, y1, max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)


def bin_range(start: int, length: int, n: int, i: int, limit: int) -> tuple[int, int]:
    """Half-open range of bin ``i`` of ``n`` over ``[start, start + length)``, clipped to ``[0, limit)``."""
    lo = start + (i * length) // n
    hi = start + -((-(i + 1) * length) // n)  # ceil((i + 1) * length / n), exact
    return min(max(lo, 0), limit), min(max(hi, 0), limit)


def roi_batch_index(roi: Sequence[float], batch: int) -> int | None:
    """The RoI's image index, or None when the RoI is invalid (see the module docstring)."""
    b = np.float32(roi[0])
    coords = np.asarray(roi[1:5], dtype=np.float32)
    if not np.isfinite(b) or not np.all(np.isfinite(coords)) or not (0 <= b < batch):
        return None
    return int(b)


def roi_spp_reference(features: np.ndarray, rois: np.ndarray, levels: Sequence[int],
                      spatial_scale: float, pooling: str = "max") -> np.ndarray:
    """Max RoI SPP. float32/float16/int8 features keep their dtype (NaN propagates); empty bins give 0."""
    if pooling != "max":
        raise ValueError(f"pooling must be 'max', got {pooling!r}")
    if features.ndim != 4:
        raise ValueError(f"features must be NCHW, got shape {features.shape}")
    rois = np.asarray(rois, dtype=np.float32).reshape(-1, 5) if np.size(rois) else np.zeros((0, 5), np.float32)
    if not (np.isfinite(spatial_scale) and spatial_scale > 0):
        raise ValueError(f"spatial_scale must be finite and positive, got {spatial_scale}")
    levels = validate_levels(levels)
    n_img, c, h, w = features.shape
    out = np.zeros((rois.shape[0], roi_spp_output_width(c, levels)), dtype=features.dtype)
    for r, roi in enumerate(rois):
        b = roi_batch_index(roi, n_img)
        if b is None:
            continue
        xs, ys, rw, rh = roi_region(roi, spatial_scale)
        col = 0
        for n in levels:
            for ch in range(c):
                for by in range(n):
                    y0, y1 = bin_range(ys, rh, n, by, h)
                    for bx in range(n):
                        x0, x1 = bin_range(xs, rw, n, bx, w)
                        if y0 < y1 and x0 < x1:
                            # np.max propagates NaN, which is what the kernels must do too.
                            out[r, col] = features[b, ch, y0:y1, x0:x1].max()
                        col += 1
    return out


def requantize(q: np.ndarray, in_scale: float, out_scale: float) -> np.ndarray:
    """INT8 requantization exactly as the kernels do it: equal scales (same float32 bits) copy;
    otherwise ``clamp(rint(float32(q) * (float32(in_scale) / float32(out_scale))), -128, 127)``
    with one float32 division and one float32 multiply, rint rounding half to even."""
    q = np.asarray(q, dtype=np.int8)
    if np.float32(in_scale).tobytes() == np.float32(out_scale).tobytes():
        return q.copy()
    ratio = np.float32(in_scale) / np.float32(out_scale)
    y = np.rint(q.astype(np.float32) * ratio)
    return np.clip(y, -128, 127).astype(np.int8)


def roi_spp_reference_int8(features: np.ndarray, rois: np.ndarray, levels: Sequence[int], spatial_scale: float,
                           in_scale: float, out_scale: float) -> np.ndarray:
    """INT8 RoI SPP: max of the int8 values, then requantized to ``out_scale``; empty bins and
    invalid RoIs give the quantized zero (0 requantizes to 0)."""
    if features.dtype != np.int8:
        raise ValueError(f"expected int8 features, got {features.dtype}")
    return requantize(roi_spp_reference(features, rois, levels, spatial_scale), in_scale, out_scale)


__all__ = [
    "COORD_LIMIT", "bin_range", "requantize", "roi_batch_index", "roi_region", "roi_spp_output_width",
    "roi_spp_reference", "roi_spp_reference_int8", "round_half_away", "scaled_corner", "validate_levels",
]
