"""Thresholds: the vectorised entropy search against the slow reference; minmax; percentile."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sppquant.calibration import (
    ALGORITHMS,
    Histogram,
    compute_amax,
    entropy_amax,
    entropy_kl_curve,
    minmax_amax,
    percentile_amax,
)
from sppquant.errors import UserError

try:
    from entropy_slow import entropy_amax_slow, entropy_best_slow, kl_slow
except ImportError:  # tests/ imported as a package
    from tests.entropy_slow import entropy_amax_slow, entropy_best_slow, kl_slow

RTOL, ATOL = 1e-9, 1e-12  # ATOL: KL minima can be exactly 0


def assert_matches_slow(counts: np.ndarray) -> None:
    """The vectorised choice is optimal by the slow KL, and equal to the slow choice
    unless the two are tied to within rounding."""
    counts = np.asarray(counts)
    cand, kl = entropy_kl_curve(counts)
    i_fast = int(cand[np.argmin(kl)])
    i_slow, kl_min = entropy_best_slow(counts)
    kl_at_fast = kl_slow(counts, i_fast)
    assert math.isclose(kl_at_fast, kl_min, rel_tol=RTOL, abs_tol=ATOL), (i_fast, i_slow, kl_at_fast, kl_min)
    assert math.isclose(kl[i_slow - 128], kl_min, rel_tol=RTOL, abs_tol=ATOL)
    if i_fast != i_slow:  # only a (near) tie may pick another candidate
        assert math.isclose(kl[i_fast - 128], kl[i_slow - 128], rel_tol=RTOL, abs_tol=ATOL)
    assert not np.isnan(kl).any()


def test_hand_computed_case():
    # 256 bins: 4 at bin 2, 1 at 254, 3 at 255. Only i = 255, 256 give a finite KL.
    c = np.zeros(256)
    c[2], c[254], c[255] = 4, 1, 3
    cand, kl = entropy_kl_curve(c)
    # i = 256: groups of two; p = [4, 1, 3]/8, q = [4, 2, 2]/8.
    assert math.isclose(kl[-1], (3 * math.log(3) - 4 * math.log(2)) / 8, rel_tol=1e-12)
    # i = 255: p = [4, 4]/8; Q's last group (252..254) has raw mass 1 -> q = [4, 1]/5.
    assert math.isclose(kl[-2], 0.5 * math.log(1.5625), rel_tol=1e-12)
    assert np.isinf(kl[:-2]).all()
    assert entropy_amax(c, 0.5) == 256.5 * 0.5


def test_single_outlier_at_the_last_bin_of_a_tiny_histogram():
    c = np.zeros(130)
    c[2], c[129] = 1, 1
    cand, kl = entropy_kl_curve(c)
    assert kl[-1] == 0.0 and np.isinf(kl[:-1]).all()
    assert entropy_amax(c, 1.0) == 130.5


@pytest.mark.parametrize("b", [0, 1, 126, 127, 128, 1000, 2046, 2047])
def test_all_mass_in_one_bin(b):
    c = np.zeros(2048, np.int64)
    c[b] = 17
    # KL is exactly 0 from i = b + 1 on and inf before: the first zero wins. Bin 0 alone
    # (exact zeros) carries no clipping information: 0.0, the caller falls back.
    assert entropy_amax(c, 1.0) == (0.0 if b == 0 else max(128, b + 1) + 0.5)
    assert entropy_amax(c, 1.0) == entropy_amax_slow(c, 1.0)


def test_zero_bin_takes_the_count_of_bin_one():
    """A ReLU output that is mostly exact zeros gets the threshold of its non-zero part."""
    rng = np.random.default_rng(5)
    x = np.abs(rng.normal(size=20000)) * 3
    x[rng.random(x.size) < 0.98] = 0.0  # 98% zeros, as after a ReLU
    h = Histogram().update(x)
    c = h.counts
    assert c[0] > 50 * c[1]
    adjusted = c.copy()
    adjusted[0] = c[1]
    assert entropy_amax(c, h.bin_width) == entropy_amax(adjusted, h.bin_width)
    assert entropy_amax(c, h.bin_width) > 0.6 * h.max_abs  # not pulled into the bulk of zeros


def test_degenerate_histograms():
    assert entropy_amax(np.zeros(2048), 1.0) == 0.0  # empty tensor
    assert entropy_amax(np.zeros(2048), 0.0) == 0.0
    h = Histogram().update(np.zeros(100, np.float32))  # all-zero tensor: width 0
    assert compute_amax(h, "entropy2") == 0.0
    assert compute_amax(Histogram(), "entropy2") == 0.0
    one = np.zeros(2048)
    one[5] = 1
    assert entropy_amax(one, 2.0) == 128.5 * 2.0
    with pytest.raises(ValueError):
        entropy_amax(np.zeros(64), 1.0)
    with pytest.raises(ValueError):
        entropy_amax(np.full(2048, -1.0), 1.0)
    with pytest.raises(ValueError):
        entropy_amax(np.ones(2048), float("nan"))


def _realistic(kind: str, rng: np.random.Generator) -> np.ndarray:
    n = 200_000
    x = {
        "relu": lambda: np.maximum(rng.standard_normal(n), 0),
        "gauss": lambda: rng.standard_normal(n),
        "laplace": lambda: rng.laplace(size=n),
        "uniform": lambda: rng.uniform(0, 1, n),
        "sparse": lambda: rng.standard_normal(n) * (rng.random(n) < 0.02),
    }[kind]()
    return Histogram().update(x.astype(np.float32)).counts


@pytest.mark.parametrize("kind", ["relu", "gauss", "laplace", "uniform", "sparse"])
def test_matches_slow_on_realistic_full_histograms(kind):
    assert_matches_slow(_realistic(kind, np.random.default_rng(hash(kind) % 2**32)))


def test_long_tail_with_single_outlier_at_last_bin():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.laplace(scale=0.01, size=100_000), [1.0]])
    c = Histogram().update(x).counts
    assert c[-1] == 1
    assert_matches_slow(c)
    assert entropy_amax(c, 1 / 2048) < 0.5  # the outlier is clipped


def test_matches_slow_on_seeded_random_shapes():
    rng = np.random.default_rng(11)
    c = rng.integers(0, 1000, 2048)
    c[rng.random(2048) < 0.7] = 0  # sparse, irregular
    assert_matches_slow(c)


# Hypothesis: smaller histograms (128..400 bins) keep the slow reference fast.
@st.composite
def histograms(draw):
    n = draw(st.integers(128, 400))
    kind = draw(st.sampled_from(["gauss", "laplace", "sparse", "uniform", "spikes"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([0.05, 0.2, 1.0]))
    if kind == "gauss":
        x = np.abs(rng.standard_normal(5000)) * scale
    elif kind == "laplace":
        x = np.abs(rng.laplace(size=5000)) * scale
    elif kind == "uniform":
        x = rng.uniform(0, 1, 5000)
    elif kind == "sparse":
        x = np.abs(rng.standard_normal(5000)) * scale * (rng.random(5000) < 0.05)
    else:
        c = np.zeros(n, np.int64)
        c[rng.integers(0, n, draw(st.integers(1, 6)))] = rng.integers(1, 50, 1)[0]
        return c
    idx = np.minimum((np.minimum(x, 1.0) * n).astype(int), n - 1)
    return np.bincount(idx, minlength=n)


@settings(max_examples=60, deadline=None)
@given(histograms())
def test_matches_slow_hypothesis(counts):
    assert_matches_slow(counts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=128, max_size=300))
def test_matches_slow_on_arbitrary_small_counts(counts):
    c = np.array(counts)
    if c.sum() == 0:
        assert entropy_amax(c, 1.0) == 0.0
    else:
        assert_matches_slow(c)


def test_minmax_and_percentile():
    h = Histogram().update(np.arange(1000, dtype=np.float64) / 1000.0)  # range 1, width 1/2048
    assert minmax_amax(h) == 0.999
    assert percentile_amax(h, 100.0) == 0.999  # capped at max_abs
    # 50%: the 500th value, 0.499, is in bin floor(0.499 * 2048) = 1021.
    assert percentile_amax(h, 50.0) == 1022 / 2048
    p = percentile_amax(h)  # 99.99%: the last value's bin, capped
    assert p == 0.999
    assert percentile_amax(Histogram(), 99.0) == 0.0
    assert percentile_amax(Histogram().update(np.zeros(5)), 99.0) == 0.0
    for bad in (0.0, -1.0, 100.5, float("nan")):
        with pytest.raises(ValueError):
            percentile_amax(h, bad)


def test_percentile_is_smallest_right_edge():
    h = Histogram().update(np.array([0.1] * 9 + [0.9]))  # range 1
    edge = (int(0.1 * 2048) + 1) / 2048
    assert percentile_amax(h, 90.0) == edge
    assert percentile_amax(h, 90.001) == 0.9


def test_registry_and_compute_amax():
    assert ALGORITHMS["entropy2"].trt_header_algo == "EntropyCalibration2"
    assert ALGORITHMS["minmax"].trt_header_algo == "MinMaxCalibration"
    assert ALGORITHMS["percentile"].trt_header_algo == "EntropyCalibration2"
    h = Histogram().update(np.random.default_rng(0).laplace(size=10_000))
    assert compute_amax(h, "minmax") == h.max_abs
    assert compute_amax(h, "entropy2") == entropy_amax(h.counts, h.bin_width)
    assert compute_amax(h, "percentile") == percentile_amax(h, 99.99)
    assert compute_amax(h, "percentile", percentile=99.0) == percentile_amax(h, 99.0)
    with pytest.raises(UserError, match="known: entropy2, minmax, percentile"):
        compute_amax(h, "kl")
    with pytest.raises(UserError, match="percentile"):
        compute_amax(h, "minmax", percentile=3)
