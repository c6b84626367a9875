"""`report --plan`: a MIXED column (the plan's table, no Q/DQ on its kept tensors) evaluated like the others."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from test_report import make_project

from sppquant.cli import main
from sppquant.config import load_config
from sppquant.pipeline.calibrate import calibrate
from sppquant.pipeline.export import export_qdq
from sppquant.pipeline.precision_plan import PrecisionPlan
from sppquant.pipeline.report import build_report


def _plan(path: Path, table: Path, keep: list[str]) -> Path:
    PrecisionPlan("m.onnx", str(table), "minmax", "top1", 0.005, 1.0, keep, [[0, 0.9]], 5, 4, 4, 1.0, 1.0,
                  True).write(path)
    return path


def _readers_of_q(model: onnx.ModelProto, tensor: str) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)


def test_mixed_column_is_the_plan_model_and_equals_int8_without_kept_tensors(tmp_path: Path) -> None:
    cfg = load_config(make_project(tmp_path, algorithm="minmax"))
    table = calibrate(cfg, progress=False).table_path
    empty = _plan(tmp_path / "empty.json", table, [])
    rep = build_report(cfg, algorithms=["minmax"], layer_images=2, progress=False, plan=empty).report.to_json()
    mixed, int8 = rep["precisions"]["mixed"], rep["precisions"]["int8"]
    assert mixed["precision"] == "mixed" and mixed["algorithm"] == "minmax"
    for key in ("top1", "agreement", "cosine", "sqnr_db"):  # nothing kept: the same model, the same numbers
        assert mixed[key] == int8[key], key
    out = cfg.report.output_dir
    assert "MIXED (minmax plan)" in (out / "report.md").read_text()
    keep = _plan(tmp_path / "keep.json", table, ["relu1"])
    rep = build_report(cfg, algorithms=["minmax"], layer_images=2, progress=False, plan=keep).report.to_json()
    model = onnx.load(str(out / rep["precisions"]["mixed"]["model"]))
    assert _readers_of_q(model, "relu1") == 0 and _readers_of_q(onnx.load(str(out / int8["model"])), "relu1") > 0
    exported = export_qdq(cfg, tmp_path / "exported.onnx", plan=keep)  # the same file export-qdq --plan writes
    assert exported.path.read_bytes() == (out / "model_mixed.qdq.onnx").read_bytes()
    assert exported.table_path == table


def test_report_plan_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg_path = make_project(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "x"}))
    assert main(["report", "--config", str(cfg_path), "--plan", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.json: not a usable precision plan" in err and "\n" not in err


def test_kept_tensor_readers_lose_their_weight_pairs_too() -> None:
    """A plan keeps a tensor's readers wholly above INT8 (as TensorRT 10 runs them), not as weight-only INT8."""
    from test_report_support import synthetic_model

    from sppquant.model import activation_names
    from sppquant.quantize.qdq import build_qdq_model

    model = synthetic_model()
    table = {n: 0.05 for n in activation_names(model)}
    full, info = build_qdq_model(model, table, high_precision="fp32")
    kept, kinfo = build_qdq_model(model, table, high_precision="fp32", keep_high_precision=["pool1"])
    assert {"conv1.weight", "conv2.weight"} <= set(info.weights)
    assert "conv1.weight" in kinfo.weights and "conv2.weight" not in kinfo.weights  # conv2 reads pool1
    conv2 = next(n for n in kept.graph.node if n.name == "conv2")
    assert conv2.input[0] == "pool1" and conv2.input[1] == "conv2.weight"  # float input, float weight
    assert _readers_of_q(kept, "pool1") == 0 and _readers_of_q(full, "pool1") == 1
