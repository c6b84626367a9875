"""The one table rule of build, export-qdq, report and tune (`pipeline.tables.resolve_table`):
a valid table is reused; a missing one is calibrated now and written where `calibrate --algorithm A`
writes it; a stale one is refused in one line naming the reasons and the fix (``--force`` replaces it);
``--table`` is used as given. build's variant is tested in test_tensorrt_build.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sppquant.cli import main
from sppquant.config import load_config
from sppquant.pipeline.calibrate import calibrate
from sppquant.pipeline.tables import check_table, lookup_table, table_for
from tests.conftest import write_tiny_spp_model


def _stale(project: Path) -> Path:
    """A valid entropy2 table, then a changed model: the table is stale. Returns the table path."""
    cfg = load_config(project)
    calibrate(cfg, algorithm="entropy2", progress=False)
    write_tiny_spp_model(cfg.model.path, seed=5)
    return cfg.calibration.output


def _commands(project: Path) -> dict[str, list[str]]:
    base = ["--config", str(project), "-q", "--set", "calibration.algorithm=entropy2"]
    out = project.parent
    return {
        "export-qdq": ["export-qdq", *base, "--output", str(out / "q.onnx")],
        "report": ["report", *base, "--algorithms", "entropy2", "--set", "report.layer_images=2",
                   "--set", "report.labels=none", "--output-dir", str(out / "rep")],
        "tune": ["tune", *base, "--algorithm", "entropy2", "--max-drop", "0.5", "--output", str(out / "plan.json")],
    }


@pytest.mark.parametrize("command", ["export-qdq", "report", "tune"])
def test_a_stale_table_is_refused_in_one_line_before_any_output(tiny_project: Path, capsys, command: str) -> None:
    table = _stale(tiny_project)
    before = table.read_bytes()
    assert main(_commands(tiny_project)[command]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stale entropy2 calibration table: model changed" in err
    assert str(table) in err and "--force" in err and "sppquant calibrate" in err
    assert table.read_bytes() == before  # refused, not replaced
    out = tiny_project.parent
    assert not (out / "q.onnx").exists() and not (out / "rep" / "report.json").exists()
    assert not (out / "plan.json").exists()


def test_force_recalibrates_and_replaces_the_stale_table(tiny_project: Path, capsys) -> None:
    table = _stale(tiny_project)
    cfg = load_config(tiny_project)
    assert not check_table(table, cfg, "entropy2").valid
    assert main([*_commands(tiny_project)["export-qdq"], "--force"]) == 0
    assert check_table(table, cfg, "entropy2").valid  # replaced by a table of the current model
    assert (tiny_project.parent / "q.onnx").exists()


def test_a_missing_table_is_calibrated_once_and_then_reused_by_every_command(tiny_project: Path, capsys) -> None:
    cfg = load_config(tiny_project)
    target = table_for(cfg, "minmax")
    assert lookup_table(cfg, "minmax").valid is None and not lookup_table(cfg, "minmax").stale
    argv = ["report", "--config", str(tiny_project), "-q", "--json", "--algorithms", "minmax",
            "--set", "report.layer_images=2", "--set", "report.labels=none"]
    assert main(argv) == 0
    rep = json.loads(Path(json.loads(capsys.readouterr().out)["json"]).read_text())
    assert rep["tables"]["minmax"]["source"] == "calibrated" and Path(rep["tables"]["minmax"]["path"]) == target
    sha = target.read_bytes()
    assert main(["export-qdq", "--config", str(tiny_project), "-q", "--json", "--algorithm", "minmax",
                 "--output", str(tiny_project.parent / "q.onnx")]) == 0
    assert json.loads(capsys.readouterr().out)["table"] == str(target)
    assert main(argv) == 0
    rep = json.loads(Path(json.loads(capsys.readouterr().out)["json"]).read_text())
    assert rep["tables"]["minmax"]["source"] == "config"  # reused by the second report
    assert target.read_bytes() == sha  # never recalibrated


def test_a_given_table_is_used_even_when_stale_with_a_warning(tiny_project: Path, capsys) -> None:
    table = _stale(tiny_project)
    argv = [*_commands(tiny_project)["export-qdq"], "--table", str(table), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["table"] == str(table) and any("model changed" in w for w in out["warnings"])
