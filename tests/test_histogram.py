"""Histogram: exact binning, order independence, exact merges, edge cases, serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sppquant.calibration import NUM_BINS, Histogram


def binned_at(values: np.ndarray, rng: float) -> np.ndarray:
    """Bin all values at one range, obviously (float64, Python-level floor)."""
    a = np.abs(values.astype(np.float64).ravel())
    a = a[~np.isnan(a)]
    idx = np.minimum(np.floor(a / rng * NUM_BINS).astype(np.int64), NUM_BINS - 1) if rng else np.zeros(a.size, int)
    return np.bincount(idx, minlength=NUM_BINS)


def test_range_is_power_of_two_and_exact_at_powers():
    assert Histogram().update(np.array([0.3], np.float32)).range == 0.5
    assert Histogram().update(np.array([0.5], np.float32)).range == 0.5
    assert Histogram().update(np.array([-3.0])).range == 4.0
    assert Histogram().update(np.array([1000.0])).range == 1024.0
    h = Histogram().update(np.array([1.0, 0.999]))
    assert h.range == 1.0 and h.bin_width == 1.0 / 2048
    assert h.max_abs == 1.0


def test_top_edge_goes_to_last_bin_and_moves_correctly_on_growth():
    h = Histogram().update(np.array([1.0, -1.0, 0.25]))
    assert h.counts[-1] == 2 and h.counts[512] == 1
    h.update(np.array([3.0]))  # range 4: 1.0 -> bin 512, 0.25 -> bin 128, 3.0 -> bin 1536
    expect = np.zeros(NUM_BINS, np.int64)
    expect[[512, 128, 1536]] = [2, 1, 1]
    assert np.array_equal(h.counts, expect)
    assert np.array_equal(h.counts, binned_at(np.array([1.0, -1.0, 0.25, 3.0]), 4.0))


def test_zeros_nan_and_counts():
    h = Histogram().update(np.zeros((2, 3), np.float32))
    assert h.range == 0.0 and h.bin_width == 0.0 and h.counts[0] == 6 and h.count == 6
    h.update(np.array([np.nan, 0.75, np.nan, 0.0]))
    assert h.range == 1.0 and h.counts[0] == 7 and h.counts[1536] == 1
    assert h.nan_count == 2 and h.count == 8 and h.max_abs == 0.75
    h.update(np.array([np.nan]))
    assert h.nan_count == 3 and h.count == 8
    h.update(np.array([], np.float32))
    assert h.count == 8


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_raises_with_clear_message(bad):
    h = Histogram().update(np.array([1.0]))
    with pytest.raises(ValueError, match="inf"):
        h.update(np.array([0.5, bad], np.float32))
    assert h.count == 1  # unchanged


def test_dtypes_and_shapes():
    vals = np.array([[0.1, -2.5], [3.0, 0.0]])
    ref = Histogram().update(vals)
    for dt in (np.float16, np.float32):
        h = Histogram().update(vals.astype(dt))
        assert np.array_equal(h.counts, binned_at(vals.astype(dt), h.range))
    assert np.array_equal(ref.counts, binned_at(vals, 4.0))
    assert np.array_equal(Histogram().update(np.array([3, -1, 0])).counts, binned_at(np.array([3.0, 1, 0]), 4.0))
    with pytest.raises(TypeError):
        Histogram().update(np.array([1j]))


def test_tiny_and_subnormal_ranges_are_exact():
    for vals in (np.array([1e-40, 3e-41], np.float32), np.array([5e-324, 1e-320]), np.array([1e-30, 2e-31])):
        h = Histogram().update(vals)
        assert h.range >= h.max_abs > 0
        assert np.array_equal(h.counts, binned_at(vals, h.range))


def test_huge_float32_values():
    vals = np.array([3.4e38, 1.0], np.float32)
    h = Histogram().update(vals)
    assert h.range == 2.0**128
    assert np.array_equal(h.counts, binned_at(vals, h.range))


float_arrays = st.lists(
    st.one_of(
        st.floats(min_value=-1e6, max_value=1e6, width=32),
        st.sampled_from([0.0, np.nan, 1.0, -0.5, 2.0**-20, 4096.0]),  # zeros, NaNs, top edges
    ),
    min_size=0,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(float_arrays, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_streaming_equals_binning_at_final_range_in_any_order(batches, rnd):
    arrays = [np.array(b, dtype=np.float32) for b in batches]
    h = Histogram()
    for a in arrays:
        h.update(a)
    allv = np.concatenate(arrays)
    assert np.array_equal(h.counts, binned_at(allv, h.range))
    assert h.count + h.nan_count == allv.size
    shuffled = list(arrays)
    rnd.shuffle(shuffled)
    h2 = Histogram()
    for a in shuffled:
        h2.update(a)
    assert h2 == h
    # sharded: merge of per-batch histograms equals the streamed one
    merged = Histogram()
    for a in shuffled:
        merged = merged + Histogram().update(a)
    assert merged == h


def test_random_large_streams_order_independent():
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal(10_000).astype(np.float32) * s for s in (0.1, 5.0, 1.0, 40.0, 0.01)]
    fwd, rev = Histogram(), Histogram()
    for b in batches:
        fwd.update(b)
    for b in reversed(batches):
        rev.update(b)
    assert fwd == rev
    assert fwd.max_abs == max(float(np.abs(b).max()) for b in batches)
    assert np.array_equal(fwd.counts, binned_at(np.concatenate(batches), fwd.range))
    assert (fwd.merge(Histogram())) == fwd and (Histogram() + fwd) == fwd


def test_to_dict_round_trip_is_lossless_and_json_ready():
    h = Histogram().update(np.array([1.0, 0.3, np.nan, 0.0], np.float32))  # top-edge value kept apart
    d = json.loads(json.dumps(h.to_dict()))
    back = Histogram.from_dict(d)
    assert back == h
    back.update(np.array([3.0]))
    h.update(np.array([3.0]))
    assert back == h
    assert Histogram.from_dict(Histogram().to_dict()) == Histogram()
    bad = dict(d, range=0.3)
    with pytest.raises(ValueError):
        Histogram.from_dict(bad)


def test_summary():
    s = Histogram().update(np.array([0.0, 0.5, -0.75, np.nan])).to_summary()
    assert s["range"] == 1.0 and s["max_abs"] == 0.75 and s["count"] == 3 and s["nan_count"] == 1
    assert s["nonzero_bins"] == 3 and s["last_nonzero_bin"] == 1536 and s["zero_bin_count"] == 1
    assert math.isclose(s["bin_width"], 1 / 2048)
