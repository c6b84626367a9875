"""The chunked, threaded histogram pass gives exactly the counts of the obvious slow reference.

Reference: |x| in float64 binned by ``np.histogram`` with the explicit edges ``k * range / 2048``
(last bin closed, as ``Histogram.counts`` reports top-edge values), range = the smallest power of two
>= max|x| found by a loop; and the code this pass replaced (one whole-tensor pass), frozen below.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sppquant.calibration.histogram as hmod
from sppquant.calibration import NUM_BINS, Histogram
from sppquant.calibration.algorithms import ALGORITHMS
from sppquant.calibration.collect import MAX_FEED_THREADS, ActivationCollector, ThreadedFeed, feed_threads
from sppquant.calibration.thresholds import thresholds
from sppquant.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def power_of_two_at_least(m: float) -> float:
    """Smallest 2**e >= m > 0, by stepping (no log2, no frexp)."""
    e = 0
    while math.ldexp(1.0, e) < m:
        e += 1
    while e > -1100 and math.ldexp(1.0, e - 1) >= m:
        e -= 1
    return math.ldexp(1.0, e)


def reference(arrays: list[np.ndarray]) -> tuple[float, np.ndarray, float, int, int]:
    """(range, counts, max_abs, count, nan_count) of all values, by np.histogram in float64."""
    a = np.abs(np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in arrays]))
    nan = int(np.isnan(a).sum())
    a = a[~np.isnan(a)]
    m = float(a.max()) if a.size else 0.0
    if m == 0.0:
        counts = np.zeros(NUM_BINS, np.int64)
        counts[0] = a.size
        return 0.0, counts, m, a.size, nan
    rng = power_of_two_at_least(m)
    edges = np.arange(NUM_BINS + 1, dtype=np.float64) * (rng / NUM_BINS)  # exact: rng/2048 is a power of two
    return rng, np.histogram(a, bins=edges)[0].astype(np.int64), m, a.size, nan


def old_pass(arrays: list[np.ndarray]) -> Histogram:
    """The pass before chunking: each tensor at once (abs copy, max, in-place scale, astype, bincount)."""
    h = Histogram()
    for x in arrays:
        a = np.asarray(x)
        a = a.astype(np.float64) if a.dtype.kind in "iub" else (a.astype(np.float32) if a.dtype.itemsize < 4 else a)
        a = np.abs(a.ravel())
        if a.size == 0:
            continue
        if np.isnan(a.max()):
            h.nan_count += int(np.isnan(a).sum())
            a = a[~np.isnan(a)]
            if a.size == 0:
                continue
        m = float(a.max())
        h.max_abs = max(h.max_abs, m)
        if m > 0.0:
            h._grow_to(hmod._range_exponent(m))
        h.count += int(a.size)
        if h._exp is None:
            h._counts[0] += a.size
            continue
        shift = hmod._LOG2_BINS - h._exp
        idx = np.ldexp(a, shift).astype(np.intp)
        h._counts += np.bincount(idx, minlength=NUM_BINS + 1)
    return h


def check(arrays: list[np.ndarray], h: Histogram) -> None:
    rng, counts, m, count, nan = reference(arrays)
    assert (h.range, h.max_abs, h.count, h.nan_count) == (rng, m, count, nan)
    assert np.array_equal(h.counts, counts)
    assert h == old_pass(arrays)


def fed(arrays: list[np.ndarray]) -> Histogram:
    h = Histogram()
    for a in arrays:
        h.update(a)
    return h


@pytest.fixture(params=[1, 5, 64, 1 << 18])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Every chunk size gives the same histogram: tiny ones make ranges grow inside a tensor."""
    monkeypatch.setattr(hmod, "CHUNK", request.param)
    return request.param


def edge_values(e: int, dtype: type) -> np.ndarray:
    """Every bin edge of range 2**e, the next representable values on both sides, both signs."""
    edges = np.ldexp(np.arange(NUM_BINS + 1, dtype=np.float64), e - hmod._LOG2_BINS).astype(dtype)
    vals = np.concatenate([edges, np.nextafter(edges, dtype(np.inf)), np.nextafter(edges, dtype(0))])
    vals = vals[np.isfinite(vals) & (np.abs(vals) <= math.ldexp(1.0, e))]
    return np.concatenate([vals, -vals[::3]]).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("e", [-140, -126, -20, 0, 3, 11, 40, 127])
def test_every_bin_edge_and_its_neighbours(chunk: int, dtype: type, e: int) -> None:
    if dtype is np.float32 and e < -126:
        e = -125  # range's bin width 2**(e-11) must be a float32 number for edges to exist
    vals = edge_values(e, dtype)
    rng = np.random.default_rng(e + 200)
    rng.shuffle(vals)
    parts = np.array_split(vals, 5)
    check(parts, fed(parts))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_subnormals_zeros_and_growth_across_chunks(chunk: int, dtype: type) -> None:
    tiny = np.finfo(dtype).smallest_subnormal
    arrays = [np.zeros(7, dtype), np.array([tiny, -tiny, 3 * tiny, 0.0], dtype),
              np.array([0.0, 1e-3, -2.0, 0.0, 2.0, 1.0], dtype), np.array([np.finfo(dtype).max / 4], dtype)]
    check(arrays, fed(arrays))


def test_integer_and_bool_inputs(chunk: int) -> None:
    arrays = [np.array([-128, 127, 0, -1], np.int8), np.arange(300, dtype=np.uint8).astype(np.uint8),
              np.array([True, False, True]), np.array([2**40 + 1, -(2**40)], np.int64)]
    check(arrays, fed(arrays))


def test_nan_anywhere_and_inf_leaves_histogram_unchanged(chunk: int) -> None:
    a = np.linspace(-3, 5, 200, dtype=np.float32)
    a[[0, 63, 64, 199]] = np.nan
    h = fed([a])
    check([a], h)
    before = h.copy()
    bad = np.linspace(0, 100, 300, dtype=np.float32)  # grows the range before the inf comes
    bad[-1] = -np.inf
    with pytest.raises(ValueError, match="inf"):
        h.update(bad)
    assert h == before
    assert fed([np.full(3, np.nan, np.float32)]).nan_count == 3


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
special = st.sampled_from([0.0, -0.0, np.nan, 1.0, -1.0, 0.5, 2.0**-20, 4096.0, 3.0, 1e-45, 2.0**-126])
arrays32 = hnp.arrays(np.float32, st.integers(0, 300), elements=st.one_of(finite32, special))


@settings(max_examples=120, deadline=None)
@given(st.lists(arrays32, min_size=1, max_size=5), st.sampled_from([1, 3, 17, 1 << 18]))
def test_random_streams_equal_reference_and_old_pass(arrays: list[np.ndarray], size: int) -> None:
    old = hmod.CHUNK
    hmod.CHUNK = size
    try:
        h = fed(arrays)
    finally:
        hmod.CHUNK = old
    check(arrays, h)


def test_large_activation_like_tensors() -> None:
    rng = np.random.default_rng(3)
    relu = np.maximum(rng.standard_normal((2, 16, 96, 96)), 0).astype(np.float32)  # many zeros, > 1 chunk
    heavy = (rng.standard_t(2, (3, 70_001)) * 4).astype(np.float32)
    arrays = [relu, heavy, relu[:, :3] * 2]
    check(arrays, fed(arrays))


# -- threads ----------------------------------------------------------------------------------------------


def batches(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    shapes = {"a": (4, 3, 50, 50), "b": (4, 1000), "c": (4, 7), "z": (2, 2)}
    return [{k: (rng.standard_normal(s) * rng.uniform(0.01, 30)).astype(np.float32) * (k != "z")
             for k, s in shapes.items()} for _ in range(n)]


@pytest.mark.parametrize("threads", [1, 3])
def test_threaded_feed_equals_sequential(threads: int) -> None:
    data = batches(5, 6)
    seq, par = ActivationCollector(["a", "b", "c", "z"]), ActivationCollector(["a", "b", "c", "z"])
    for arrays in data:
        seq.observe_all(arrays)
    with ThreadedFeed(par, threads) as feed:
        for arrays in data:
            feed.submit(dict(arrays, ignored=arrays["a"]))  # names the collector does not track are skipped
    assert seq.histograms == par.histograms


def test_threaded_feed_overlaps_only_small_batches() -> None:
    """A batch over overlap_bytes is binned before submit returns (memory: one batch + overlap_bytes)."""
    import time

    class Slow(ActivationCollector):
        def observe(self, name: str, values: np.ndarray) -> None:
            time.sleep(0.2)
            super().observe(name, values)

    data = batches(6, 1)[0]
    for limit, done in ((0, True), (1 << 40, False)):
        slow = Slow(["a"])
        with ThreadedFeed(slow, 2, overlap_bytes=limit) as feed:
            feed.submit(data)
            assert (slow.histograms["a"].count == data["a"].size) is done
        assert slow.histograms["a"].count == data["a"].size


def test_threaded_feed_raises_the_tensor_error() -> None:
    collector = ActivationCollector(["a", "b"])
    bad = {"a": np.ones(10, np.float32), "b": np.array([1.0, np.inf], np.float32)}
    with pytest.raises(DataError, match="'b'.*inf"):
        with ThreadedFeed(collector, 2) as feed:
            feed.submit(bad)


def test_feed_threads_rule() -> None:
    assert feed_threads(2, 10_000) == 2  # never below calibration.workers
    assert 1 <= feed_threads(1, 0) <= MAX_FEED_THREADS
    assert feed_threads(MAX_FEED_THREADS + 5, 0) == MAX_FEED_THREADS + 5


# -- thresholds unchanged -----------------------------------------------------------------------------------


def test_every_algorithm_threshold_identical_to_reference_histograms_on_the_demo(monkeypatch) -> None:
    """Demo activations (the SPP digit model on its calibration images at both sizes) binned by the
    threaded, chunked pass vs histograms built from the np.histogram reference: same amax, every rule."""
    import cv2

    from sppquant.backends.onnxruntime import OrtRunner, activation_names
    from sppquant.model import load_model

    monkeypatch.setattr(hmod, "CHUNK", 4099)  # many chunks per tensor
    model = load_model(REPO / "sppquant" / "demo" / "sppnet_digits.onnx")
    names = activation_names(model)
    runner = OrtRunner(model, extra_outputs=names, threads=1, spinning=False)
    files = sorted((REPO / "calib_data" / "digits").rglob("*.png"))[:24]
    seen: dict[str, list[np.ndarray]] = {n: [] for n in names}
    collector = ActivationCollector(names)
    with ThreadedFeed(collector, 3) as feed:
        for size in (32, 48):
            x = np.stack([cv2.resize(cv2.imread(str(f)), (size, size)).transpose(2, 0, 1) for f in files])
            feeds = {runner.input_names[0]: ((x.astype(np.float32) / 255.0 - 0.5) / 0.25).astype(np.float32)}
            acts = {**feeds, **runner.run(feeds, [n for n in names if n not in feeds])}
            for n, a in acts.items():
                seen[n].append(a)
            feed.submit(acts)
    ref = {}
    for n, arrays in seen.items():
        rng, counts, m, count, nan = reference(arrays)
        top = int(np.sum(np.abs(np.concatenate([a.ravel() for a in arrays]).astype(np.float64)) == rng)) if rng else 0
        counts[-1] -= top
        ref[n] = Histogram.from_dict({"format": "sppquant.histogram/1", "num_bins": NUM_BINS, "range": rng,
                                      "max_abs": m, "count": count, "nan_count": nan,
                                      "counts": counts.tolist(), "top_edge_count": top})
    assert collector.histograms == ref
    for algo in ALGORITHMS.names():
        if ALGORITHMS.get(algo).candidates:
            continue  # auto: chosen by output SQNR from the same histograms (tested in test_mse_auto)
        assert thresholds(collector.histograms, algo, {}) == thresholds(ref, algo, {}), algo
