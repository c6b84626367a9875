"""SPP semantics: the NumPy reference, and the ONNX Runtime rewrite against it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from sppquant.ops import rewrite_for_onnxruntime
from sppquant.ops.spp.onnx import SPP_DOMAIN, make_spp_node, spp_node_attributes
from sppquant.ops.spp.reference import bin_edges, spp_output_width, spp_reference


def test_bin_edges_hand_computed() -> None:
    assert bin_edges(13, 6) == [(0, 3), (2, 5), (4, 7), (6, 9), (8, 11), (10, 13)]
    assert bin_edges(2, 4) == [(0, 1), (0, 1), (1, 2), (1, 2)]  # a < n: never empty
    assert bin_edges(1, 3) == [(0, 1)] * 3


@pytest.mark.parametrize("a", range(1, 40))
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 13])
def test_bins_cover_without_gaps_and_overlap_at_most_one(a: int, n: int) -> None:
    edges = bin_edges(a, n)
    assert edges[0][0] == 0 and edges[-1][1] == a
    for (s0, e0), (s1, _e1) in zip(edges, edges[1:]):
        assert e0 > s0 and s1 <= e0 <= s1 + 1 and s1 >= s0


def test_reference_layout_hand_computed() -> None:
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(1, 2, 4, 4)
    y = spp_reference(x, [1, 2])
    assert y.shape == (1, spp_output_width(2, [1, 2])) == (1, 10)
    # level 1: per-channel max; level 2: channel 0's four quadrant maxima, then channel 1's.
    np.testing.assert_array_equal(y[0], [15, 31, 5, 7, 13, 15, 21, 23, 29, 31])


def test_reference_nan_propagates_and_avg() -> None:
    x = np.ones((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = np.nan
    y = spp_reference(x, [2])
    assert np.isnan(y[0, 0]) and np.all(y[0, 1:] == 1)
    np.testing.assert_allclose(spp_reference(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), [1], "avg"), [[7.5]])


def spp_model(levels, pooling="max", opset=17) -> onnx.ModelProto:
    node = make_spp_node("x", "y", levels, pooling)
    graph = helper.make_graph([node], "spp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "F"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(SPP_DOMAIN, 1)],
                             ir_version=8)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    rewritten = rewrite_for_onnxruntime(model)
    onnx.checker.check_model(rewritten)
    assert all(n.domain != SPP_DOMAIN for n in rewritten.graph.node)
    assert rewritten.graph.output[0].name == "y"
    return ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])


def test_node_helper_attributes() -> None:
    node = make_spp_node("a", "b", [6, 3, 2, 1], "avg")
    assert node.op_type == "SpatialPyramidPooling" and node.domain == "sppquant"
    assert spp_node_attributes(node) == ((6, 3, 2, 1), "avg")
    with pytest.raises(ValueError):
        make_spp_node("a", "b", [0, 2])


@pytest.mark.parametrize("levels, opset", [((1, 2, 4), 17), ((6, 3, 2, 1), 18), ((14, 5), 17), ((3,), 13)])
def test_rewrite_equals_reference_on_random_shapes(levels, opset) -> None:
    sess = session(spp_model(levels, opset=opset))
    rng = np.random.default_rng(sum(levels) * 100 + opset)
    shapes = [(1, 1, 1, 1), (2, 3, 1, 7), (1, 2, 3, 2), (3, 1, 2, 50)]  # 1x1 maps, H or W < level
    shapes += [tuple(int(v) for v in (rng.integers(1, 5), rng.integers(1, 6), rng.integers(1, 64), rng.integers(1, 64)))
               for _ in range(150)]
    for shape in shapes:
        # small integer values give many ties inside bins
        x = rng.integers(-4, 4, shape).astype(np.float32) if rng.random() < 0.5 else rng.normal(size=shape).astype(np.float32)
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], spp_reference(x, levels), err_msg=str(shape))


def test_rewrite_propagates_nan_and_supports_avg() -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 9, 11)).astype(np.float32)
    x[1, 2, 4, 4] = np.nan
    got = session(spp_model((1, 2, 4))).run(None, {"x": x})[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(spp_reference(x, (1, 2, 4))))
    np.testing.assert_array_equal(got, spp_reference(x, (1, 2, 4)))  # NaN == NaN for assert_array_equal
    avg = session(spp_model((1, 3), "avg")).run(None, {"x": x})[0]
    np.testing.assert_allclose(avg, spp_reference(x, (1, 3), "avg"), rtol=1e-5, atol=1e-6)
