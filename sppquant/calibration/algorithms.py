"""Thresholds (amax) from |x| histograms: TensorRT's EntropyCalibration2, min/max, percentile.

The entropy search follows DESIGN.md §2 "EntropyCalibration2". For every candidate
``i`` in ``128..N`` (N = 2048 bins):

- ``P`` = ``counts[:i]`` with the mass of ``counts[i:]`` added to ``P[i-1]``;
- ``Q`` = the raw ``counts[:i]`` merged into 128 groups, group ``j`` covering bins
  ``[floor(j*i/128), floor((j+1)*i/128))``, each group's total spread evenly over the
  group's bins where ``P != 0`` (bins where ``P == 0`` stay 0);
- ``KL(P||Q)`` of the normalised distributions (inf where ``q == 0 < p``);
- the smallest KL wins (the first ``i`` on ties); ``amax = (i + 0.5) * bin_width``.

Before the search, bin 0's count is replaced by bin 1's (``counts[0] = counts[1]``), as
NVIDIA's public reference of this search does (pytorch-quantization's
``_compute_amax_entropy``). Bin 0 holds the exact zeros, and zeros are represented
exactly under any scale, so they carry no information about where to clip; but
after a ReLU they are often 90%+ of all values, and left in they dominate P and Q
and pull the threshold far into the distribution (on a ReLU output that was 98%
zeros, amax 1.96 instead of ~11 for max|x| 11.6, clipping the large values a
following max pooling selects: INT8 agreement with FP32 fell from 97% to 49%).

How TensorRT splits ``i`` bins into 128 groups when 128 does not divide ``i`` is not
public. The ``floor(j*i/128)`` split mirrors the adaptive-pooling bin rule used
elsewhere in this project and spreads the remainder evenly (pytorch-quantization puts
it all in the last group). KL is flat near its minimum, so the choice moves ``i`` by a
few bins at almost equal KL.

The search is vectorised over all candidates with prefix sums, no Python loop:
with ``p = c / T`` and ``g_j``, ``n_j`` the group masses and non-zero-bin counts,
``KL_i = sum P log P - sum_j pg_j log(g_j / n_j) + log(sum p[:i])``, where ``pg_j`` is
``g_j`` plus the outlier mass for the last group. ``sum P log P`` comes from a cumulative
sum of ``p log p``; group masses and non-zero counts from cumulative sums looked up at
the ``(1921, 129)`` group edges. Masses are summed from the raw counts (exact for
integer counts) and normalised only inside the logarithms.

Degenerate histograms: no counts at all -> 0.0. An all-zero tensor has a histogram of
range 0, hence bin width 0, hence amax 0.0. Callers must handle amax 0 (a table cannot
store a zero scale). The result is never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from sppquant.calibration.histogram import Histogram
from sppquant.calibration.mse import mse_amax
from sppquant.errors import UserError
from sppquant.registry import Registry

NUM_QUANTIZED_BINS = 128
_CHUNK = 256  # candidates per vectorised block


@lru_cache(maxsize=8)
def _group_edges(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Group bounds ``[lo, hi)`` for every candidate ``i`` in 128..n, each (K, 128)."""
    cand = np.arange(NUM_QUANTIZED_BINS, n + 1)
    j = np.arange(NUM_QUANTIZED_BINS + 1)
    edges = (cand[:, None] * j[None, :]) // NUM_QUANTIZED_BINS  # floor(j*i/128)
    lo, hi = np.ascontiguousarray(edges[:, :-1]), np.ascontiguousarray(edges[:, 1:])
    lo.flags.writeable = hi.flags.writeable = False
    return lo, hi


def _xlogx(x: np.ndarray) -> np.ndarray:
    """``x * log(x)`` with ``0 log 0 = 0``."""
    out = np.zeros_like(x, dtype=np.float64)
    pos = x > 0
    out[pos] = x[pos] * np.log(x[pos])
    return out


def entropy_kl_curve(counts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Candidates ``i`` (128..N) and ``KL(P_i || Q_i)`` for each; inf where undefined.

    Exposed so reports can show how flat the curve is near its minimum.
    """
    c = np.array(counts, dtype=np.float64)  # a copy: bin 0 is replaced below
    if c.ndim != 1 or c.size < NUM_QUANTIZED_BINS:
        raise ValueError(f"entropy search needs a 1-D histogram of >= 128 bins, got shape {c.shape}")
    if not np.isfinite(c).all() or (c < 0).any():
        raise ValueError("histogram counts must be finite and non-negative")
    c[0] = c[1]  # exact zeros carry no clipping information (module docstring)
    n = c.size
    cand = np.arange(NUM_QUANTIZED_BINS, n + 1)
    total = float(c.sum())
    if total == 0.0:
        return cand, np.zeros(cand.size)

    mass = np.concatenate(([0.0], np.cumsum(c)))  # mass[k] = sum c[:k]
    nonzero = np.concatenate(([0], np.cumsum(c > 0)))  # bins with c != 0 among c[:k]
    plogp = np.concatenate(([0.0], np.cumsum(_xlogx(c / total))))

    tail = total - mass[cand]  # outlier mass, added to P[i-1]
    last = total - mass[cand - 1]  # P[i-1]
    sum_plogp = plogp[cand - 1] + _xlogx(last / total)
    # P[i-1] may be non-zero only because of the outlier mass.
    extra_nz = ((c[cand - 1] == 0) & (tail > 0)).astype(np.int64)

    lo, hi = _group_edges(n)
    cross = np.empty(cand.size)
    # Chunks of candidates keep the temporaries small (cache-resident, no page faults):
    # 4x faster than one (1921, 128) pass. The loop runs over chunks, not candidates.
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in range(0, cand.size, _CHUNK):
            sl = slice(s, s + _CHUNK)
            h, lw = hi[sl], lo[sl]
            g = mass[h] - mass[lw]  # raw group masses
            nz = nonzero[h] - nonzero[lw]  # bins where P != 0
            nz[:, -1] += extra_nz[sl]
            pg = g.copy()
            pg[:, -1] += tail[sl]  # P's group masses: the outliers sit in the last group
            logq = np.log(g / (nz * total))  # log of the group's per-bin value, over T
            cross[sl] = np.where(pg > 0, pg * logq, 0.0).sum(axis=1) / total
        kl = sum_plogp - cross + np.log(mass[cand] / total)
    # q == 0 where p > 0 (or nothing left in Q): -inf cross term -> KL inf.
    kl = np.where(np.isfinite(kl), kl, np.inf)
    # KL >= 0 exactly; clamp rounding noise so exact ties (KL 0) resolve to the first i.
    return cand, np.maximum(kl, 0.0)


def entropy_amax(counts: Any, bin_width: float) -> float:
    """TensorRT EntropyCalibration2 threshold ``(i + 0.5) * bin_width`` for a histogram."""
    if not (math.isfinite(bin_width) and bin_width >= 0.0):
        raise ValueError(f"bin_width must be finite and >= 0, got {bin_width!r}")
    cand, kl = entropy_kl_curve(counts)
    if bin_width == 0.0 or float(np.sum(counts[1:])) == 0.0:  # nothing but zeros (bin 0) or nothing
        return 0.0
    best = int(cand[int(np.argmin(kl))])
    return (best + 0.5) * float(bin_width)


def minmax_amax(hist: Histogram) -> float:
    """The exact largest |x| seen."""
    return float(hist.max_abs)


def percentile_amax(hist: Histogram, percentile: float = 99.99) -> float:
    """Smallest bin right edge with cumulative count >= ``percentile``% of all values.

    ``percentile`` is in (0, 100]. The edge is capped at ``max_abs``: inside the last
    occupied bin the edge can overshoot the data, and the cap clips nothing; so
    ``percentile=100`` equals min/max. Empty or all-zero histograms give 0.0.
    """
    if not (0.0 < percentile <= 100.0):
        raise ValueError(f"percentile must be in (0, 100], got {percentile!r}")
    counts = hist.counts
    total = int(counts.sum())
    if total == 0 or hist.bin_width == 0.0:
        return 0.0
    cum = np.cumsum(counts)
    need = percentile / 100.0 * total
    k = int(np.searchsorted(cum, need, side="left"))  # first k with cum[k] >= need
    k = min(k, counts.size - 1)
    return min((k + 1) * hist.bin_width, float(hist.max_abs))


@dataclass(frozen=True)
class Param:
    """One parameter of an algorithm: its YAML key under ``calibration:``, type, default and check.

    ``check`` returns None when the value is fine, else what was expected (for a one-line error).
    """

    name: str
    type: type
    default: Any
    check: Callable[[Any], str | None] = lambda value: None
    help: str = ""

    @property
    def config_key(self) -> str:
        return self.name


@dataclass(frozen=True)
class Algorithm:
    """A threshold rule, its parameters, and how TensorRT must see the table it produces.

    ``trt_header``: the algorithm in the table header; TensorRT loads a table only under its
    calibrator's header, and a table is only amax values, so any rule can be served under
    ``EntropyCalibration2``. ``trt_calibrator``: the TensorRT calibrator base class that
    computes this rule itself, or None: then the TensorRT backend computes thresholds from its
    own histograms (never runs another rule and labels it with this name).
    """

    name: str
    compute: Callable[..., float]
    trt_header: str
    trt_calibrator: str | None = None
    params: tuple[Param, ...] = ()
    help: str = ""
    # Rules chosen between per tensor by their measured effect on the model output (the pipeline runs
    # the model for that); ``compute`` is then the rule used where no model is at hand.
    candidates: tuple[str, ...] = ()

    @property
    def trt_header_algo(self) -> str:  # the name the table module uses
        return self.trt_header

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


def _entropy2(hist: Histogram) -> float:
    return entropy_amax(hist.counts, hist.bin_width)


def _check_percentile(value: Any) -> str | None:
    return None if 0.0 < float(value) <= 100.0 else "a number in (0, 100]"


ALGORITHMS: Registry[Algorithm] = Registry("calibration algorithm")
ALGORITHMS.register("entropy2", Algorithm(
    "entropy2", _entropy2, "EntropyCalibration2", "IInt8EntropyCalibrator2",
    help="TensorRT's EntropyCalibration2 (KL divergence) rule"))
ALGORITHMS.register("minmax", Algorithm(
    "minmax", minmax_amax, "MinMaxCalibration", "IInt8MinMaxCalibrator", help="the largest |x| seen"))
ALGORITHMS.register("percentile", Algorithm(
    "percentile", percentile_amax, "EntropyCalibration2", None,
    (Param("percentile", float, 99.99, _check_percentile, "percent of |x| values kept unclipped"),),
    help="the |x| below which the given percentage of values lies"))
ALGORITHMS.register("mse", Algorithm(
    "mse", mse_amax, "EntropyCalibration2", None,
    help="the amax minimising the expected squared quantization error, clipping included"))
ALGORITHMS.register("auto", Algorithm(
    "auto", mse_amax, "EntropyCalibration2", None,
    help="per tensor, one of mse, percentile, entropy2, minmax, chosen by the INT8 model's output SQNR on "
         "calibration images (best whole table, then per-tensor moves, within one histogram pass's time)",
    candidates=("mse", "percentile", "entropy2", "minmax")))
# Fixed percentile levels, so one report can compare them side by side (``--algorithms``).
for _level, _name in ((99.9, "percentile_99_9"), (99.999, "percentile_99_999")):
    ALGORITHMS.register(_name, Algorithm(
        _name, lambda h, _p=_level: percentile_amax(h, _p), "EntropyCalibration2", None,
        help=f"percentile at {_level}%"))


# The one place the default rule is chosen (config, CLI help, `init` and reports read it from here).
# percentile 99.99 had the highest INT8 output SQNR and FP32-level task metrics on the real-model benchmark
# (benchmarks/RESULTS.md, issue 10) where entropy2 was worst on all three models (3.1% exact match on the
# recognizer's quick run: 99.7% of its input clipped). entropy2 stays registered as TensorRT's exact rule.
DEFAULT_ALGORITHM = "percentile"
if DEFAULT_ALGORITHM not in ALGORITHMS:  # pragma: no cover - guards an edit of the line above
    raise ValueError(f"default calibration algorithm {DEFAULT_ALGORITHM!r} is not registered")


def get_algorithm(name: str) -> Algorithm:
    return ALGORITHMS.get(name)


def algorithm_param_keys() -> dict[str, Param]:
    """Every registered algorithm parameter by config key (the config accepts exactly these)."""
    out: dict[str, Param] = {}
    for algo in ALGORITHMS.values():
        for p in algo.params:
            out.setdefault(p.config_key, p)
    return out


def resolve_params(algorithm: str, configured: Mapping[str, Any]) -> dict[str, Any]:
    """The algorithm's parameters: configured values where given, else its defaults."""
    algo = get_algorithm(algorithm)
    return {p.name: configured.get(p.config_key, p.default) for p in algo.params}


def compute_amax(hist: Histogram, algorithm: str = DEFAULT_ALGORITHM, **params: Any) -> float:
    """amax of one tensor's histogram with a named algorithm (``ALGORITHMS`` keys)."""
    algo = get_algorithm(algorithm)
    unknown = set(params) - {p.name for p in algo.params}
    if unknown:
        allowed = ", ".join(p.name for p in algo.params) or "none"
        raise UserError(
            f"calibration algorithm {algorithm!r} has no parameter(s) {', '.join(sorted(unknown))}; allowed: {allowed}"
        )
    amax = float(algo.compute(hist, **{**algo.defaults(), **params}))
    if not math.isfinite(amax) or amax < 0.0:  # defensive: never hand on garbage
        raise ValueError(f"{algorithm} produced an invalid amax {amax!r}")
    return amax
