"""Streaming 2048-bin histograms of |x|, exact and independent of batch order.

Design: the histogram range is always a power of two, ``range = 2**ceil(log2(max|x|))``
(exactly ``max|x|`` when that is a power of two). Bin ``j`` covers
``[j * range/2048, (j+1) * range/2048)``; ``2048/range`` is a power of two, so the bin
index ``floor(|x| * 2048/range)`` is computed without rounding error.

When a value beyond the range arrives, the range grows by a power of two ``2**k`` and
the old counts merge exactly (bin ``j`` -> ``j >> k``). Streaming with growth
therefore yields EXACTLY the counts of binning all the data at the final range:
results do not depend on batch (file) order, and two histograms merge exactly
(re-bin the narrower one, add), so calibration can be sharded across processes.

TensorRT's own calibrator starts from the first batch's max and grows from there, so
its bins depend on batch order. Ours are up to 2x wider than a range of exactly
``max|x|`` would give (at most one bit of resolution), in exchange for
order-independence.

Edge cases: a value exactly at the top edge (``|x| == range``) lands in the last bin;
it is tracked separately inside so that a later growth puts it where binning at the
final range would (``2048 >> k``). Zeros go to bin 0; a histogram of only zeros has
range 0.0 and everything in ``counts[0]``. NaNs are skipped and counted; +/-inf raises.

Speed: a tensor is binned in chunks of ``CHUNK`` values, each in one sweep of cache-resident
scratch (|x|, max, exact power-of-two scale cast to int32, ``np.bincount``); a chunk whose max
exceeds the range grows it exactly, as between tensors, so chunking changes no count. numpy
releases the GIL in these steps, so `collect.ThreadedFeed` bins tensors on several threads.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

NUM_BINS = 2048
_LOG2_BINS = 11  # NUM_BINS == 2**_LOG2_BINS
_FORMAT = "sppquant.histogram/1"
# Values binned per step: a step's scratch (|x| and int32 bin indices, 2 MB per thread) stays
# in cache, so a tensor is read from memory once and no tensor-sized temporary is allocated.
CHUNK = 1 << 18
_scratch = threading.local()  # per thread: histograms are fed from several threads


def _range_exponent(max_abs: float) -> int:
    """Smallest ``e`` with ``max_abs <= 2**e`` (``max_abs`` > 0, finite)."""
    mantissa, exp = math.frexp(max_abs)  # max_abs = mantissa * 2**exp, mantissa in [0.5, 1)
    return exp - 1 if mantissa == 0.5 else exp


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """Where |x| is computed, exactly: float16 widens to float32; integers and bools go to float64."""
    if dtype.kind == "f":
        return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(dtype)
    return np.dtype(np.float64)


def _buffers(dtype: np.dtype, n: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's scratch: ``n`` values of ``dtype`` and ``n`` int32 bin indices."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None or bufs[1].size < n:
        bufs = _scratch.bufs = ({}, np.empty(max(n, CHUNK), np.int32))
    values = bufs[0].get(dtype)
    if values is None or values.size < n:
        values = bufs[0][dtype] = np.empty(max(n, CHUNK), dtype)
    return values[:n], bufs[1][:n]


def _regrid(counts: np.ndarray, old: int | None, new: int) -> np.ndarray:
    """Counts at range ``2**old`` re-binned exactly at range ``2**new`` (``new`` >= ``old``).

    Bin ``j`` goes to ``j >> k``; the top-edge slot (values == ``2**old``) to ``NUM_BINS >> k``.
    """
    if new > 1023:
        raise ValueError("Histogram.update: |x| > 2**1023 is out of the supported range")
    if old is None:
        return counts  # zeros in bin 0 stay there at any range
    k = new - old
    if k <= 0:
        return counts
    out = np.zeros_like(counts)
    if k <= _LOG2_BINS:
        out[: NUM_BINS >> k] = counts[:NUM_BINS].reshape(NUM_BINS >> k, 1 << k).sum(axis=1)
        out[NUM_BINS >> k] += counts[NUM_BINS]
    else:
        out[0] = counts.sum()
    return out


class _Pass:
    """One tensor's contribution, binned chunk by chunk from the histogram's current range.

    Each chunk's max may grow the range (exact re-binning, as between tensors), so the result
    equals binning the whole tensor at once; nothing touches the histogram until the end.
    """

    __slots__ = ("exp", "counts", "max_abs", "count", "nan_count", "work")

    def __init__(self, exp: int | None, work: np.dtype) -> None:
        self.exp = exp
        self.counts = np.zeros(NUM_BINS + 1, dtype=np.int64)
        self.max_abs = 0.0
        self.count = 0
        self.nan_count = 0
        self.work = work

    def add(self, chunk: np.ndarray) -> None:
        values, index = _buffers(self.work, chunk.size)
        if chunk.dtype == self.work:
            np.abs(chunk, out=values)
        else:  # float16 -> float32, integers/bools -> float64: exact widening, then |x|
            np.copyto(values, chunk, casting="unsafe")
            np.abs(values, out=values)
        m = float(values.max())
        if math.isnan(m):
            nan = np.isnan(values)
            self.nan_count += int(nan.sum())
            values = values[~nan]
            if values.size == 0:
                return
            index = index[: values.size]
            m = float(values.max())
        if math.isinf(m):
            raise ValueError(
                "Histogram.update: tensor contains +/-inf; the model overflows on this "
                "input (check preprocessing) and no finite threshold can be computed"
            )
        self.count += int(values.size)
        if m > self.max_abs:
            self.max_abs = m
        if m > 0.0:
            e = _range_exponent(m)
            if self.exp is None or e > self.exp:
                self.counts = _regrid(self.counts, self.exp, e)
                self.exp = e
        if self.exp is None:  # all zeros so far
            self.counts[0] += values.size
            return
        _bin_index(values, self.exp, index)
        self.counts += np.bincount(index, minlength=NUM_BINS + 1)


def _bin_index(values: np.ndarray, exp: int, out: np.ndarray) -> None:
    """``out = floor(values * 2048 / 2**exp)``, exact: the factor is a power of two.

    The product is computed in ``values``' own precision and is exact (or, for results below
    the smallest normal number, rounded but still < 1, so floor is unchanged); the cast to
    int32 truncates, which is floor for values >= 0. Every value is <= 2**exp, so
    indices are 0..2048 (2048: exactly at the top edge).
    """
    shift = _LOG2_BINS - exp
    finfo = np.finfo(values.dtype)
    if finfo.minexp <= shift <= finfo.maxexp - 1:
        np.multiply(values, values.dtype.type(math.ldexp(1.0, shift)), out=out, dtype=values.dtype, casting="unsafe")
    else:  # factor not representable (subnormal-sized ranges): exact ldexp
        np.copyto(out, np.ldexp(values, shift), casting="unsafe")


class Histogram:
    """Histogram of |x| over ``[0, range)`` in ``NUM_BINS`` bins; see the module docstring."""

    NUM_BINS = NUM_BINS

    __slots__ = ("_counts", "_exp", "max_abs", "count", "nan_count")

    def __init__(self) -> None:
        # NUM_BINS + 1 bins: the extra one holds values exactly at the top edge.
        self._counts = np.zeros(NUM_BINS + 1, dtype=np.int64)
        self._exp: int | None = None  # range == 2**_exp; None while everything is zero
        self.max_abs = 0.0
        self.count = 0
        self.nan_count = 0

    # -- properties -------------------------------------------------------------------
    @property
    def range(self) -> float:
        return 0.0 if self._exp is None else math.ldexp(1.0, self._exp)

    @property
    def bin_width(self) -> float:
        return 0.0 if self._exp is None else math.ldexp(1.0, self._exp - _LOG2_BINS)

    @property
    def counts(self) -> np.ndarray:
        """The ``NUM_BINS`` counts (a copy); top-edge values are in the last bin."""
        out = self._counts[:NUM_BINS].copy()
        out[-1] += self._counts[NUM_BINS]
        return out

    # -- updates ----------------------------------------------------------------------
    def update(self, x: Any) -> Histogram:
        """Add the values of ``x`` (any shape, float16/32/64 or integer). Returns self.

        All or nothing: a tensor with +/-inf raises ValueError and leaves the histogram as it was.
        """
        a = np.asarray(x)
        if a.dtype.kind not in "iubf":
            raise TypeError(f"Histogram.update needs a real array, got dtype {a.dtype}")
        flat = a.reshape(-1)
        if flat.size == 0:
            return self
        part = _Pass(self._exp, _work_dtype(a.dtype))
        for start in range(0, flat.size, CHUNK):
            part.add(flat[start:start + CHUNK])
        self._commit(part)
        return self

    def add_zeros(self, n: int) -> Histogram:
        """Count ``n`` exact zeros (bin 0 at any range), as `update` with ``np.zeros(n)`` would. Returns self."""
        if n < 0:
            raise ValueError(f"Histogram.add_zeros: n must be >= 0, got {n}")
        self._counts[0] += n
        self.count += n
        return self

    def _commit(self, part: _Pass) -> None:
        if part.max_abs > self.max_abs:
            self.max_abs = part.max_abs
        self.count += part.count
        self.nan_count += part.nan_count
        if part.exp is not None:
            self._grow_to(part.exp)  # part started at our range and only grew: both now bin alike
        self._counts += part.counts

    def _grow_to(self, exp: int) -> None:
        if self._exp is not None and exp <= self._exp:
            return
        self._counts = _regrid(self._counts, self._exp, exp)
        self._exp = exp

    # -- merging ----------------------------------------------------------------------
    def merge(self, other: Histogram) -> Histogram:
        """A new histogram equal to one fed the data of both (exact)."""
        out = self.copy()
        if other._exp is not None:
            out._grow_to(other._exp)
        src = other.copy()
        if out._exp is not None:
            src._grow_to(out._exp)
        out._counts += src._counts
        out.max_abs = max(out.max_abs, other.max_abs)
        out.count += other.count
        out.nan_count += other.nan_count
        return out

    def __add__(self, other: object) -> Histogram:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.merge(other)

    def copy(self) -> Histogram:
        out = Histogram()
        out._counts = self._counts.copy()
        out._exp = self._exp
        out.max_abs = self.max_abs
        out.count = self.count
        out.nan_count = self.nan_count
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self._exp == other._exp
            and self.max_abs == other.max_abs
            and self.count == other.count
            and self.nan_count == other.nan_count
            and bool(np.array_equal(self._counts, other._counts))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"Histogram(range={self.range!r}, max_abs={self.max_abs!r}, count={self.count}, nan_count={self.nan_count})"
        )

    # -- serialisation ----------------------------------------------------------------
    def to_summary(self) -> dict[str, Any]:
        """Small human-readable facts for provenance records and reports."""
        counts = self.counts
        nonzero = np.flatnonzero(counts)
        return {
            "range": self.range,
            "bin_width": self.bin_width,
            "max_abs": self.max_abs,
            "count": self.count,
            "nan_count": self.nan_count,
            "zero_bin_count": int(counts[0]),
            "nonzero_bins": int(nonzero.size),
            "last_nonzero_bin": int(nonzero[-1]) if nonzero.size else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """Lossless, JSON-ready form (``from_dict(h.to_dict()) == h``)."""
        return {
            "format": _FORMAT,
            "num_bins": NUM_BINS,
            "range": self.range,
            "max_abs": self.max_abs,
            "count": self.count,
            "nan_count": self.nan_count,
            "counts": [int(c) for c in self._counts[:NUM_BINS]],
            "top_edge_count": int(self._counts[NUM_BINS]),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        if data.get("format") != _FORMAT or data.get("num_bins") != NUM_BINS:
            raise ValueError(f"not a {_FORMAT} histogram with {NUM_BINS} bins")
        counts = np.asarray(data["counts"], dtype=np.int64)
        if counts.shape != (NUM_BINS,) or (counts < 0).any():
            raise ValueError(f"histogram counts must be {NUM_BINS} non-negative integers")
        rng = float(data["range"])
        out = cls()
        if rng > 0.0:
            mantissa, exp = math.frexp(rng)
            if mantissa != 0.5:
                raise ValueError(f"histogram range must be a power of two, got {rng!r}")
            out._exp = exp - 1
        out._counts[:NUM_BINS] = counts
        out._counts[NUM_BINS] = int(data.get("top_edge_count", 0))
        out.max_abs = float(data["max_abs"])
        out.count = int(data["count"])
        out.nan_count = int(data["nan_count"])
        if int(out._counts.sum()) != out.count:
            raise ValueError("histogram counts do not add up to its count")
        return out
