"""Trained `SppNet` -> ONNX, written node by node so the SPP is our plugin node.

BatchNorms are folded into the convolutions and into fc1 (what TensorRT would do anyway). Input
``image`` is ``[N, 3, H, W]`` with symbolic N, H, W; output ``logits`` is ``[N, 10]``.
Tensor names are readable because calibration tables are keyed by them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sppquant.atomic import atomic_write_bytes
from sppquant.ops.spp.onnx import SPP_DOMAIN, make_spp_node

OPSET = 17
IR_VERSION = 8  # accepted by every ONNX Runtime this project supports


def fold_bn(block) -> tuple[np.ndarray, np.ndarray]:
    """Conv (no bias) + eval-mode BatchNorm -> conv weight and bias."""
    w = block.conv.weight.detach().double().numpy()
    bn = block.bn
    gamma, beta = bn.weight.detach().double().numpy(), bn.bias.detach().double().numpy()
    mean, var = bn.running_mean.double().numpy(), bn.running_var.double().numpy()
    scale = gamma / np.sqrt(var + bn.eps)
    return (w * scale[:, None, None, None]).astype(np.float32), (beta - mean * scale).astype(np.float32)


def fold_bn_into_linear(bn, fc) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm1d followed by Linear -> one Linear: W' = W * s, b' = W @ t + b."""
    scale = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
    shift = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * scale
    w, b = fc.weight.detach().double().numpy(), fc.bias.detach().double().numpy()
    return (w * scale[None, :]).astype(np.float32), (w @ shift + b).astype(np.float32)


def to_onnx(model) -> onnx.ModelProto:
    model.eval()
    inits, nodes = [], []
    x = "image"
    for k, block in enumerate((model.block1, model.block2, model.block3), start=1):
        w, b = fold_bn(block)
        inits += [numpy_helper.from_array(w, f"conv{k}.weight"), numpy_helper.from_array(b, f"conv{k}.bias")]
        nodes.append(helper.make_node("Conv", [x, f"conv{k}.weight", f"conv{k}.bias"], [f"conv{k}"],
                                      name=f"conv{k}", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{k}"], [f"relu{k}"], name=f"relu{k}"))
        x = f"relu{k}"
        if k < 3:
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{k}"], name=f"pool{k}", kernel_shape=[2, 2],
                                          strides=[2, 2]))
            x = f"pool{k}"
    nodes.append(make_spp_node(x, "spp", model.spp.levels, "max", name="spp"))
    w1, b1 = fold_bn_into_linear(model.spp_bn, model.fc1)
    inits += [numpy_helper.from_array(w1, "fc1.weight"), numpy_helper.from_array(b1, "fc1.bias"),
              numpy_helper.from_array(model.fc2.weight.detach().numpy().astype(np.float32), "fc2.weight"),
              numpy_helper.from_array(model.fc2.bias.detach().numpy().astype(np.float32), "fc2.bias")]
    nodes.append(helper.make_node("Gemm", ["spp", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1))
    nodes.append(helper.make_node("Relu", ["fc1"], ["relu_fc1"], name="relu_fc1"))
    nodes.append(helper.make_node("Gemm", ["relu_fc1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1))
    graph = helper.make_graph(
        nodes, "sppnet_digits",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", model.fc2.out_features])],
        inits)
    onnx_model = helper.make_model(graph, producer_name="sppquant.demo", ir_version=IR_VERSION,
                                   opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(SPP_DOMAIN, 1)])
    onnx_model.doc_string = "sppquant demo: SPP network (levels 1,2,4) on scikit-learn digits"
    onnx.checker.check_model(onnx_model)
    return onnx_model


def save(model, path: str | Path) -> Path:
    atomic_write_bytes(path, to_onnx(model).SerializeToString())
    return Path(path)
