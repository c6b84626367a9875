"""Helpers shared by the report and Q/DQ tests: a small synthetic SPP network and images.

The network has the layer kinds the real demo has (Conv, Relu, MaxPool, the SPP plugin
node, Gemm) so every code path of the Q/DQ export, the FP16 conversion and the report
runs without the demo model.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sppquant.ops.spp.onnx import SPP_DOMAIN, make_spp_node

NUM_CLASSES = 6
LEVELS = (1, 2)


def synthetic_model(seed: int = 0, trans_b: int = 1, classes: int = NUM_CLASSES, opset: int = 17) -> onnx.ModelProto:
    """image(N,3,H,W) -> Conv(8) -> Relu -> MaxPool2 -> Conv(12) -> Relu -> SPP(1,2) -> Gemm -> logits."""
    rng = np.random.default_rng(seed)
    c1, c2 = 8, 12
    feat = c2 * sum(n * n for n in LEVELS)
    w1 = (rng.standard_normal((c1, 3, 3, 3)) * 0.3).astype(np.float32)
    w1[3] *= 0.05  # channels of very different ranges: per-channel scales matter
    b1 = (rng.standard_normal(c1) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((c2, c1, 3, 3)) * 0.15).astype(np.float32)
    b2 = (rng.standard_normal(c2) * 0.1).astype(np.float32)
    wf = (rng.standard_normal((classes, feat)) * 0.2).astype(np.float32)
    bf = (rng.standard_normal(classes) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "conv1.weight"), numpy_helper.from_array(b1, "conv1.bias"),
             numpy_helper.from_array(w2, "conv2.weight"), numpy_helper.from_array(b2, "conv2.bias"),
             numpy_helper.from_array(wf if trans_b else np.ascontiguousarray(wf.T), "fc.weight"),
             numpy_helper.from_array(bf, "fc.bias")]
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["conv1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "conv2.weight", "conv2.bias"], ["conv2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        make_spp_node("relu2", "spp", LEVELS, name="spp"),
        helper.make_node("Gemm", ["spp", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=trans_b),
    ]
    graph = helper.make_graph(
        nodes, "synthetic_sppnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(SPP_DOMAIN, 1)],
                             ir_version=8, producer_name="sppquant-tests")


def write_images(root: Path, n: int = 24, classes: int = NUM_CLASSES, folders: bool = True, seed: int = 1) -> Path:
    """``n`` small colour PNGs of varied size; class subfolders ``0..classes-1`` when ``folders``."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = i % classes
        sub = root / str(cls) if folders else root
        sub.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(12, 40)), int(rng.integers(12, 40))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[: h // 2, :, cls % 3] = 255  # a little class structure
        cv2.imwrite(str(sub / f"img{i:03d}.png"), img)
    return root


def test_synthetic_model_is_valid() -> None:
    onnx.checker.check_model(synthetic_model(), full_check=True)
