"""Shared fixtures: small synthetic images written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Eight colour PNGs of different sizes in two subfolders, plus a non-image file."""
    rng = np.random.default_rng(123)
    for i in range(8):
        sub = tmp_path / "imgs" / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(8, 40)), int(rng.integers(8, 40))
        cv2.imwrite(str(sub / f"img{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    return tmp_path / "imgs"


def write_tiny_spp_model(path: Path, seed: int = 0, output_type: int = 1) -> Path:
    """Conv -> Relu -> MaxPool -> SPP(1,2) -> Flatten -> Gemm, dynamic N/H/W: the demo's shape in miniature."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sppquant.ops.spp.onnx import make_spp_node

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(size=(5, 20)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape")]
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv1"], ["relu1"]),
             helper.make_node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
             make_spp_node("pool1", "spp", [1, 2]),
             helper.make_node("Reshape", ["spp", "flat_shape"], ["spp_flat"]),
             helper.make_node("Gemm", ["spp_flat", "w2"], ["logits"], transB=1)]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])]
    if output_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
        outputs = [helper.make_tensor_value_info("label", output_type, ["N"])]
    graph = helper.make_graph(nodes, "tiny_spp", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("sppquant", 1)],
                              ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_project(tmp_path: Path, image_folder: Path) -> Path:
    """A config file with a tiny SPP model and eight calibration images; returns the config path."""
    write_tiny_spp_model(tmp_path / "tiny.onnx")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "model: {path: tiny.onnx, input_name: image}\n"
        "input: {sizes: [[16, 16], [24, 20]]}\n"
        "preprocess: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
        "calibration: {images: imgs, batch_size: 3, output: out/tiny.cache}\n"
        "report: {images: imgs, labels: folders, output_dir: out/report}\n"
        "backend: onnxruntime\n")
    return cfg


def with_algorithm(cfg, algorithm: str):
    """The config with calibration.algorithm set: tests of one rule name it instead of relying on the default."""
    import dataclasses

    return dataclasses.replace(cfg, calibration=dataclasses.replace(cfg.calibration, algorithm=algorithm))
