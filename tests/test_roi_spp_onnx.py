"""RoI SPP node helpers and the ONNX Runtime rewrite, checked bit for bit against the rule.

`_slow_reference` is the rule written out loop by loop from the op's definition (Python
ints for every bin edge); main's `sppquant.ops.roi_spp.reference` is compared too when present.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from sppquant.ops.roi_spp.onnx import (
    ROI_SPP_DOMAIN,
    ROI_SPP_OP_TYPE,
    float_bin_mismatches,
    make_roi_spp_node,
    rewrite_roi_spp_for_onnxruntime,
    roi_spp_as_standard_ops,
    roi_spp_node_attributes,
)


def _round_half_away(v: np.float32) -> int:
    f = np.floor(v)
    frac = v - f
    return int(f) + int(frac > 0.5 or (frac == 0.5 and v >= 0))


def _slow_reference(x: np.ndarray, rois: np.ndarray, levels: tuple[int, ...], scale: float) -> np.ndarray:
    _, c, h, w = x.shape
    rows = []
    for roi in rois:
        if not (0 <= roi[0] < len(x)) or not np.all(np.isfinite(roi[1:])):
            rows.append(np.zeros(c * sum(n * n for n in levels), np.float32))  # invalid RoI: zeros
            continue
        b = int(roi[0])
        x1, y1, x2, y2 = (_round_half_away(np.float32(roi[k]) * np.float32(scale)) for k in (1, 2, 3, 4))
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        parts = []
        for n in levels:
            pooled = np.zeros((c, n, n), np.float32)
            for i in range(n):
                ys = min(max(y1 + (i * rh) // n, 0), h)
                ye = min(max(y1 - ((-(i + 1) * rh) // n), 0), h)
                for j in range(n):
                    xs = min(max(x1 + (j * rw) // n, 0), w)
                    xe = min(max(x1 - ((-(j + 1) * rw) // n), 0), w)
                    if ye > ys and xe > xs:
                        pooled[:, i, j] = x[b, :, ys:ye, xs:xe].max(axis=(1, 2))  # np.max propagates NaN
            parts.append(pooled.reshape(-1))
        rows.append(np.concatenate(parts))
    return np.asarray(rows, np.float32).reshape(len(rois), c * sum(n * n for n in levels))


def _session(levels: tuple[int, ...], scale: float, opset: int = 17) -> ort.InferenceSession:
    node = make_roi_spp_node("features", "rois", "pooled", levels, scale)
    graph = helper.make_graph(
        [node], "roi_spp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", "C", "H", "W"]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["R", 5])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["R", "D"])])
    model = helper.make_model(graph, ir_version=8,
                              opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(ROI_SPP_DOMAIN, 1)])
    rewritten = rewrite_roi_spp_for_onnxruntime(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert not any(n.domain == ROI_SPP_DOMAIN for n in rewritten.graph.node)
    return ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])


def _random_case(rng: np.random.Generator, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Odd map sizes, batch > 1, regions inside / straddling / outside, degenerate, rounding ties, R = 0."""
    n, c = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    h, w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    if rng.uniform() < 0.2:  # special values: -inf-only bins, NaN, +inf, signed zeros not mixed
        mask = rng.uniform(size=x.shape)
        x[mask < 0.3] = -np.inf
        x[(mask > 0.97)] = np.nan
        x[(mask > 0.94) & (mask <= 0.97)] = np.inf
    r = int(rng.choice([0, 1, 2, 5, 9]))
    span = max(h, w) / scale
    corners = rng.uniform(-0.6 * span, 1.6 * span, size=(r, 4))
    kind = rng.uniform(size=r)
    corners[kind < 0.25] = np.round(corners[kind < 0.25] * scale * 2) / 2 / scale  # x*scale = k/2: ties
    corners[(kind >= 0.25) & (kind < 0.35), 2:] = corners[(kind >= 0.25) & (kind < 0.35), :2] - 3  # x2 < x1
    batch = rng.integers(0, n, size=(r, 1))
    return x, np.concatenate([batch, corners], axis=1).astype(np.float32)


CONFIGS = [((1, 2, 4), 0.25), ((1, 2, 3, 6), 1.0), ((1,), 0.5), ((2, 5, 7), 1.0 / 3.0), ((4, 3), 0.125), ((7,), 1.0)]


@pytest.mark.parametrize("levels,scale", CONFIGS)
def test_rewrite_bit_exact_on_random_cases(levels: tuple[int, ...], scale: float) -> None:
    sess = _session(levels, scale)
    rng = np.random.default_rng([14, len(levels), int(1000 * scale)])
    checked = 0
    for _ in range(500):
        x, rois = _random_case(rng, scale)
        got = sess.run(None, {"features": x, "rois": rois})[0]
        want = _slow_reference(x, rois, levels, scale)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # NaN == NaN here, and -0 == +0
        checked += len(rois)
    assert checked > 1000  # 500 cases, thousands of regions per configuration


def test_rewrite_where_maxroipool_float_bins_are_wrong() -> None:
    """Level 7, region height 57: MaxRoiPool's float edge ends the last bin at 58; the rewrite at 57."""
    assert (7, 57, 6, "end") in float_bin_mismatches([7], 64)
    x = np.zeros((1, 1, 60, 3), np.float32)
    x[0, 0, 57, :] = 5.0  # just below the region
    rois = np.array([[0, 0, 0, 2, 56]], np.float32)
    standard = helper.make_graph(
        [helper.make_node("MaxRoiPool", ["features", "rois"], ["y"], pooled_shape=[7, 1], spatial_scale=1.0)], "g",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    plain = ort.InferenceSession(helper.make_model(standard, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
                                 .SerializeToString(), providers=["CPUExecutionProvider"])
    assert plain.run(None, {"features": x, "rois": rois})[0].ravel()[6] == 5.0  # ORT's float rule leaks row 57
    got = _session((7,), 1.0).run(None, {"features": x, "rois": rois})[0]
    np.testing.assert_array_equal(got, _slow_reference(x, rois, (7,), 1.0))
    assert got.reshape(7, 7).max() == 0.0


def test_float_bin_mismatches_match_onnxruntime() -> None:
    """The emulation of ORT's float bin edges predicts exactly where MaxRoiPool disagrees with the integer rule."""
    predicted = {(n, h) for n, h, _, _ in float_bin_mismatches(range(1, 9), 130)}
    found = set()
    for n in range(1, 9):
        graph = helper.make_graph(
            [helper.make_node("MaxRoiPool", ["f", "r"], ["y"], pooled_shape=[n, 1], spatial_scale=1.0)], "g",
            [helper.make_tensor_value_info("f", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("r", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        sess = ort.InferenceSession(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
                                    .SerializeToString(), providers=["CPUExecutionProvider"])
        for h in range(1, 131):
            x = np.arange(h + 2, dtype=np.float32).reshape(1, 1, h + 2, 1)  # increasing: max = last row of the bin
            y = sess.run(None, {"f": x, "r": np.array([[0, 0, 1, 0, h]], np.float32)})[0].ravel()
            exact = [1 + -((-(i + 1) * h) // n) - 1 for i in range(n)]
            if list(y.astype(int)) != exact:
                found.add((n, h))
    assert found == predicted and (7, 57) in found


def test_special_values_in_one_region() -> None:
    x = np.array([[[[-np.inf, -np.inf, 1.0, np.nan], [-np.inf, -np.inf, -2.0, 3.0]]]], np.float32)  # 1x1x2x4
    rois = np.array([[0, 0, 0, 3, 1]], np.float32)
    got = _session((2,), 1.0).run(None, {"features": x, "rois": rois})[0].ravel()
    np.testing.assert_array_equal(got, [-np.inf, np.nan, -np.inf, 3.0])  # bins: cols 0-1 / 2-3, rows 0 / 1


def test_empty_rois_and_batch_index() -> None:
    sess = _session((1, 2), 0.5)
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 7)).astype(np.float32)
    assert sess.run(None, {"features": x, "rois": np.zeros((0, 5), np.float32)})[0].shape == (0, 10)
    rois = np.array([[2, 0, 0, 13, 9]], np.float32)  # whole map of image 2
    got = sess.run(None, {"features": x, "rois": rois})[0]
    np.testing.assert_array_equal(got[0, :2], x[2].max(axis=(1, 2)))


def test_fully_outside_region_is_zero() -> None:
    x = np.full((1, 1, 4, 4), 7.0, np.float32)
    rois = np.array([[0, 10, 10, 20, 20], [0, -9, -9, -5, -5]], np.float32)
    np.testing.assert_array_equal(_session((1, 2), 1.0).run(None, {"features": x, "rois": rois})[0], 0.0)


def test_node_attributes_round_trip_and_validation() -> None:
    node = make_roi_spp_node("f", "r", "y", [1, 2, 4], 0.25, name="roi")
    assert (node.op_type, node.domain, node.name) == (ROI_SPP_OP_TYPE, ROI_SPP_DOMAIN, "roi")
    assert roi_spp_node_attributes(node) == {"levels": (1, 2, 4), "spatial_scale": 0.25, "pooling": "max"}
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b"sppquant"
    for bad in (dict(levels=[]), dict(levels=[0]), dict(spatial_scale=0.0), dict(pooling="avg")):
        kwargs = dict(levels=[1], spatial_scale=1.0, pooling="max") | bad
        with pytest.raises(ValueError):
            make_roi_spp_node("f", "r", "y", **kwargs)
    broken = helper.make_node(ROI_SPP_OP_TYPE, ["f", "r"], ["y"], name="nolevels", domain=ROI_SPP_DOMAIN,
                              spatial_scale=1.0)
    with pytest.raises(ValueError, match="nolevels.*levels"):
        roi_spp_node_attributes(broken)
    with pytest.raises(ValueError, match="opset"):
        roi_spp_as_standard_ops(node, 12)


def test_matches_main_reference_when_present() -> None:
    """The rewrite in ONNX Runtime against main's NumPy reference, NaN and invalid RoIs included."""
    reference = pytest.importorskip("sppquant.ops.roi_spp.reference", reason="main's NumPy reference not merged yet")
    for levels, scale in CONFIGS:
        sess = _session(levels, scale)
        rng = np.random.default_rng([7, len(levels)])
        for _ in range(100):
            x, rois = _random_case(rng, scale)
            np.testing.assert_array_equal(sess.run(None, {"features": x, "rois": rois})[0],
                                          reference.roi_spp_reference(x, rois, levels, scale))
