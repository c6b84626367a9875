"""Histograms -> one amax per tensor, with a usable value for tensors that carry no range."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sppquant.calibration.algorithms import compute_amax
from sppquant.calibration.histogram import Histogram
from sppquant.calibration.table import scale_from_amax

# A tensor that was exactly zero on every calibration image quantizes to 0 under any
# scale; TensorRT still needs a positive one.
ZERO_TENSOR_AMAX = 1.0


def thresholds(
    histograms: Mapping[str, Histogram], algorithm: str, params: Mapping[str, Any]
) -> tuple[dict[str, float], list[str]]:
    """amax per tensor; degenerate (all-zero / empty) tensors get their max|x| or ZERO_TENSOR_AMAX."""
    amax, degenerate = {}, []
    for name, hist in histograms.items():
        value = compute_amax(hist, algorithm, **params) if hist.count else 0.0
        if not (math.isfinite(value) and value > 0.0) or scale_from_amax(value) <= 0.0:
            value = hist.max_abs if hist.max_abs > 0 and scale_from_amax(hist.max_abs) > 0 else ZERO_TENSOR_AMAX
            degenerate.append(name)
        amax[name] = value
    return amax, degenerate
