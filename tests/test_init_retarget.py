"""`sppquant init` (starter config from the model) and table targeting (retarget, inspect acceptance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sppquant.calibration.provenance import read_provenance
from sppquant.calibration.table import read_table
from sppquant.cli import main
from sppquant.config import load_config
from sppquant.pipeline.retarget import version_text
from sppquant.pipeline.tables import check_table
from tests.conftest import write_tiny_spp_model
from tests.test_cli_ux import write_plain_cnn


def test_init_then_calibrate_percentile(tmp_path: Path, image_folder: Path, capsys) -> None:
    """The first-hour path: init a plain CNN (input ``data``), calibrate with --set."""
    write_plain_cnn(tmp_path / "m.onnx")
    cfg = tmp_path / "cfg" / "c.yaml"
    cfg.parent.mkdir()
    assert main(["init", str(tmp_path / "m.onnx"), "--images", str(image_folder), "-o", str(cfg)]) == 0
    assert "preprocess.mean" in capsys.readouterr().out
    text = cfg.read_text()
    assert "input_name: data" in text and "sizes: [[16, 16]]  # fixed in the model" in text and "CHECK" in text
    loaded = load_config(cfg)
    assert loaded.model.path == (tmp_path / "m.onnx").resolve() and loaded.calibration.images == image_folder
    assert main(["calibrate", "--config", str(cfg), "--set", "calibration.algorithm=percentile", "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["algorithm"] == "percentile" and out["images"] == 8


def test_init_dynamic_sizes_and_custom_ops_are_marked(tmp_path: Path, capsys) -> None:
    write_tiny_spp_model(tmp_path / "spp.onnx")
    assert main(["init", str(tmp_path / "spp.onnx"), "-o", str(tmp_path / "c.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["custom_ops"] == ["sppquant::SpatialPyramidPooling"]
    assert "input.sizes" in out["check"] and out["size"] is None
    text = (tmp_path / "c.yaml").read_text()
    assert "H/W are dynamic" in text and "plugin_library" in text and "images: null" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.onnx"], "missing.onnx: model file not found"),
    (["m.onnx", "--images", "nowhere"], "nowhere: image folder not found (--images)"),
    (["m.onnx", "-o", "exists.yaml"], "exists.yaml: exists; refusing to overwrite"),
])
def test_init_errors_are_one_line_exit_2(tmp_path: Path, monkeypatch, capsys, argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    write_plain_cnn(tmp_path / "m.onnx")
    (tmp_path / "exists.yaml").write_text("keep: me\n")
    assert main(["init", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert (tmp_path / "exists.yaml").read_text() == "keep: me\n"
    assert not (tmp_path / "sppquant.yaml").exists()


def test_retarget_rewrites_header_and_provenance_and_stays_valid(tiny_project: Path, capsys) -> None:
    assert main(["calibrate", "--config", str(tiny_project), "-q", "--set", "calibration.algorithm=minmax"]) == 0
    table = Path(capsys.readouterr().out.split()[0])
    assert read_table(table).header == "TRT-101601-MinMaxCalibration"
    cfg = load_config(tiny_project, ["calibration.algorithm=minmax"])
    assert main(["retarget", str(table), "--trt-version", "10.8.0", "--header", "entropy2"]) == 0
    assert read_table(table).header == "TRT-100800-EntropyCalibration2"
    record = read_provenance(table)
    assert record.algorithm["name"] == "minmax" and record.algorithm["trt_header"] == "EntropyCalibration2"
    assert record.tensorrt["target_version"] == "10.8.0"
    assert record.tensorrt["retargeted"][0]["from"] == "TRT-101601-MinMaxCalibration"
    assert check_table(table, cfg).valid
    capsys.readouterr()
    assert main(["inspect", str(table), "--json"]) == 0
    acc = json.loads(capsys.readouterr().out)["accepted_by"]
    assert acc["tensorrt_version"] == "10.8.0" and acc["trtexec"].endswith(f"--calib={table}")


def test_inspect_says_trtexec_refuses_minmax(tiny_project: Path, capsys) -> None:
    assert main(["calibrate", "--config", str(tiny_project), "-q", "--set", "calibration.algorithm=minmax"]) == 0
    table = capsys.readouterr().out.split()[0]
    assert main(["inspect", table]) == 0
    out = capsys.readouterr().out
    assert "trtexec:    NO:" in out and "IInt8MinMaxCalibrator" in out and "TensorRT 10.16.1 only" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--trt-version", "10.x"], "--trt-version: TensorRT version '10.x'"),
    ([], "give --trt-version and/or --header"),
])
def test_retarget_errors_leave_table_untouched(tiny_project: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["calibrate", "--config", str(tiny_project), "-q"]) == 0
    table = Path(capsys.readouterr().out.split()[0])
    before = table.read_bytes()
    assert main(["retarget", str(table), *argv]) == 2
    assert message in capsys.readouterr().err and table.read_bytes() == before


def test_retarget_without_provenance(tmp_path: Path) -> None:
    table = tmp_path / "trt.cache"
    table.write_text("TRT-100800-EntropyCalibration2\nx: 3c010a14\n")
    assert main(["retarget", str(table), "--trt-version", "10.16.1"]) == 0
    assert table.read_text().startswith("TRT-101601-EntropyCalibration2\n")


def test_version_text_inverts_the_header_code() -> None:
    assert version_text(101601) == "10.16.1" and version_text(8601) == "8.6.1" and version_text(100800) == "10.8.0"


def test_calibrate_trt_version_flag(tiny_project: Path, capsys) -> None:
    assert main(["calibrate", "--config", str(tiny_project), "-q", "--trt-version", "10.8.0"]) == 0
    assert read_table(capsys.readouterr().out.split()[0]).header == "TRT-100800-EntropyCalibration2"


def test_calibrate_a_model_without_config(tmp_path: Path, image_folder: Path, monkeypatch, capsys, caplog) -> None:
    monkeypatch.chdir(tmp_path)
    write_plain_cnn(tmp_path / "m.onnx")
    assert main(["calibrate", "m.onnx", "--images", str(image_folder), "--json", "-q",
                 "--set", "preprocess.mean=[0.5, 0.5, 0.5]"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert Path(out["table"]) == tmp_path / "m.cache" and out["images"] == 8
    assert "preprocess.std" in caplog.text and "preprocess.mean," not in caplog.text
    assert read_provenance(tmp_path / "m.cache").preprocess["config"]["mean"] == [0.5, 0.5, 0.5]


def test_calibrate_images_overrides_the_config(tiny_project: Path, tmp_path: Path, capsys) -> None:
    other = tmp_path / "imgs" / "a"
    assert main(["calibrate", "--config", str(tiny_project), "--images", str(other), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4


@pytest.mark.parametrize(("argv", "message"), [
    (["calibrate", "m.onnx"], "--images DIR is required without a config"),
    (["calibrate"], "give --config CONFIG or MODEL.onnx --images DIR"),
    (["calibrate", "m.onnx", "--config", "c.yaml", "--images", "."], "not both"),
    (["calibrate", "m.onnx", "--images", "nowhere"], "nowhere: image folder not found (--images)"),
])
def test_calibrate_model_errors(tmp_path: Path, monkeypatch, capsys, argv: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    write_plain_cnn(tmp_path / "m.onnx")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "m.cache").exists()
