"""Trained `SppNetDetector` -> ONNX, node by node, with the RoI SPP as the plugin node.

Inputs ``image`` [N, 3, H, W] and ``rois`` [R, 5] (``[batch_index, x1, y1, x2, y2]`` in
input pixels); outputs ``class_logits`` [R, 11] (index 0 = background, k = digit k-1) and
``box_deltas`` [R, 44] (Fast R-CNN ``dx, dy, dw, dh`` per class, raw: the training
normalisation is folded into the box layer). BatchNorms are folded into the convolutions
and into fc1. Tensor names are readable because calibration tables are keyed by them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sppquant.atomic import atomic_write_bytes
from sppquant.demo.export import IR_VERSION, OPSET, fold_bn, fold_bn_into_linear
from sppquant.ops.roi_spp.onnx import ROI_SPP_DOMAIN, make_roi_spp_node


def _linear(name: str, weight: np.ndarray, bias: np.ndarray, x: str, out: str) -> tuple[list, list]:
    inits = [numpy_helper.from_array(weight.astype(np.float32), f"{name}.weight"),
             numpy_helper.from_array(bias.astype(np.float32), f"{name}.bias")]
    return inits, [helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [out], name=name, transB=1)]


def _np(t) -> np.ndarray:
    return t.detach().double().numpy()


def to_onnx(model) -> onnx.ModelProto:
    from sppquant.demo.detector import DELTA_STD, LEVELS, NUM_CLASSES, SPATIAL_SCALE

    model.eval()
    inits, nodes = [], []
    x = "image"
    for k, block in enumerate(model.blocks, start=1):
        w, b = fold_bn(block)
        inits += [numpy_helper.from_array(w, f"conv{k}.weight"), numpy_helper.from_array(b, f"conv{k}.bias")]
        nodes.append(helper.make_node("Conv", [x, f"conv{k}.weight", f"conv{k}.bias"], [f"conv{k}"],
                                      name=f"conv{k}", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{k}"], [f"relu{k}"], name=f"relu{k}"))
        x = f"relu{k}"
        if k - 1 in model.pool_after:
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{k}"], name=f"pool{k}", kernel_shape=[2, 2],
                                          strides=[2, 2]))
            x = f"pool{k}"
    nodes.append(make_roi_spp_node(x, "rois", "roi_spp", LEVELS, SPATIAL_SCALE, "max", name="roi_spp"))
    w1, b1 = fold_bn_into_linear(model.roi_bn, model.fc1)
    std = np.tile(np.asarray(DELTA_STD, np.float64), NUM_CLASSES)
    for name, (w, b), src, out in (
        ("fc1", (w1, b1), "roi_spp", "fc1"),
        ("fc2", (_np(model.fc2.weight), _np(model.fc2.bias)), "relu_fc1", "fc2"),
        ("cls", (_np(model.cls.weight), _np(model.cls.bias)), "relu_fc2", "class_logits"),
        ("bbox", (_np(model.bbox.weight) * std[:, None], _np(model.bbox.bias) * std), "relu_fc2", "box_deltas"),
    ):
        i, n = _linear(name, w, b, src, out)
        inits += i
        nodes += n
        if name in ("fc1", "fc2"):
            nodes.append(helper.make_node("Relu", [out], [f"relu_{out}"], name=f"relu_{out}"))
    graph = helper.make_graph(
        nodes, "sppnet_digits_det",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["R", 5])],
        [helper.make_tensor_value_info("class_logits", TensorProto.FLOAT, ["R", NUM_CLASSES]),
         helper.make_tensor_value_info("box_deltas", TensorProto.FLOAT, ["R", 4 * NUM_CLASSES])],
        inits)
    onnx_model = helper.make_model(graph, producer_name="sppquant.demo", ir_version=IR_VERSION,
                                   opset_imports=[helper.make_opsetid("", OPSET),
                                                  helper.make_opsetid(ROI_SPP_DOMAIN, 1)])
    onnx_model.doc_string = "sppquant demo: SPP-net detector (RoI SPP levels 1,2,4, stride 4) on digit scenes"
    onnx.checker.check_model(onnx_model)
    return onnx_model


def save(model, path: str | Path) -> Path:
    atomic_write_bytes(path, to_onnx(model).SerializeToString())
    return Path(path)
