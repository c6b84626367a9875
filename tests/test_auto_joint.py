"""`auto` within a time budget (`pipeline.auto_joint`): its pieces against independent references.

- `error_parts` against each sample's own fake-quantization error, split by hand into clipped / in range;
- the scale-fed Q/DQ model against the exported Q/DQ model built separately for the same scales;
- `pick_rules_joint` against an exhaustive search over every per-tensor rule combination, each scored on
  its own exported model; the budget stops the contest (runs counted) and says what it skipped.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sppquant.backends.onnxruntime import OrtRunner
from sppquant.calibration import Histogram
from sppquant.calibration.mse import error_parts, mse_curve
from sppquant.calibration.table import scale_from_amax
from sppquant.pipeline.auto_joint import TIE_DB, local_errors, order_moves, pick_rules_joint
from sppquant.quantize.qdq import build_qdq_model
from sppquant.quantize.scale_feeds import scale_fed_model, scale_feeds
from sppquant.tasks.metrics import sqnr_db


def test_error_parts_split_the_squared_error_into_rounding_and_clipping() -> None:
    rng = np.random.default_rng(3)
    h = Histogram().update(np.concatenate([rng.laplace(scale=0.4, size=50_000), rng.uniform(4, 9, 40)]))
    nz = np.flatnonzero(h.counts)
    x = np.repeat((nz + 0.5) * h.bin_width, h.counts[nz].astype(int))  # every value at its bin centre
    amaxes = np.array([0.5, 1.7, 3.0, h.max_abs])
    rounding, clipping = error_parts(h.counts, h.bin_width, amaxes)
    for a, r, c in zip(amaxes, rounding, clipping):
        s = np.float64(a) / 127
        q = np.clip(np.rint(x / s), -127, 127) * s
        clipped = x > 127.5 * s  # beyond the last step's rounding interval
        assert r == pytest.approx(np.sum((x - q)[~clipped] ** 2), rel=1e-9)
        assert c == pytest.approx(np.sum((x - a)[clipped] ** 2), rel=1e-9)
    assert np.allclose(rounding + clipping, mse_curve(h.counts, h.bin_width, amaxes), rtol=1e-12)
    assert clipping[-1] == 0.0 and clipping[0] > clipping[1] > clipping[2]


def _conv_model() -> onnx.ModelProto:
    """x -> Conv -> Relu -> Conv -> y (weights random, 16 channels)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.2, (8, 16, 3, 3)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["r"]),
         helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 12, 12])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(n: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)} for _ in range(n)]


def _max_abs(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    r = OrtRunner(model, extra_outputs=["a", "r"])
    outs = [r.run(f, ["a", "r", "y"]) for f in feeds]
    return {"x": max(float(np.abs(f["x"]).max()) for f in feeds),
            **{n: max(float(np.abs(o[n]).max()) for o in outs) for n in ("a", "r", "y")}}


def test_scale_fed_model_runs_exactly_the_exported_model_for_any_fed_scales() -> None:
    model, feeds = _conv_model(), _feeds(2)
    m = _max_abs(model, feeds)
    q, inputs, info = scale_fed_model(model, {n: scale_from_amax(a) for n, a in m.items()})
    assert set(inputs) == set(info.activations) and "x" in inputs and "r" in inputs
    fed = OrtRunner(q)
    for k in (1.0, 0.3, 0.05):
        scales = {n: scale_from_amax(a * k) for n, a in m.items()}
        exported, _ = build_qdq_model(model, scales, high_precision="fp32")
        ref = OrtRunner(exported)
        for f in feeds:
            want = ref.run(f, ["y"])["y"]
            got = fed.run({**f, **scale_feeds(inputs, scales)}, ["y"])["y"]
            np.testing.assert_array_equal(got, want)
    unfed = fed.run(feeds[0], ["y"])["y"]  # unfed scales: the table it was built with
    np.testing.assert_array_equal(unfed, OrtRunner(build_qdq_model(model, {n: scale_from_amax(a) for n, a in m.items()},
                                                                   high_precision="fp32")[0]).run(feeds[0], ["y"])["y"])


class _Counting(OrtRunner):
    runs = 0

    def run(self, feeds, outputs=None):
        _Counting.runs += 1
        return super().run(feeds, outputs)


@contextlib.contextmanager
def _open(model: onnx.ModelProto):
    yield _Counting(model)


def _exhaustive(model, per_rule, names, feeds) -> dict[tuple[str, ...], float]:
    """Output SQNR of every per-tensor combination, each on its own exported Q/DQ model (no scale feeds)."""
    fp32 = OrtRunner(model)
    ref = np.concatenate([fp32.run(f, ["y"])["y"] for f in feeds])
    out = {}
    for combo in itertools.product(per_rule, repeat=len(names)):
        amax = dict(per_rule[combo[0]])
        amax.update({n: per_rule[r][n] for n, r in zip(names, combo)})
        q = OrtRunner(build_qdq_model(model, {n: scale_from_amax(a) for n, a in amax.items()}, high_precision="fp32")[0])
        out[combo] = sqnr_db(ref, np.concatenate([q.run(f, ["y"])["y"] for f in feeds]))
    return out


def test_pick_rules_joint_finds_the_exhaustive_best_mix_that_no_single_rule_gives() -> None:
    """Rule "r1" suits x and crushes r (amax a twentieth of its range), "r2" the reverse: the best table mixes
    them, which neither whole table gives; with time enough the greedy moves reach the exhaustive optimum."""
    model, feeds = _conv_model(), _feeds()
    m = _max_abs(model, feeds)
    per_rule = {"r1": {**m, "r": m["r"] / 20}, "r2": {**m, "x": m["x"] / 20}}
    best = _exhaustive(model, per_rule, ["x", "r"], feeds)
    choice = pick_rules_joint(model, per_rule, ("r1", "r2"), lambda: feeds, ["y"], _open, 60.0, {})
    got = (choice.rules["x"], choice.rules["r"])
    assert got == max(best, key=best.get) == ("r1", "r2")
    assert choice.final_db == pytest.approx(best[got], abs=1e-4)
    assert choice.table_scores == pytest.approx({"r1": best[("r1", "r1")], "r2": best[("r2", "r2")]}, abs=1e-4)
    for n in ("x", "r"):  # the winner's measured score is the best of those measured on it
        assert choice.scores[n][choice.rules[n]] >= max(choice.scores[n].values()) - TIE_DB
        assert choice.amax[n] == per_rule[choice.rules[n]][n]
    assert "output SQNR" in choice.why["x"] + choice.why["r"] and choice.skipped == 0
    near = {**per_rule, "r1b": {n: a * 1.01 for n, a in per_rule["r1"].items()}}  # r1's scales within 2%: no run
    again = pick_rules_joint(model, near, ("r1", "r1b", "r2"), lambda: feeds, ["y"], _open, 60.0, {})
    assert "r1b" not in again.table_scores and all(t[1] != "r1b" for t in again.trials)
    assert (again.rules["x"], again.rules["r"]) == got and again.runs == choice.runs


def test_pick_rules_joint_prunes_locally_hopeless_rules_and_stops_at_its_budget() -> None:
    model, feeds = _conv_model(), _feeds()
    m = _max_abs(model, feeds)
    hists = {n: Histogram() for n in ("x", "r")}
    fp32 = OrtRunner(model, extra_outputs=["r"])
    for f in feeds:
        hists["x"].update(f["x"])
        hists["r"].update(fp32.run(f, ["r"])["r"])
    per_rule = {"r1": {**m, "r": m["r"] / 20}, "r2": {**m, "x": m["x"] / 20}, "r3": {**m, "r": m["r"] * 0.8}}
    pruned = pick_rules_joint(model, per_rule, ("r1", "r2", "r3"), lambda: feeds, ["y"], _open, 60.0, hists)
    assert "r1" in pruned.pruned["r"] and "r2" in pruned.pruned["x"]  # a twentieth of the range: far off locally
    assert pruned.rules["x"] != "r2" and pruned.rules["r"] != "r1"
    assert pruned.runs == 0 and "not contested" in pruned.why["r"]  # one rule left per tensor: nothing to run
    near = {**per_rule, "r3": {n: a * 0.97 for n, a in m.items()}}  # x and r contested, r1 / r2 still pruned
    both = pick_rules_joint(model, near, ("r1", "r2", "r3"), lambda: feeds, ["y"], _open, 60.0, hists)
    assert set(both.pruned) == {"x", "r"} and both.runs > 0
    combo = (both.rules["x"], both.rules["r"])  # what was measured is what is chosen, pruning included
    assert both.final_db == pytest.approx(_exhaustive(model, near, ["x", "r"], feeds)[combo], abs=1e-4)
    h = hists["r"]
    local = {k: float(mse_curve(h.counts, h.bin_width, np.array([near[k]["r"]]))[0]) for k in ("r2", "r3")}
    # r1's whole table: on r (where r1 is pruned) the locally best of the rest
    assert both.table_scores["r1"] == pytest.approx(
        _exhaustive(model, near, ["x", "r"], feeds)[("r1", min(local, key=local.get))], abs=1e-4)
    _Counting.runs = 0
    none = pick_rules_joint(model, per_rule, ("r1", "r2"), lambda: feeds, ["y"], _open, 0.0, {})
    assert none.runs == 1 and _Counting.runs == 2 * len(feeds)  # FP32 references + the first table, nothing else
    assert none.skipped == 2 and none.start == "r1" and all("time budget" in none.why[n] for n in ("x", "r"))
    assert none.rules["x"] == "r1" and none.rules["r"] == "r1"


def test_order_moves_puts_the_largest_drop_of_local_noise_first() -> None:
    errors = {"a": {"p": 0.010, "m": 0.004}, "b": {"p": 1e-5, "m": 1e-6}, "c": {"p": 0.02, "m": 0.021}}
    moves = order_moves({"a": "p", "b": "p", "c": "p"}, {"a": ["p", "m"], "b": ["p", "m"], "c": ["p", "m"]},
                        errors, {"a": 2, "b": 0, "c": 1})
    assert [(mv.tensor, mv.rule) for mv in moves] == [("a", "m"), ("b", "m"), ("c", "m")]
    assert moves[1].local_gain_db == pytest.approx(10.0)  # 10 dB better locally, but 1e-5 of its signal: later
    h = Histogram().update(np.full(100, 2.0))
    e = local_errors({"t": h}, {"p": {"t": 2.0}, "m": {"t": 1.0}}, ("p", "m"), ["t"])
    assert e["t"]["m"] == pytest.approx(((h.max_abs - 1.0) ** 2) / (h.max_abs ** 2), rel=0.02)  # clipped to half


def test_calibrate_auto_records_per_tensor_why(tiny_project) -> None:
    import json

    from sppquant.config import load_config
    from sppquant.pipeline.calibrate import calibrate

    result = calibrate(load_config(tiny_project), algorithm="auto", progress=False)
    tensors = json.loads(result.provenance_path.read_text())["tensors"]
    ruled = {n: t for n, t in tensors.items() if "rule" in t}
    assert ruled and all(t["because"] for t in ruled.values())
    assert any(t["because"].startswith(("start", "not contested")) for t in ruled.values())
    for t in ruled.values():  # a tensor with measured scores won on them
        if t["why"]:
            scores = {r: (np.inf if v is None else v) for r, v in t["why"].items()}
            assert scores[t["rule"]] >= max(scores.values()) - TIE_DB


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pick_rules_joint_properties_on_random_rule_tables(seed: int) -> None:
    """Random thresholds for three rules: the result's SQNR is what its own exported model gives (independent
    check), never below the best whole table, and each tensor's winner tops the scores measured on it."""
    model, feeds = _conv_model(), _feeds()
    m = _max_abs(model, feeds)
    rng = np.random.default_rng(seed)
    per_rule = {r: {n: a * float(rng.uniform(0.05, 1.0)) for n, a in m.items()} for r in ("p", "q", "s")}
    choice = pick_rules_joint(model, per_rule, ("p", "q", "s"), lambda: feeds, ["y"], _open, 60.0, {})
    combo = tuple(choice.rules[n] for n in ("x", "r"))
    assert choice.final_db == pytest.approx(_exhaustive(model, per_rule, ["x", "r"], feeds)[combo], abs=1e-4)
    assert choice.final_db >= max(choice.table_scores.values()) - 1e-9
    for n in ("x", "r"):
        assert choice.scores[n][choice.rules[n]] >= max(choice.scores[n].values()) - TIE_DB
