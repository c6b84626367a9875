"""The NumPy RoI-SPP reference (sppquant/ops/roi_spp/reference.py) against hand-computed
outputs, an independent membership-mask formulation, and ONNX Runtime's MaxRoiPool."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from sppquant.ops.roi_spp.reference import (
    requantize,
    roi_spp_output_width,
    roi_spp_reference,
    roi_spp_reference_int8,
    round_half_away,
    scaled_corner,
)


def grid(n: int, c: int, h: int, w: int) -> np.ndarray:
    """Distinct values: 1000*n + 100*c + 10*y + x (readable in failures)."""
    nn, cc, yy, xx = np.meshgrid(np.arange(n), np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    return (1000 * nn + 100 * cc + 10 * yy + xx).astype(np.float32)


# ---- hand-computed cases -----------------------------------------------------------------------

def test_whole_map_levels_1_2() -> None:
    f = grid(1, 1, 4, 4)
    out = roi_spp_reference(f, np.array([[0, 0, 0, 3, 3]]), [1, 2], 1.0)
    # level 1: max = 33; level 2 bins [0,2)x[0,2) -> 11, [0,2)x[2,4) -> 13, [2,4)x[0,2) -> 31, 33
    np.testing.assert_array_equal(out, [[33, 11, 13, 31, 33]])


def test_odd_region_overlapping_bins() -> None:
    # region 3x3 at (1,1), level 2: bins along an axis of 3 are [0,2) and [1,3) -> overlap by one
    f = grid(1, 1, 5, 5)
    out = roi_spp_reference(f, np.array([[0, 1, 1, 3, 3]]), [2], 1.0)
    # rows/cols absolute: bin0 = [1,3), bin1 = [2,4)
    np.testing.assert_array_equal(out, [[22, 23, 32, 33]])


def test_spatial_scale_rounds_half_away_from_zero() -> None:
    f = grid(1, 1, 6, 6)
    # scale 0.5: x1 = 3 -> 1.5 -> 2, y1 = 1 -> 0.5 -> 1, x2 = 7 -> 3.5 -> 4, y2 = 5 -> 2.5 -> 3
    out = roi_spp_reference(f, np.array([[0, 3, 1, 7, 5]]), [1], 0.5)
    np.testing.assert_array_equal(out, [[34]])  # rows 1..3, cols 2..4 -> max at (3, 4)
    assert scaled_corner(-1.0, 0.5) == -1 and scaled_corner(-3.0, 0.5) == -2  # -0.5 -> -1, -1.5 -> -2
    assert round_half_away(np.float32(0.49999997)) == 0  # float32 + 0.5 would round up to 1.0


def test_region_partly_outside_gives_zero_for_empty_bins() -> None:
    f = grid(1, 1, 4, 4) + 1.0  # all positive so that a 0 can only come from an empty bin
    # x: -2..1 -> roi_w 4, level 2 x-bins [-2,0) (empty after clipping) and [0,2)
    # y: 2..5 -> roi_h 4, level 2 y-bins [2,4) and [4,6) (empty)
    out = roi_spp_reference(f, np.array([[0, -2, 2, 1, 5]]), [2, 1], 1.0)
    np.testing.assert_array_equal(out, [[0, 32, 0, 0, 32]])


def test_region_fully_outside_is_all_zero() -> None:
    f = grid(1, 2, 4, 4) + 1.0
    out = roi_spp_reference(f, np.array([[0, 10, 10, 20, 20], [0, -9, -9, -5, -5]]), [1, 2], 1.0)
    np.testing.assert_array_equal(out, np.zeros((2, 10), np.float32))


def test_degenerate_regions() -> None:
    f = grid(1, 1, 5, 5)
    # x2 < x1: roi_w = max(x2-x1+1, 1) = 1 -> the single column x1; y: one row (y1 == y2)
    out = roi_spp_reference(f, np.array([[0, 3, 2, 1, 2]]), [1, 2], 1.0)
    # level 2 on a length-1 axis: both bins are [0,1) -> every bin is pixel (2, 3)
    np.testing.assert_array_equal(out, [[23, 23, 23, 23, 23]])


def test_level_finer_than_region() -> None:
    f = grid(1, 1, 4, 4)
    # region 2x2 at (0,0), level 4: bins [0,1),[0,1),[1,2),[1,2) along each axis
    out = roi_spp_reference(f, np.array([[0, 0, 0, 1, 1]]), [4], 1.0)
    want = [0, 0, 1, 1, 0, 0, 1, 1, 10, 10, 11, 11, 10, 10, 11, 11]
    np.testing.assert_array_equal(out, [want])


def test_batch_index_and_channel_layout() -> None:
    f = grid(3, 2, 3, 3)
    out = roi_spp_reference(f, np.array([[2, 0, 0, 2, 2], [1.7, 0, 0, 0, 0]]), [1, 2], 1.0)
    # level-major: [L1 c0, L1 c1, L2 c0 (4 bins), L2 c1 (4 bins)]
    row0 = [2022, 2122, 2011, 2012, 2021, 2022, 2111, 2112, 2121, 2122]
    row1 = [1000, 1100] + [1000] * 4 + [1100] * 4  # 1.7 truncates to image 1; one pixel region
    np.testing.assert_array_equal(out, [row0, row1])


def test_bin_edges_are_exact_integers_not_float() -> None:
    # roi_w = 57, level 7: last bin ends at ceil(7*57/7) = 57; Caffe's float bin size
    # (float32(57/7) * 7 = 57.000004) would give 58 and take in column 57, outside the region
    f = np.zeros((1, 1, 1, 60), np.float32)
    f[0, 0, 0, 57] = 100.0
    f[0, 0, 0, 56] = 1.0
    out = roi_spp_reference(f, np.array([[0, 0, 0, 56, 0]]), [7], 1.0)
    assert out[0, 6] == 1.0


@pytest.mark.parametrize("bad", [-1.0, 3.0, np.nan, np.inf, -0.5, 3.5])
def test_invalid_batch_index_gives_zero_row(bad: float) -> None:
    f = grid(3, 1, 3, 3) + 1.0
    out = roi_spp_reference(f, np.array([[bad, 0, 0, 2, 2], [0, 0, 0, 2, 2]]), [1], 1.0)
    np.testing.assert_array_equal(out, [[0], [23]])


def test_non_finite_coordinate_gives_zero_row() -> None:
    f = grid(1, 1, 3, 3) + 1.0
    out = roi_spp_reference(f, np.array([[0, np.nan, 0, 2, 2], [0, 0, 0, np.inf, 2], [0, 0, 0, 2, 2]]), [1], 1.0)
    np.testing.assert_array_equal(out, [[0], [0], [23]])


def test_huge_coordinates_clamp_without_overflow() -> None:
    f = grid(1, 1, 4, 4)
    out = roi_spp_reference(f, np.array([[0, -3e38, -3e38, 3e38, 3e38]]), [1, 2], 1e10)
    # region [-2^30, 2^30]: the map lies inside level-2 bins 0 ([-2^30, 0)... -> [0,1) clipped) and 1
    assert out[0, 0] == 33 and out.shape == (1, 5)


def test_zero_rois() -> None:
    f = grid(2, 3, 4, 4)
    out = roi_spp_reference(f, np.zeros((0, 5), np.float32), [1, 2], 1.0)
    assert out.shape == (0, roi_spp_output_width(3, [1, 2])) == (0, 15)
    assert out.dtype == np.float32


def test_nan_propagates_and_dtype_kept() -> None:
    f = grid(1, 1, 4, 4).astype(np.float16)
    f[0, 0, 0, 0] = np.nan
    out = roi_spp_reference(f, np.array([[0, 0, 0, 3, 3]]), [1, 2], 1.0)
    assert out.dtype == np.float16
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 1]) and out[0, 2] == 13


def test_int8_requantization() -> None:
    f = np.array([[[[-128, 5], [127, -3]]]], dtype=np.int8)
    rois = np.array([[0, 0, 0, 1, 1], [0, 5, 5, 9, 9]], np.float32)  # second: fully outside -> 0
    same = roi_spp_reference_int8(f, rois, [1, 2], 1.0, 0.1, 0.1)
    np.testing.assert_array_equal(same, [[127, -128, 5, 127, -3], [0] * 5])
    # ratio 0.1/0.25 = 0.4: 127*0.4 = 50.8 -> 51; 5*0.4 = 2 -> 2; -128*0.4 = -51.2 -> -51; -3*.4 = -1.2 -> -1
    half = roi_spp_reference_int8(f, rois, [1, 2], 1.0, 0.1, 0.25)
    np.testing.assert_array_equal(half, [[51, -51, 2, 51, -1], [0] * 5])
    # ratio 4: saturates; 0.5 ties round to even
    np.testing.assert_array_equal(requantize(np.array([100, -100, 1, 0]), 1.0, 0.25), [127, -128, 4, 0])
    np.testing.assert_array_equal(requantize(np.array([1, 3, -1, 5]), 1.0, 2.0), [0, 2, -0, 2])


def test_rejects_bad_arguments() -> None:
    f = grid(1, 1, 2, 2)
    with pytest.raises(ValueError):
        roi_spp_reference(f, np.zeros((1, 5)), [0], 1.0)
    with pytest.raises(ValueError):
        roi_spp_reference(f, np.zeros((1, 5)), [1], 0.0)
    with pytest.raises(ValueError):
        roi_spp_reference(f, np.zeros((1, 5)), [1], 1.0, pooling="avg")


# ---- independent formulation: per-pixel membership masks ----------------------------------------

def corner_decimal(v: float, scale: float) -> int:
    """round-half-away of the float32 product, via Decimal (independent of the reference's rounding)."""
    p = np.float32(v) * np.float32(scale)
    return int(Decimal(float(p)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def masks_reference(f: np.ndarray, rois: np.ndarray, levels: list[int], scale: float) -> np.ndarray:
    """Pixel t = y - y_start belongs to bin i of n over length h iff n*(t+1) > i*h and n*t < (i+1)*h
    (the floor/ceil bounds rewritten as integer comparisons), and 0 <= y < H."""
    n_img, c, h, w = f.shape
    rows = []
    for roi in rois:
        b = roi[0]
        if not (np.isfinite(roi).all() and 0 <= b < n_img):
            rows.append(np.zeros(roi_spp_output_width(c, levels), f.dtype))
            continue
        x1, y1, x2, y2 = (corner_decimal(v, scale) for v in roi[1:])
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        ty = np.arange(h) - y1
        tx = np.arange(w) - x1
        parts = []
        for n in levels:
            i = np.arange(n)[:, None]
            my = (n * (ty[None, :] + 1) > i * rh) & (n * ty[None, :] < (i + 1) * rh)  # (n, H)
            mx = (n * (tx[None, :] + 1) > i * rw) & (n * tx[None, :] < (i + 1) * rw)  # (n, W)
            m = my[:, None, :, None] & mx[None, :, None, :]  # (n, n, H, W)
            img = f[int(b)].astype(np.float64)  # (C, H, W)
            vals = np.where(m[None], img[:, None, None], -np.inf)  # (C, n, n, H, W)
            with np.errstate(invalid="ignore"):
                mx_ = vals.max(axis=(3, 4))
            mx_[~m.any(axis=(2, 3))[None].repeat(c, 0)] = 0.0
            parts.append(mx_.reshape(c * n * n))
        rows.append(np.concatenate(parts).astype(f.dtype))
    return np.stack(rows) if rows else np.zeros((0, roi_spp_output_width(c, levels)), f.dtype)


def random_rois(rng: np.random.Generator, r: int, n_img: int, h: int, w: int, stride: float) -> np.ndarray:
    """Boxes in input pixels, many partly or fully outside the map, some degenerate, some invalid."""
    rois = np.empty((r, 5), np.float32)
    rois[:, 0] = rng.integers(0, n_img, r)
    span_x, span_y = w * stride, h * stride
    x1 = rng.uniform(-0.3 * span_x, 1.1 * span_x, r)
    y1 = rng.uniform(-0.3 * span_y, 1.1 * span_y, r)
    rois[:, 1], rois[:, 2] = x1, y1
    rois[:, 3] = x1 + rng.uniform(-0.1, 0.8, r) * span_x  # some x2 < x1 (degenerate)
    rois[:, 4] = y1 + rng.uniform(-0.1, 0.8, r) * span_y
    whole = rng.random(r) < 0.2
    rois[whole, 1:] = np.round(rois[whole, 1:])
    k = rng.random(r)
    rois[k < 0.05, 0] = -1  # padding rows
    rois[(k >= 0.05) & (k < 0.08), 0] = n_img
    return rois


@pytest.mark.parametrize("seed", range(12))
def test_reference_matches_membership_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_img, c = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    h, w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
    levels = [list(map(int, rng.integers(1, 8, size=rng.integers(1, 4)))), [6, 3, 2, 1], [5, 3, 1]][seed % 3]
    stride = float(rng.choice([1.0, 4.0, 16.0]))
    f = (rng.standard_normal((n_img, c, h, w)) * 3).astype(np.float32)
    if seed % 4 == 0:
        f = np.round(f)  # ties
    rois = random_rois(rng, 40, n_img, h, w, stride)
    # corners that land exactly on .5 after scaling
    rois[:4, 1:] = (np.arange(16).reshape(4, 4) + 0.5) * stride
    got = roi_spp_reference(f, rois, levels, 1.0 / stride)
    want = masks_reference(f, rois, levels, 1.0 / stride)
    np.testing.assert_array_equal(got, want)


def test_reference_matches_masks_int8_and_fp16() -> None:
    rng = np.random.default_rng(99)
    for dtype in (np.int8, np.float16):
        f = rng.integers(-128, 128, (2, 3, 9, 11)).astype(dtype)
        rois = random_rois(rng, 30, 2, 9, 11, 8.0)
        np.testing.assert_array_equal(roi_spp_reference(f, rois, [4, 2, 1], 0.125),
                                      masks_reference(f, rois, [4, 2, 1], 0.125))


# ---- ONNX Runtime's MaxRoiPool (float bin sizes; exact for power-of-two levels) ------------------

def test_matches_onnxruntime_max_roi_pool() -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    rng = np.random.default_rng(7)
    f = rng.standard_normal((2, 3, 12, 17)).astype(np.float32)
    rois = random_rois(rng, 50, 2, 12, 17, 16.0)
    ok = np.isfinite(rois).all(1) & (rois[:, 0] >= 0) & (rois[:, 0] < 2)
    rois = rois[ok]  # ONNX Runtime has no rule for invalid batch indices
    for n in (1, 2, 4, 8):  # i*h/n exact in float32 for power-of-two n: ORT's float bins equal ours
        node = helper.make_node("MaxRoiPool", ["x", "r"], ["y"], pooled_shape=[n, n], spatial_scale=1 / 16)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                                                helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, {"x": f, "r": rois})[0].reshape(len(rois), -1)
        np.testing.assert_array_equal(roi_spp_reference(f, rois, [n], 1 / 16), want)
