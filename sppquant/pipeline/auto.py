"""Per-tensor rule choice by measured effect on the model output (the ``auto`` algorithm).

`choose_rules` (what ``calibrate --algorithm auto`` runs) computes every candidate rule's thresholds
from the same exact histograms and hands them to `auto_joint.pick_rules_joint`: whole rule choices
judged jointly by the INT8 model's output SQNR, within the histogram pass's own time (so ``auto``
costs at most about 2x ``entropy2``); see that module.

`pick_rules` is the exhaustive reference it replaced, kept for benchmarks and tune's ranking
(`output_sqnr_alone`): on the first ``AUTO_IMAGES`` calibration images at every size, each tensor
is quantized ALONE with each rule's scale (one switchable session per rule,
`sppquant.quantize.switchable`) and the model output is compared with FP32 (SQNR). Each tensor
gets the rule with the highest output SQNR; near ties (within ``TIE_DB``) go to the earlier rule in
``candidates``. Tensors whose candidates agree cost nothing, rules agreeing on a scale share one
run, and a rule whose own histogram error is more than ``PRUNE_DB`` above the best rule's is not
run; graph outputs are judged by their own rounding error. Its cost is contested tensors x rules x
images forward passes (12-80x entropy2 on the real models, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from sppquant.calibration.collect import ActivationCollector
from sppquant.calibration.histogram import Histogram
from sppquant.calibration.mse import mse_curve
from sppquant.calibration.table import scale_from_amax
from sppquant.calibration.thresholds import thresholds
from sppquant.calibration.tying import tie_sources
from sppquant.config import Config
from sppquant.data import calibration_set
from sppquant.errors import ModelError, TableError
from sppquant.pipeline.auto_joint import JOINT_IMAGES, pick_rules_joint
from sppquant.pipeline.context import ModelContext, image_feeds, ort_runner
from sppquant.quantize.qdq import build_qdq_model, fake_quantize
from sppquant.quantize.switchable import switch_feeds, switchable_model
from sppquant.tasks.metrics import SqnrAccumulator

log = logging.getLogger(__name__)

AUTO_IMAGES = 16
TIE_DB = 0.05
# A rule whose own expected squared error on a tensor is over 10x (10 dB) the best rule's is not run at the
# output (the output contest is what makes auto slow); benchmarks/RESULTS.md measures what this changes.
PRUNE_DB = 10.0
# Rules whose scales differ by less than this (relative) share one run: rounding noise grows with scale^2, so
# 2% moves it by 0.17 dB (where neither rule clips much; the earlier rule in ``candidates`` is kept).
SCALE_REL_TOL = 0.02


@dataclass
class Choice:
    amax: dict[str, float]
    rules: dict[str, str]  # tensor -> winning rule
    scores: dict[str, dict[str, float]]  # tensor -> rule -> output SQNR (dB; inf: identical)
    degenerate: list[str]
    pruned: dict[str, dict[str, float]] = field(default_factory=dict)  # tensor -> rule -> local error gap (dB)
    why: dict[str, str] = field(default_factory=dict)  # tensor -> one line: why its rule won


RunnerFactory = Callable[[onnx.ModelProto], AbstractContextManager[Any]]  # model -> runner with .run(feeds, outputs)


def choose_rules(cfg: Config, ctx: ModelContext, collector: ActivationCollector, candidates: tuple[str, ...],
                 progress: bool = True, pass_s: float | None = None) -> Choice:
    """The per-tensor rule and amax, by `auto_joint.pick_rules_joint` within one histogram pass's time.

    ``pass_s``: the wall time of the histogram pass (None where the histograms came from elsewhere: then
    estimated as the FP32 forward time of the contest images times the images the pass saw). Everything
    auto adds (every candidate's thresholds, the contest) fits in that time, so ``auto`` costs at most
    about 2x ``entropy2``.
    """
    t0 = time.perf_counter()
    per_rule, degenerate = {}, set()
    for rule in candidates:
        amax, degen = thresholds(collector.histograms, rule, cfg.calibration.algorithm_params(rule))
        per_rule[rule] = amax
        degenerate |= set(degen)
    ties = tie_sources(ctx.model) if cfg.calibration.tie_scales else {}
    ties = {out: src for out, src in ties.items() if src in collector.histograms}  # their amax is the source's
    budget = None if pass_s is None else max(0.0, pass_s - (time.perf_counter() - t0))
    joint = pick_rules_joint(ctx.model, per_rule, candidates, lambda: _feeds(cfg, ctx, JOINT_IMAGES),
                             list(ctx.outputs), lambda m: ort_runner(cfg, m), budget, collector.histograms, ties,
                             pass_images=collector.images * len(cfg.input.sizes))
    scores = {n: dict(v) for n, v in joint.scores.items()}
    return Choice(joint.amax, joint.rules, scores, sorted(degenerate), joint.pruned, joint.why)


def pick_rules(model: onnx.ModelProto, per_rule: Mapping[str, Mapping[str, float]], candidates: Sequence[str],
               feeds: Callable[[], list[dict[str, np.ndarray]]], outputs: list[str], open_runner: RunnerFactory,
               progress: bool = True, hists: Mapping[str, Histogram] | None = None,
               tied: Collection[str] = (), only: Collection[str] | None = None) -> Choice:
    """Per tensor, the rule of ``per_rule`` (rule -> tensor -> amax) whose INT8 tensor alone changes the output
    least on ``feeds()`` (called only when some tensor is contested); any ONNX model and runner (benchmarks).

    Only distinct scales are run (rules agreeing on a tensor's scale share one run), and with ``hists`` a rule
    whose expected squared error on the tensor's own histogram is more than ``PRUNE_DB`` above the best rule's
    is not run at all (recorded in ``Choice.pruned``): the output contest is the expensive part of ``auto``.
    Scales within ``SCALE_REL_TOL`` count as one; ``tied`` tensors (their amax is overwritten by a scale tie
    afterwards) and, with ``only``, tensors outside it (not quantized by the INT8 model) are not contested.
    """
    names = list(next(iter(per_rule.values())))
    pruned = _pruned(per_rule, candidates, hists) if hists is not None else {}
    runs: dict[str, list[str]] = {r: [] for r in candidates}  # rule -> tensors it is run on
    alias: dict[str, dict[str, str]] = {}  # tensor -> rule -> the earlier rule with the same scale
    contested = []
    for n in names:
        if n in tied or (only is not None and n not in only):
            continue
        alive = [r for r in candidates if r not in pruned.get(n, {})]
        owners = _owners({r: scale_from_amax(per_rule[r][n]) for r in alive})
        if len(set(owners.values())) > 1:
            contested.append(n)
            for r in alive:
                if owners[r] == r:
                    runs[r].append(n)
                else:
                    alias.setdefault(n, {})[r] = owners[r]
    scores = _score(model, per_rule, runs, feeds, outputs, open_runner, progress) if contested else {}
    for n, owners in alias.items():
        for r, owner in owners.items():
            scores[n][r] = scores[n][owner]
    rules, amax = {}, {}
    for n in names:
        alive = [r for r in candidates if r not in pruned.get(n, {})]
        rule = alive[0]
        if n in scores:
            best = max(scores[n].values())
            rule = next(r for r in alive if scores[n][r] >= best - TIE_DB)
        rules[n], amax[n] = rule, per_rule[rule][n]
    counts = {r: sum(1 for v in rules.values() if v == r) for r in candidates}
    log.info("auto: rules per tensor %s (%d of %d tensors contested, %d single-tensor runs)", counts, len(contested),
             len(names), sum(len(v) for v in runs.values()))
    return Choice(amax, rules, scores, [], pruned)


def quantized_tensors(model: onnx.ModelProto, amax: Mapping[str, float]) -> set[str] | None:
    """The activations the INT8 Q/DQ model quantizes (the placement rules), or None (all) where it cannot be built.

    Quantizing a tensor no INT8 layer reads changes nothing the exported model runs, so contesting its rule
    only costs time. TensorRT 10's implicit mode chooses its INT8 layers itself and may use other tensors'
    ranges too: those keep the first candidate's threshold (``mse``), uncontested.
    """
    try:
        _, info = build_qdq_model(model, {n: scale_from_amax(a) for n, a in amax.items() if a > 0},
                                  high_precision="fp32")
    except (ModelError, TableError) as exc:
        log.info("auto: contesting every tensor (%s)", exc)
        return None
    return set(info.activations)


def _owners(scales: Mapping[str, float]) -> dict[str, str]:
    """rule -> the first rule (in order) whose scale is within SCALE_REL_TOL of its own (itself if none)."""
    owners: dict[str, str] = {}
    for r, sc in scales.items():
        owners[r] = next((o for o in owners if owners[o] == o and abs(sc - scales[o]) <= SCALE_REL_TOL * max(
            abs(scales[o]), 1e-30)), r)
    return owners


def _pruned(per_rule: Mapping[str, Mapping[str, float]], candidates: Sequence[str],
            hists: Mapping[str, Histogram]) -> dict[str, dict[str, float]]:
    """tensor -> {rule: dB its own expected squared error lies above the best rule's}, for gaps > PRUNE_DB."""
    out: dict[str, dict[str, float]] = {}
    for n, h in hists.items():
        if n not in per_rule[candidates[0]] or h.count == 0 or h.bin_width == 0.0:
            continue
        err = mse_curve(h.counts, h.bin_width, np.array([per_rule[r][n] for r in candidates]))
        best = float(err.min())
        if best <= 0.0:
            continue
        gaps = {r: 10 * math.log10(float(e) / best) for r, e in zip(candidates, err)}
        far = {r: round(g, 1) for r, g in gaps.items() if g > PRUNE_DB}
        if far:
            out[n] = far
    return out


def _score(model: onnx.ModelProto, per_rule: Mapping[str, Mapping[str, float]], runs: Mapping[str, list[str]],
           feeds: Callable[[], list[dict[str, np.ndarray]]], outputs: list[str], open_runner: RunnerFactory,
           progress: bool) -> dict[str, dict[str, float]]:
    data = feeds()
    with open_runner(model) as fp32:
        refs = [fp32.run(f, outputs) for f in data]
    steps = sum(len([n for n in v if n not in outputs]) for v in runs.values())
    scores: dict[str, dict[str, float]] = {}
    with tqdm(total=steps, desc="auto: rules per tensor", unit="run", disable=None if progress else True) as bar:
        for rule, names in runs.items():
            if names:
                for n, db in output_sqnr_alone(model, per_rule[rule], names, data, refs, outputs, open_runner,
                                               bar).items():
                    scores.setdefault(n, {})[rule] = db
    return scores


def _feeds(cfg: Config, ctx: ModelContext, count: int = AUTO_IMAGES) -> list[dict[str, np.ndarray]]:
    return image_feeds(cfg, ctx, calibration_set(cfg.calibration), count, cfg.calibration.batch_size)


def output_sqnr_alone(model: onnx.ModelProto, amax: Mapping[str, float], names: Sequence[str],
                      feeds: Sequence[dict[str, np.ndarray]], refs: Sequence[Mapping[str, np.ndarray]],
                      outputs: list[str], open_runner: RunnerFactory, bar: tqdm | None = None) -> dict[str, float]:
    """Output SQNR (dB, pooled over ``feeds``) when each of ``names`` ALONE is quantized with its ``amax``.

    One switchable session serves every tensor (bounded memory); a graph output quantized alone changes
    by exactly its own rounding error, computed directly. ``refs``: the FP32 outputs for ``feeds``.
    """
    switched = [n for n in names if n not in outputs]
    out: dict[str, float] = {}
    if switched:
        q, flags = switchable_model(model, {n: scale_from_amax(amax[n]) for n in switched}, switched)
        with open_runner(q) as runner:
            for n in switched:
                acc = SqnrAccumulator()
                on = switch_feeds(flags, n)
                for f, ref in zip(feeds, refs):
                    y = runner.run({**f, **on}, outputs)
                    for o in outputs:
                        acc.add(ref[o], y[o])
                out[n] = acc.db
                if bar is not None:
                    bar.update(1)
    for n in names:
        if n in outputs:
            acc = SqnrAccumulator()
            for ref in refs:
                acc.add(ref[n], fake_quantize(ref[n], scale_from_amax(amax[n])))
            out[n] = acc.db
    return out
