"""Old opsets on first contact: a plain opset-11 CNN calibrates, reports and exports with no manual step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from test_report_support import synthetic_model, write_images

from sppquant.cli import main
from sppquant.errors import ModelError
from sppquant.ops import default_opset, rewrite_for_onnxruntime, upgrade_opset


def plain_cnn(opset: int = 11) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, no custom op: an old exporter's classifier."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(6, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Conv", ["input.1", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "old", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                                            ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def test_opset11_cnn_without_custom_ops_runs_every_verb(tmp_path: Path) -> None:
    onnx.save(plain_cnn(11), str(tmp_path / "old.onnx"))
    write_images(tmp_path / "eval", n=12, classes=4)
    cfg = {"model": {"path": "old.onnx", "input_name": "input.1"}, "input": {"sizes": [[16, 16]]},
           "calibration": {"images": "eval", "output": "out/t.cache"},
           "report": {"images": "eval", "output_dir": "out/report", "batch_size": 4}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    c = str(tmp_path / "c.yaml")
    assert main(["calibrate", "--config", c]) == 0
    assert main(["predict", "--config", c, str(next((tmp_path / "eval").rglob("*.png")))]) == 0
    assert main(["report", "--config", c, "--algorithms", "minmax"]) == 0
    assert main(["export-qdq", "--config", c, "--output", str(tmp_path / "q.onnx")]) == 0
    exported = onnx.load(str(tmp_path / "q.onnx"))
    assert default_opset(exported) >= 13 and any(n.op_type == "QuantizeLinear" for n in exported.graph.node)
    assert default_opset(onnx.load(str(tmp_path / "old.onnx"))) == 11  # the user's file is never touched


def test_custom_op_rewrite_converts_an_old_opset() -> None:
    m = synthetic_model(opset=11)
    out = rewrite_for_onnxruntime(m)
    assert default_opset(out) == 13 and not any(n.domain == "sppquant" for n in out.graph.node)
    assert default_opset(m) == 11  # converted in memory only


def test_unconvertible_model_is_refused_in_one_line() -> None:
    m = plain_cnn(11)
    m.graph.node.append(helper.make_node("NotAnOnnxOp", ["logits"], ["z"]))
    with pytest.raises(ModelError) as err:
        upgrade_opset(m, 13, "per-axis Q/DQ", "old.onnx")
    assert "old.onnx" in str(err.value) and "re-export" in str(err.value) and "\n" not in str(err.value)
