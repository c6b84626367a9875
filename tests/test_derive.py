"""Derived histograms (Pad with zeros, Concat, Reshape-like) equal binning the tensors themselves."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sppquant.backends.onnxruntime import OrtRunner, activation_names
from sppquant.calibration import Histogram
from sppquant.calibration.collect import ActivationCollector, ThreadedFeed
from sppquant.calibration.derive import Derivation, derivations, derive


def graph() -> onnx.ModelProto:
    """x -> Relu -> (zero Pad, Pad value 0 const, Pad value 1, reflect Pad, cropping Pad), Concat, Reshape, Transpose."""
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    f32 = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    inits = [i64("pads", [0, 0, 1, 0, 0, 0, 3, 0]), i64("pads2", [0, 0, 1, 2, 0, 0, 3, 0]), i64("crop", [0, 0, -1, 0, 0, 0, 0, 0]), f32("zero", 0.0),
             f32("one", 1.0), i64("shape", [0, -1])]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Pad", ["r", "pads"], ["pad0"]),
        helper.make_node("Pad", ["x", "pads2", "zero"], ["pad0c"]),
        helper.make_node("Pad", ["r", "pads2", "one"], ["pad1"]),
        helper.make_node("Pad", ["x", "pads2"], ["padr"], mode="reflect"),
        helper.make_node("Pad", ["x", "crop"], ["padcrop"]),
        helper.make_node("Concat", ["r", "x", "pad0"], ["cat"], axis=2),
        helper.make_node("Reshape", ["cat", "shape"], ["flat"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 1, 3, 2]),
        helper.make_node("Concat", ["flat", "flat"], ["cat2"], axis=1),
        # pads computed from constants, as torch exports TF-SAME padding (folded), and a cropping one (not derived)
        helper.make_node("Constant", [], ["pf"], value=numpy_helper.from_array(np.array([0, 0, 2, 1, 0, 0, 0, 1],
                                                                                          np.float32))),
        helper.make_node("Cast", ["pf"], ["pads_folded"], to=TensorProto.INT64),
        helper.make_node("Pad", ["r", "pads_folded"], ["padf"]),
        helper.make_node("Neg", ["pf"], ["nf"]),
        helper.make_node("Relu", ["nf"], ["nf0"]),  # all zeros: still not >= 0 after Sub below
        helper.make_node("Sub", ["nf0", "pf"], ["negf"]),
        helper.make_node("Cast", ["negf"], ["pads_neg"], to=TensorProto.INT64),
        helper.make_node("Pad", ["x", "pads_neg"], ["padneg"]),
    ]
    outs = ["pad0c", "pad1", "padr", "padcrop", "xt", "cat2", "padf", "padneg"]
    g = helper.make_graph(nodes, "derive", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 6])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_rules_chosen_from_the_graph() -> None:
    model = graph()
    rules = derivations(model, activation_names(model))
    # not: pad value 1, reflect, cropping (constant or folded)
    assert set(rules) == {"pad0", "pad0c", "cat", "flat", "xt", "cat2", "padf"}
    assert rules["cat"] == Derivation("Concat", ("r", "x", "pad0")) and rules["cat2"].sources == ("flat", "flat")


@pytest.mark.parametrize("threads", [1, 3])
def test_derived_histograms_equal_binned_ones(threads: int) -> None:
    model = graph()
    names = activation_names(model)
    runner = OrtRunner(model, extra_outputs=names, threads=1)
    rng = np.random.default_rng(0)
    plain, fast = ActivationCollector(names), ActivationCollector(names, derivations(model, names))
    with ThreadedFeed(fast, threads) as feed:
        for scale in (0.5, 30.0, 2.0, 0.0):  # the range grows; an all-zero batch last
            x = (rng.standard_normal((3, 2, 5, 6)) * scale).astype(np.float32)
            x[0, 0, 0, :2] = [np.nan, 4.0] if scale == 2.0 else x[0, 0, 0, :2]
            acts = {"x": x, **runner.run({"x": x}, [n for n in names if n != "x"])}
            plain.observe_all(acts)
            feed.submit(acts)
    fast.finish()
    assert fast.histograms == plain.histograms
    assert fast.histograms["pad0"].counts[0] > plain.histograms["r"].counts[0]  # the zeros were added


def test_a_rule_that_does_not_hold_stops_the_run() -> None:
    hists = {"a": Histogram().update(np.ones(4)), "b": Histogram()}
    with pytest.raises(RuntimeError, match="does not hold"):
        derive(hists, {"b": Derivation("Reshape", ("a",))}, {"b": 5})
    with pytest.raises(RuntimeError, match="does not hold"):
        derive(hists, {"b": Derivation("Pad", ("a",))}, {"b": 3})
    derive(hists, {"b": Derivation("Pad", ("a",))}, {"b": 6})
    assert hists["b"].counts[0] == 2 and hists["b"].count == 6
