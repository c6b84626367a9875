"""`calibration.input_layer`: the input side of the network (the image up to the first weighted layers) and
the Q/DQ models that leave it out of INT8 by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sppquant.config import load_config
from sppquant.errors import ConfigError
from sppquant.model import input_side_tensors
from sppquant.quantize.qdq import build_qdq_model
from tests.conftest import write_tiny_spp_model


def _front_model() -> onnx.ModelProto:
    """image -> Sub(mean) -> Pad -> conv1 -> Relu -> Reshape(shape from the image) -> Gemm; boxes (an input)
    -> Mul with a conv feature (reads both sides: not input side); Shape(image) is int64, not a float tensor."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.full((1, 3, 1, 1), 0.5, np.float32), "mean"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(5, 4 * 8 * 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([0], np.int64), "i0")]
    nodes = [helper.make_node("Sub", ["image", "mean"], ["centred"]),
             helper.make_node("Pad", ["centred", "pads"], ["padded"]),
             helper.make_node("Conv", ["padded", "w1"], ["conv1"]),
             helper.make_node("Relu", ["conv1"], ["relu1"]),
             helper.make_node("Shape", ["image"], ["shape"]),
             helper.make_node("Gather", ["shape", "i0"], ["n"]),
             helper.make_node("Concat", ["n", "n"], ["flat_shape"], axis=0),
             helper.make_node("Reshape", ["relu1", "flat_shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w2"], ["logits"], transB=1),
             helper.make_node("ReduceMax", ["relu1"], ["peak"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["boxes", "peak"], ["scaled_boxes"])]
    graph = helper.make_graph(
        nodes, "front", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 8, 8]),
                         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("scaled_boxes", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_input_side_is_the_image_up_to_the_first_weighted_layer() -> None:
    assert input_side_tensors(_front_model()) == {"image", "centred", "padded", "boxes"}  # not flat, not scaled_boxes


def test_qdq_model_leaves_the_first_layer_in_float(tmp_path: Path) -> None:
    model = onnx.load(str(write_tiny_spp_model(tmp_path / "tiny.onnx")))
    scales = {"image": 0.02, "relu1": 0.05, "pool1": 0.05, "spp": 0.05, "spp_flat": 0.05, "conv1": 0.05}
    q_all, info_all = build_qdq_model(model, scales, high_precision="fp32")
    q, info = build_qdq_model(model, scales, high_precision="fp32", quantize_input_layer=False)
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert "image" in info_all.activations and "w1" in info_all.weights
    assert info.input_side == ["image"] and "image" not in quantized and "w1" not in quantized  # conv1 wholly float
    assert set(info.activations) == set(info_all.activations) - {"image"}
    assert "first layers' input (image) left FP32" in info.placement


def test_config_value_is_checked(tmp_path: Path, tiny_project: Path) -> None:
    assert load_config(tiny_project).calibration.input_layer == "float"
    with pytest.raises(ConfigError, match="calibration.input_layer"):
        load_config(tiny_project, ["calibration.input_layer=fp8"])


def test_the_pipeline_extras_follow_the_config(tiny_project: Path) -> None:
    from sppquant.pipeline.calibrate import calibrate
    from sppquant.pipeline.context import open_model
    from sppquant.pipeline.weight_rounding import qdq_extras

    cfg = load_config(tiny_project, ["calibration.algorithm=minmax", "calibration.weight_rounding=nearest"])
    table = calibrate(cfg, backend="onnxruntime", progress=False).table_path
    ctx = open_model(cfg)
    assert qdq_extras(cfg, ctx, table).kwargs()["quantize_input_layer"] is False
    int8 = load_config(tiny_project, ["calibration.input_layer=int8"])
    assert qdq_extras(int8, ctx, table).kwargs()["quantize_input_layer"] is True
