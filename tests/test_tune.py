"""`sppquant tune`: meets a budget by keeping the most sensitive tensors in high precision, or says it cannot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_report import make_project

from sppquant.calibration.algorithms import ALGORITHMS, Algorithm, minmax_amax
from sppquant.cli import main
from sppquant.config import load_config
from sppquant.pipeline.tune import read_plan, tune


@pytest.fixture
def crush() -> Iterator[None]:
    """A deliberately bad rule: amax = 3% of max|x| clips almost everything."""
    ALGORITHMS.register("crush", Algorithm("crush", lambda h: 0.03 * minmax_amax(h), "EntropyCalibration2", None))
    yield
    ALGORITHMS.unregister("crush")


def test_tune_keeps_sensitive_tensors_until_the_budget_holds(tmp_path: Path, crush: None) -> None:
    cfg = load_config(make_project(tmp_path, layer_images=6))
    plan = tune(cfg, 0.0, tmp_path / "plan.json", metric="agreement", algorithm="crush", progress=False)
    assert plan.curve[0][0] == 0 and plan.curve[0][1] < plan.fp32  # crushed INT8 loses agreement at k = 0
    assert plan.kept_high_precision  # so some tensors had to stay in high precision
    # the budget (no drop) held on the tune half for a set of the chosen size, and the search counted its work
    assert any(k == len(plan.kept_high_precision) and v >= plan.fp32 for k, v in plan.curve)
    assert plan.search == "greedy" and plan.evaluations == len(plan.curve) + 1 and plan.proxy_runs > 0
    assert len(plan.kept_high_precision) < plan.quantized_tensors
    assert read_plan(tmp_path / "plan.json") == plan and (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["export-qdq", "--config", str(cfg.source or tmp_path / "c.yaml"), "--output", str(tmp_path / "q.onnx"),
                 "--table", plan.table, "--plan", str(tmp_path / "plan.json")]) == 0


def test_tune_says_clearly_when_the_budget_cannot_be_met(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Cosine with no drop allowed: quantized weights alone make it < 1 even with every activation kept."""
    cfg_path = make_project(tmp_path, layer_images=4)
    code = main(["tune", "--config", str(cfg_path), "--max-drop", "0", "--metric", "cosine", "--algorithm", "minmax",
                 "--output", str(tmp_path / "plan.json")])
    out = capsys.readouterr().out
    assert code == 3 and "NOT met" in out
    plan = read_plan(tmp_path / "plan.json")
    assert not plan.met and any("NOT met" in n for n in plan.notes)
