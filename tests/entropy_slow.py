"""Slow, obvious EntropyCalibration2 search written straight from DESIGN.md §2.

The reference the vectorised `entropy_amax` is tested (and benchmarked) against: one
Python loop per candidate, nothing clever.
"""

from __future__ import annotations

import math

import numpy as np


def kl_slow(counts: np.ndarray, i: int) -> float:
    """KL(P||Q) for candidate ``i`` (see sppquant.calibration.algorithms)."""
    c = np.array(counts, dtype=np.float64)
    c[0] = c[1]  # zeros carry no clipping information (as NVIDIA's reference does)
    p = c[:i].copy()
    p[i - 1] += c[i:].sum()
    raw = c[:i]
    q = np.zeros(i)
    for j in range(128):
        lo, hi = (j * i) // 128, ((j + 1) * i) // 128
        nonzero = p[lo:hi] != 0
        n = int(nonzero.sum())
        if n:
            q[lo:hi][nonzero] = raw[lo:hi].sum() / n
    if p.sum() == 0:
        return 0.0
    if q.sum() == 0:
        return math.inf
    p = p / p.sum()
    q = q / q.sum()
    used = p > 0
    if (q[used] == 0).any():
        return math.inf
    return float(np.sum(p[used] * np.log(p[used] / q[used])))


def entropy_best_slow(counts: np.ndarray) -> tuple[int, float]:
    """(chosen i, its KL); first i on exact ties."""
    best_i, best_kl = -1, math.inf
    for i in range(128, len(counts) + 1):
        kl = kl_slow(counts, i)
        if best_i < 0 or kl < best_kl:
            best_i, best_kl = i, kl
    return best_i, best_kl


def entropy_amax_slow(counts: np.ndarray, bin_width: float) -> float:
    if bin_width == 0.0 or float(np.sum(counts[1:])) == 0.0:
        return 0.0
    return (entropy_best_slow(counts)[0] + 0.5) * bin_width
