"""export-data (preprocessed calibration batches as .npz) and export-onnx (custom ops rewritten)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from sppquant.cli import main
from sppquant.config import load_config
from sppquant.data import calibration_set, iter_batches
from sppquant.ops import custom_nodes


def test_export_data_matches_our_batches(tiny_project: Path, capsys) -> None:
    out = tiny_project.parent / "data" / "calib.npz"
    assert main(["export-data", "--config", str(tiny_project), "--output", str(out), "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["arrays"] == {"image@16x16": [8, 3, 16, 16], "image@24x20": [8, 3, 24, 20]}
    assert summary["images"] == 8
    cfg = load_config(tiny_project)
    cal = cfg.calibration
    expected = [b.inputs[0] for b in iter_batches(calibration_set(cal), cfg.preprocess, cfg.input.sizes[:1],
                                                  cal.batch_size, progress=False)]
    with np.load(out) as data:
        np.testing.assert_array_equal(data["image@16x16"], np.concatenate(expected))


def test_export_data_single_size_keys_by_input_name(tiny_project: Path) -> None:
    out = tiny_project.parent / "c.npz"
    assert main(["export-data", "--config", str(tiny_project), "--output", str(out), "-q",
                 "--set", "input.sizes=[[16, 16]]", "--set", "calibration.max_images=5"]) == 0
    with np.load(out) as data:
        assert list(data) == ["image"] and data["image"].shape == (5, 3, 16, 16)


@pytest.mark.parametrize(("argv", "message"), [
    (["export-data", "--output", "x.npy"], "--output x.npy: expected a .npz file name"),
    (["export-onnx", "--output", "x.txt"], "--output x.txt: expected a .onnx file name"),
    (["export-data", "--output", "x.npz", "--set", "calibration.images=nowhere"], "nowhere"),
    (["export-onnx", "--output", "x.onnx", "--set", "model.input_name=data"], "no input named 'data'"),
])
def test_export_errors_are_one_line_and_write_nothing(tiny_project: Path, monkeypatch, capsys, argv, message) -> None:
    monkeypatch.chdir(tiny_project.parent)
    assert main([argv[0], "--config", str(tiny_project), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not any(tiny_project.parent.glob("x.*"))


def test_export_onnx_runs_in_plain_onnxruntime(tiny_project: Path, capsys) -> None:
    out = tiny_project.parent / "std.onnx"
    assert main(["export-onnx", "--config", str(tiny_project), "--output", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rewritten"] == {"sppquant::SpatialPyramidPooling": 1}
    model = onnx.load(str(out))
    assert not list(custom_nodes(model)) and {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = sess.run(None, {"image": np.zeros((2, 3, 16, 16), np.float32)})
    assert logits.shape == (2, 5)
