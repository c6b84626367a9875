"""`mse` against an independently computed optimum, and `auto`'s per-tensor choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sppquant.calibration import Histogram, compute_amax
from sppquant.calibration.mse import mse_amax
from sppquant.config import load_config
from sppquant.pipeline.auto import TIE_DB
from sppquant.pipeline.calibrate import calibrate


def _fake_quantize(x: np.ndarray, amax: float) -> np.ndarray:
    s = np.float64(amax) / 127
    return np.clip(np.rint(x / s), -127, 127) * s  # symmetric, half to even, like Q/DQ with the table's scale


@pytest.mark.parametrize("dist", ["laplace", "normal", "relu_normal", "uniform"])
def test_mse_matches_a_brute_force_optimum_on_samples(dist: str) -> None:
    rng = np.random.default_rng(1)
    x = {"laplace": rng.laplace(size=300_000), "normal": rng.normal(size=300_000),
         "relu_normal": np.maximum(rng.normal(size=300_000), 0), "uniform": rng.uniform(-3, 3, 300_000)}[dist]
    x = x.astype(np.float32).astype(np.float64)
    a = mse_amax(Histogram().update(x))
    grid = np.linspace(0.2, np.abs(x).max(), 800)  # brute force on the samples themselves, not the histogram
    errs = np.array([np.mean((_fake_quantize(x, g) - x) ** 2) for g in grid])
    ours = np.mean((_fake_quantize(x, a) - x) ** 2)
    assert ours <= errs.min() * 1.02, (a, grid[errs.argmin()])


def test_mse_beats_every_other_rule_on_its_own_criterion() -> None:
    """Heavy tail with outliers: no other rule's amax has a lower squared error on the samples."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.laplace(scale=0.5, size=200_000), rng.uniform(20, 40, 30)])
    h = Histogram().update(x)
    ours = np.mean((_fake_quantize(x, mse_amax(h)) - x) ** 2)
    for rule in ("minmax", "entropy2", "percentile"):
        assert ours <= np.mean((_fake_quantize(x, compute_amax(h, rule)) - x) ** 2) * 1.02, rule
    spike = Histogram().update(np.full(1000, 3.0))
    assert abs(mse_amax(spike) - 3.0) <= 2 * spike.bin_width  # a spike is kept, to the histogram's resolution
    assert mse_amax(Histogram()) == 0.0 and mse_amax(Histogram().update(np.zeros(10))) == 0.0


def test_auto_takes_per_tensor_the_rule_with_the_best_output_sqnr(tiny_project: Path) -> None:
    cfg = load_config(tiny_project)
    result = calibrate(cfg, algorithm="auto", progress=False)
    record = json.loads(result.provenance_path.read_text())
    assert record["algorithm"]["name"] == "auto" and result.table.algorithm == "EntropyCalibration2"
    chosen = 0
    for name, t in record["tensors"].items():
        assert t["rule"] in ("mse", "percentile", "entropy2", "minmax")
        scores = {r: (np.inf if v is None else v) for r, v in t["why"].items()}
        if scores:
            chosen += 1
            assert scores[t["rule"]] >= max(scores.values()) - TIE_DB, (name, scores)
        if t["tied_to"] is None:  # the table holds the winning rule's own threshold
            one = calibrate(cfg, output=result.table_path.with_name(f"{t['rule']}.cache"), algorithm=t["rule"],
                            progress=False)
            assert one.table.scales.get(name) is not None
    assert chosen > 0


def test_report_and_calibrate_warn_loudly_when_int8_loses_accuracy(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from test_report import make_project

    from sppquant.calibration.table import CalibrationTable, write_table
    from sppquant.pipeline.report import build_report

    cfg = load_config(make_project(tmp_path))
    good = calibrate(cfg, progress=False).table
    crushed = CalibrationTable(good.version, good.algorithm, {n: s / 200 for n, s in good.scales.items()})
    bad = tmp_path / "bad.cache"
    write_table(bad, crushed)
    rep = build_report(cfg, algorithms=["entropy2"], table=bad, layer_images=4, progress=False).report
    notes = [n for n in rep.notes if "loses accuracy" in n]
    assert notes and "sppquant calibrate --algorithm auto" in notes[0]
    with caplog.at_level("WARNING"):
        from sppquant.pipeline.calibrate import collect_activations, warn_heavy_clipping
        from sppquant.pipeline.context import open_model

        collector, _ = collect_activations(cfg, open_model(cfg), progress=False)
        warn_heavy_clipping(collector, crushed, "entropy2")
    assert "clips more than" in caplog.text and "--algorithm auto" in caplog.text


def test_pick_rules_runs_distinct_scales_once_and_prunes_rules_far_off_locally() -> None:
    """y = x * 1 (tensor "a") + 3: a's quantization error is the output's error, computed here by hand."""
    import contextlib

    from onnx import TensorProto, helper, numpy_helper

    from sppquant.backends.onnxruntime import OrtRunner
    from sppquant.calibration.table import scale_from_amax
    from sppquant.pipeline.auto import PRUNE_DB, pick_rules
    from sppquant.quantize.qdq import fake_quantize
    from sppquant.tasks.metrics import sqnr_db

    one, three = numpy_helper.from_array(np.ones(1, np.float32), "one"), numpy_helper.from_array(
        np.full(1, 3.0, np.float32), "three")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "one"], ["a"]), helper.make_node("Add", ["a", "three"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 64])], [one, three])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.uniform(-1, 1, (8, 64)).astype(np.float32)} for _ in range(3)]
    per_rule = {"r1": {"a": 1.0, "y": 4.0}, "r2": {"a": 1.0, "y": 4.0}, "r3": {"a": 0.01, "y": 4.0},
                "r4": {"a": 2.0, "y": 4.0}, "r5": {"a": 1.01, "y": 4.0}}
    runs = []

    class Counting(OrtRunner):
        def run(self, f, outputs=None):
            runs.append(sorted(k for k in f if k != "x"))
            return super().run(f, outputs)

    @contextlib.contextmanager
    def open_runner(m):
        yield Counting(m)

    hists = {n: Histogram() for n in ("a", "y")}
    for f in feeds:
        hists["a"].update(f["x"])
        hists["y"].update(f["x"] + 3)
    choice = pick_rules(model, per_rule, ("r1", "r2", "r3", "r4", "r5"), lambda: feeds, ["y"], open_runner, False,
                        hists)
    assert choice.rules["a"] == "r1" and choice.amax["a"] == 1.0
    assert set(choice.pruned["a"]) == {"r3"} and choice.pruned["a"]["r3"] > PRUNE_DB  # clips ~everything
    assert "a" in choice.scores and set(choice.scores["a"]) == {"r1", "r2", "r4", "r5"}
    assert choice.scores["a"]["r2"] == choice.scores["a"]["r1"]  # same scale: one run, shared score
    assert choice.scores["a"]["r5"] == choice.scores["a"]["r1"]  # within SCALE_REL_TOL: shares r1's run too
    x = np.concatenate([f["x"] for f in feeds])
    for rule in ("r1", "r4"):
        want = sqnr_db(x + 3, fake_quantize(x, scale_from_amax(per_rule[rule]["a"])) + 3)
        assert choice.scores["a"][rule] == pytest.approx(want, abs=1e-3)
    flagged = [r for r in runs if r]
    assert len(flagged) == 2 * len(feeds)  # r1 and r4 on "a" only: r2 shared r1's run, r3 was pruned
    assert "y" not in choice.scores  # every rule agrees on y: not contested
    runs.clear()
    tied = pick_rules(model, per_rule, ("r1", "r4"), lambda: feeds, ["y"], open_runner, False, tied={"a"})
    assert tied.scores == {} and not [r for r in runs if r]  # a tied tensor's amax is its source's: no contest
