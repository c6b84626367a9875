"""Output metrics against FP32 (and labels), as pure functions and as exactly mergeable accumulators.

Definitions (reports and their JSON use exactly these):

- ``top-k accuracy``: fraction of images whose label is among the k largest outputs
  (ties broken by the lower class index, like a stable argsort).
- ``agreement``: fraction of images whose top-1 class equals FP32's top-1 class.
- ``cosine``: mean over images of the cosine similarity of the image's output vector
  with FP32's (two all-zero vectors count as 1, one all-zero vector as 0).
- ``SQNR`` (dB): ``10 log10(sum ref^2 / sum (x - ref)^2)`` over all elements (energy
  pooled over images, not averaged per image). ``inf`` when the outputs are identical;
  the JSON writes ``null`` for it.
- absolute error: max, mean and 99th percentile of ``|x - ref|`` over all elements. The
  accumulators take the percentile from an exact, mergeable 2048-bin histogram
  (`sppquant.calibration.Histogram`): its value is a bin's right edge, so it is exact to
  one bin width (at most max|err| / 1024) and identical however the data is sharded.

Accumulators hold sums and histograms, never the outputs themselves: memory does not
grow with the number of images, and two shards merge into exactly one run's result.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sppquant.calibration.algorithms import percentile_amax
from sppquant.calibration.histogram import Histogram


def _as2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)


def sqnr_from_energy(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * (math.log10(signal) - math.log10(noise))  # not log10(signal / noise): the ratio can underflow


def sqnr_db(ref: np.ndarray, x: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``x`` against ``ref`` in dB (inf if identical)."""
    ref = np.asarray(ref, dtype=np.float64)
    noise = float(np.sum((np.asarray(x, dtype=np.float64) - ref) ** 2))
    return sqnr_from_energy(float(np.sum(ref * ref)), noise)


def cosine_rows(ref: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-image cosine similarity (rows = images), with the zero-vector conventions above."""
    r, y = _as2d(ref), _as2d(x)
    nr, ny = np.linalg.norm(r, axis=1), np.linalg.norm(y, axis=1)
    dot = np.sum(r * y, axis=1)
    both_zero = (nr == 0) & (ny == 0)
    denom = np.where((nr == 0) | (ny == 0), 1.0, nr * ny)
    cos = np.where(both_zero, 1.0, np.where((nr == 0) | (ny == 0), 0.0, dot / denom))
    return np.clip(cos, -1.0, 1.0)


def cosine_similarity(ref: np.ndarray, x: np.ndarray) -> float:
    """Mean per-image cosine similarity (rows = images)."""
    cos = cosine_rows(ref, x)
    return float(np.mean(cos)) if cos.size else math.nan


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest outputs per image, largest first, ties to the lower index."""
    z = _as2d(logits)
    return np.argsort(-z, axis=1, kind="stable")[:, :k]


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0:
        return math.nan
    hits = (top_k(logits, k) == labels[:, None]).any(axis=1)
    return float(np.mean(hits))


def agreement(ref_logits: np.ndarray, logits: np.ndarray) -> float:
    """Fraction of images with the same top-1 class as the reference."""
    a, b = top_k(ref_logits, 1)[:, 0], top_k(logits, 1)[:, 0]
    return float(np.mean(a == b)) if a.size else math.nan


def abs_errors(ref: np.ndarray, x: np.ndarray) -> dict[str, float]:
    d = np.abs(np.asarray(x, dtype=np.float64) - np.asarray(ref, dtype=np.float64)).ravel()
    if d.size == 0:
        return {"max_abs_err": math.nan, "mean_abs_err": math.nan, "p99_abs_err": math.nan}
    return {"max_abs_err": float(d.max()), "mean_abs_err": float(d.mean()), "p99_abs_err": float(np.percentile(d, 99))}


def output_metrics(ref: np.ndarray, x: np.ndarray, labels: np.ndarray | None, num_classes: int) -> dict[str, Any]:
    """All classification metrics of outputs ``x`` against FP32 outputs ``ref`` (and ``labels``), at once."""
    out: dict[str, Any] = {"images": int(np.asarray(x).shape[0])}
    if labels is not None:
        out["top1"] = top_k_accuracy(x, labels, 1)
        if num_classes >= 5:
            out["top5"] = top_k_accuracy(x, labels, 5)
    out["agreement"] = agreement(ref, x)
    out["cosine"] = cosine_similarity(ref, x)
    out["sqnr_db"] = sqnr_db(ref, x)
    out.update(abs_errors(ref, x))
    return out


# --------------------------------------------------------------------------- accumulators


class ExactSum:
    """A float64 sum that is exact until the final rounding (Shewchuk's partials, as `math.fsum`).

    Per-image terms go in one by one, so the total does not depend on how images were
    batched or sharded, nor on the order shards merge in: a sharded run equals one process.
    """

    __slots__ = ("partials",)

    def __init__(self, partials: list[float] | None = None) -> None:
        self.partials: list[float] = partials or []

    def add(self, x: float) -> None:
        kept = []
        for y in self.partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                kept.append(lo)
            x = hi
        kept.append(x)
        self.partials = kept

    def add_all(self, values: np.ndarray) -> None:
        for v in np.asarray(values, dtype=np.float64).reshape(-1).tolist():
            self.add(v)

    def merge(self, other: ExactSum) -> ExactSum:
        out = ExactSum(list(self.partials))
        for v in other.partials:
            out.add(v)
        return out

    @property
    def value(self) -> float:
        return math.fsum(self.partials)


def _per_image(a: np.ndarray) -> np.ndarray:
    """Row sums of a 2-D (images, values) array; a row's sum does not depend on its batch."""
    return a.reshape(a.shape[0], -1).sum(axis=1) if a.ndim else a.reshape(1)


class SqnrAccumulator:
    """Streams signal and noise energy over batches (exact float64 sums) for one pooled SQNR."""

    __slots__ = ("_signal", "_noise", "count")

    def __init__(self) -> None:
        self._signal = ExactSum()
        self._noise = ExactSum()
        self.count = 0

    @property
    def signal(self) -> float:
        return self._signal.value

    @property
    def noise(self) -> float:
        return self._noise.value

    def add(self, ref: np.ndarray, x: np.ndarray) -> None:
        ref = np.asarray(ref, dtype=np.float64)
        d = np.asarray(x, dtype=np.float64) - ref
        self._signal.add_all(_per_image(ref * ref))
        self._noise.add_all(_per_image(d * d))
        self.count += ref.size

    def merge(self, other: SqnrAccumulator) -> SqnrAccumulator:
        out = SqnrAccumulator()
        out._signal, out._noise = self._signal.merge(other._signal), self._noise.merge(other._noise)
        out.count = self.count + other.count
        return out

    def __getstate__(self) -> tuple:
        return self._signal.partials, self._noise.partials, self.count

    def __setstate__(self, state: tuple) -> None:
        self._signal, self._noise, self.count = ExactSum(state[0]), ExactSum(state[1]), state[2]

    @property
    def db(self) -> float:
        return sqnr_from_energy(self.signal, self.noise)


class OutputAccumulator:
    """Agreement-free output comparison of one output tensor: cosine, SQNR, |error| statistics.

    Non-finite values in the compared output (an FP16 or INT8 model overflowing) are counted in
    ``nonfinite`` and scored as lost (0), so the statistics stay numbers and the report can say so."""

    def __init__(self) -> None:
        self.sqnr = SqnrAccumulator()
        self.cos_sum = ExactSum()
        self.images = 0
        self.err = Histogram()
        self.err_sum = ExactSum()
        self.nonfinite = 0

    def add(self, ref: np.ndarray, x: np.ndarray) -> None:
        ref64, x64 = np.asarray(ref, dtype=np.float64), np.asarray(x, dtype=np.float64)
        bad = ~np.isfinite(x64)
        if bad.any():
            self.nonfinite += int(bad.sum())
            x64 = np.where(bad, 0.0, x64)
        self.sqnr.add(ref64, x64)
        cos = cosine_rows(ref64, x64)
        self.cos_sum.add_all(cos)
        self.images += int(cos.size)
        d = np.abs(x64 - ref64)
        self.err.update(d)
        self.err_sum.add_all(_per_image(d))

    def merge(self, other: OutputAccumulator) -> OutputAccumulator:
        out = OutputAccumulator()
        out.sqnr = self.sqnr.merge(other.sqnr)
        out.cos_sum, out.images = self.cos_sum.merge(other.cos_sum), self.images + other.images
        out.err, out.err_sum = self.err.merge(other.err), self.err_sum.merge(other.err_sum)
        out.nonfinite = self.nonfinite + other.nonfinite
        return out

    def result(self) -> dict[str, float]:
        n = self.err.count
        return {
            "cosine": self.cos_sum.value / self.images if self.images else math.nan,
            "sqnr_db": self.sqnr.db,
            "max_abs_err": self.err.max_abs if n else math.nan,
            "mean_abs_err": self.err_sum.value / n if n else math.nan,
            "p99_abs_err": percentile_amax(self.err, 99.0) if n else math.nan,
            "nonfinite_outputs": self.nonfinite,
        }


def json_number(v: Any) -> Any:
    """JSON has no inf/NaN: ``inf`` -> None (documented as 'identical'), NaN -> None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def jsonable(obj: Any) -> Any:
    """Recursively replace non-finite floats (and NumPy scalars) for strict JSON."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return json_number(obj)
