"""Per-tensor rule choice by measured effect on the model output (the ``auto`` algorithm).

For each candidate rule (the algorithm's ``candidates``) the thresholds of every tensor
come from the same exact histograms; then, on the first ``AUTO_IMAGES`` calibration images
at every size, each tensor is quantized ALONE with each rule's scale (one switchable
session per rule, `sppquant.quantize.switchable`) and the model output is compared with
FP32 (SQNR). Each tensor gets the rule with the highest output SQNR; near ties (within
``TIE_DB``) go to the earlier rule in ``candidates``. Tensors whose candidates agree cost
nothing; graph outputs are judged by their own rounding error. The provenance records per
tensor which rule won and every rule's SQNR.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from sppquant.calibration.collect import ActivationCollector
from sppquant.calibration.table import scale_from_amax
from sppquant.calibration.thresholds import thresholds
from sppquant.config import Config
from sppquant.data import BadFiles, calibration_set, iter_batches
from sppquant.pipeline.context import ModelContext, ort_runner
from sppquant.quantize.qdq import fake_quantize
from sppquant.quantize.switchable import switch_feeds, switchable_model
from sppquant.tasks.metrics import SqnrAccumulator

log = logging.getLogger(__name__)

AUTO_IMAGES = 16
TIE_DB = 0.05


@dataclass
class Choice:
    amax: dict[str, float]
    rules: dict[str, str]  # tensor -> winning rule
    scores: dict[str, dict[str, float]]  # tensor -> rule -> output SQNR (dB; inf: identical)
    degenerate: list[str]


def choose_rules(cfg: Config, ctx: ModelContext, collector: ActivationCollector, candidates: tuple[str, ...],
                 progress: bool = True) -> Choice:
    """The per-tensor rule and amax; see the module docstring."""
    per_rule, degenerate = {}, set()
    for rule in candidates:
        amax, degen = thresholds(collector.histograms, rule, cfg.calibration.algorithm_params(rule))
        per_rule[rule] = amax
        degenerate |= set(degen)
    names = list(collector.histograms)
    contested = [n for n in names if len({scale_from_amax(per_rule[r][n]) for r in candidates}) > 1]
    scores = _output_sqnr(cfg, ctx, per_rule, contested, progress) if contested else {}
    rules, amax = {}, {}
    for n in names:
        rule = candidates[0]
        if n in scores:
            best = max(scores[n].values())
            rule = next(r for r in candidates if scores[n][r] >= best - TIE_DB)
        rules[n], amax[n] = rule, per_rule[rule][n]
    counts = {r: sum(1 for v in rules.values() if v == r) for r in candidates}
    log.info("auto: rules per tensor %s (%d of %d tensors contested)", counts, len(contested), len(names))
    return Choice(amax, rules, scores, sorted(degenerate))


def _feeds(cfg: Config, ctx: ModelContext) -> list[dict[str, np.ndarray]]:
    images = calibration_set(cfg.calibration)
    subset = replace(images, paths=images.paths[:AUTO_IMAGES])
    cal = cfg.calibration
    out = []
    for batch in iter_batches(subset, cfg.preprocess, cfg.input.sizes, cal.batch_size, "keep", "skip", cal.workers,
                              bad=BadFiles(), progress=False, extra_feeds=ctx.extra_feeds):
        out += [batch.feeds(k, cfg.model.input_name) for k in range(len(cfg.input.sizes))]
    return out


def _output_sqnr(cfg: Config, ctx: ModelContext, per_rule: Mapping[str, Mapping[str, float]], contested: list[str],
                 progress: bool) -> dict[str, dict[str, float]]:
    feeds = _feeds(cfg, ctx)
    outputs = list(ctx.outputs)
    with ort_runner(cfg, ctx.model) as fp32:
        refs = [fp32.run(f, outputs) for f in feeds]
    switched = [n for n in contested if n not in outputs]
    scores: dict[str, dict[str, float]] = {n: {} for n in contested}
    steps = len(per_rule) * len(switched)
    with tqdm(total=steps, desc="auto: rules per tensor", unit="run", disable=None if progress else True) as bar:
        for rule, amax in per_rule.items():
            scales = {n: scale_from_amax(amax[n]) for n in switched}
            model, flags = switchable_model(ctx.model, scales, switched)
            with ort_runner(cfg, model) as runner:
                for n in switched:
                    acc = SqnrAccumulator()
                    on = switch_feeds(flags, n)
                    for f, ref in zip(feeds, refs):
                        y = runner.run({**f, **on}, outputs)
                        for o in outputs:
                            acc.add(ref[o], y[o])
                    scores[n][rule] = acc.db
                    bar.update(1)
            for n in contested:
                if n in outputs:  # an output quantized alone changes by exactly its own rounding error
                    acc = SqnrAccumulator()
                    for ref in refs:
                        acc.add(ref[n], fake_quantize(ref[n], scale_from_amax(amax[n])))
                    scores[n][rule] = acc.db
    return scores
