"""Benchmark-only candidate rule ``mse``: amax minimising the histogram's expected squared INT8 error.

For a threshold ``a`` (step ``a/127``) each bin centre ``c`` with count ``n`` costs
``n * step**2 / 12`` when ``c <= a`` (rounding noise) and ``n * (c - a)**2`` when clipped.
Candidates are the bin right edges; exact zeros (bin 0) are kept (a zero quantizes exactly,
so it contributes no rounding noise).
"""

from __future__ import annotations

import numpy as np


def mse_curve(counts: np.ndarray, bin_width: float) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(counts, np.float64)
    nb = len(counts)
    centres = (np.arange(nb) + 0.5) * bin_width
    cand = (np.arange(1, nb + 1)) * bin_width
    nz = counts.copy()
    nz[0] = 0.0  # zeros are exact
    cum_n = np.cumsum(nz)
    # clipped error for candidate k: sum_{j > k} n_j (c_j - a_k)^2 via suffix sums of n, n c, n c^2
    s0 = np.cumsum(counts[::-1])[::-1]
    s1 = np.cumsum((counts * centres)[::-1])[::-1]
    s2 = np.cumsum((counts * centres ** 2)[::-1])[::-1]
    s0, s1, s2 = np.append(s0[1:], 0.0), np.append(s1[1:], 0.0), np.append(s2[1:], 0.0)
    clip = s2 - 2 * cand * s1 + cand ** 2 * s0
    rnd = cum_n * (cand / 127.0) ** 2 / 12.0
    return cand, clip + rnd


def mse_amax(counts: np.ndarray, bin_width: float, max_abs: float) -> float:
    if bin_width <= 0 or max_abs <= 0:
        return float(max_abs)
    cand, err = mse_curve(counts, bin_width)
    return float(min(cand[int(np.argmin(err))], max_abs))
