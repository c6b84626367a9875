"""Tables per algorithm: calibrate --algorithm writes a per-algorithm variant; export-qdq --algorithm and
report --table ALGO=PATH choose among them. The one rule for a missing or stale table: tests/test_table_rule.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sppquant.calibration.table import read_table
from sppquant.cli import main
from sppquant.config import load_config
from sppquant.pipeline.tables import find_valid_table, table_for


def test_calibrate_algorithm_writes_the_variant_and_keeps_the_main_table(tiny_project: Path, capsys) -> None:
    cfg = load_config(tiny_project)
    assert main(["calibrate", "--config", str(tiny_project), "-q"]) == 0
    main_bytes = cfg.calibration.output.read_bytes()
    assert main(["calibrate", "--config", str(tiny_project), "-q", "--algorithm", "minmax", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert Path(out["table"]) == table_for(cfg, "minmax") == cfg.calibration.output.with_name("tiny.minmax.cache")
    assert cfg.calibration.output.read_bytes() == main_bytes
    assert find_valid_table(cfg, "minmax")[0] == table_for(cfg, "minmax")
    assert find_valid_table(cfg, "percentile")[0] == cfg.calibration.output  # the default rule's table
    assert find_valid_table(cfg, "entropy2")[0] is None


def test_export_qdq_algorithm_uses_its_table_or_calibrates_it(tiny_project: Path, capsys) -> None:
    cfg = load_config(tiny_project)
    out = tiny_project.parent / "q.onnx"
    argv = ["export-qdq", "--config", str(tiny_project), "--output", str(out), "--algorithm", "minmax", "--json", "-q"]
    assert not table_for(cfg, "minmax").exists()
    assert main(argv) == 0  # no minmax table: calibrated now, where calibrate --algorithm minmax writes it
    assert json.loads(capsys.readouterr().out)["table"] == str(table_for(cfg, "minmax"))
    assert read_table(table_for(cfg, "minmax")).algorithm == "MinMaxCalibration"
    assert not cfg.calibration.output.exists()  # the configured algorithm's table is not touched
    sha = table_for(cfg, "minmax").read_bytes()
    assert main(argv) == 0  # valid now: reused, not recalibrated
    assert table_for(cfg, "minmax").read_bytes() == sha and "minmax.cache" in capsys.readouterr().out


def test_report_table_per_algorithm(tiny_project: Path, capsys) -> None:
    assert main(["calibrate", "--config", str(tiny_project), "-q", "--algorithm", "minmax",
                 "--output", str(tiny_project.parent / "mm.cache")]) == 0
    capsys.readouterr()
    assert main(["report", "--config", str(tiny_project), "-q", "--json", "--algorithms", "entropy2,minmax",
                 "--table", f"minmax={tiny_project.parent / 'mm.cache'}", "--set", "report.layer_images=2",
                 "--set", "report.labels=none"]) == 0
    rep = json.loads((Path(json.loads(capsys.readouterr().out)["json"])).read_text())
    assert rep["tables"]["minmax"]["source"] == "given" and rep["tables"]["entropy2"]["source"] == "calibrated"
    assert read_table(tiny_project.parent / "mm.cache").algorithm == "MinMaxCalibration"


@pytest.mark.parametrize(("tables", "message"), [
    (["mse=x.cache"], "'mse' is not among the report's algorithms"),
    (["a.cache", "b.cache"], "expected ALGO=PATH when several tables are given"),
])
def test_report_table_errors(tiny_project: Path, capsys, tables: list[str], message: str) -> None:
    argv = ["report", "--config", str(tiny_project)]
    for t in tables:
        argv += ["--table", t]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
