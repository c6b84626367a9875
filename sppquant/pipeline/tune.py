"""`sppquant tune`: the largest INT8 set that meets an accuracy budget, confirmed on held-out images.

Steps:

1. The table of the chosen algorithm (default ``auto``), from `resolve_table`.
2. The evaluation images split deterministically: even positions tune, odd positions
   confirm (so the budget is not met by fitting the images it is checked on).
3. The search (`sppquant.pipeline.tune_search.greedy_search`): from the all-INT8 model, each
   quantized tensor's effect is measured IN CONTEXT (everything else INT8): how much the output
   noise energy vs FP32 on ``report.layer_images`` tune images drops when that tensor (and
   its readers) leave INT8. The best 1, 2, 4, ... tensors are kept, re-measuring after each
   group, and the task metric is evaluated once per group on the tune split. Once the budget
   holds, the last group is bisected and every kept tensor is tried back in INT8 (one
   evaluation each). The curve of the metric against the number of tensors kept is recorded.
4. The chosen plan evaluated on the held-out split: the plan says whether the budget holds
   there too. The metric is the task's primary one (classification: top-1 with labels,
   else agreement) or the one asked for. When even every tensor out of INT8 misses the budget
   on the tune split (the model in the high precision alone misses it, or the metric is too
   noisy for it), the plan keeps them all, ``met`` is False and its notes say why.

The plan (JSON) is what `export-qdq --plan` applies (no Q/DQ on the kept tensors) and what
TensorRT 10 users get from the table without those tensors plus layer precision
constraints (see docs/tensorrt.md); a PNG plots the curve.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sppquant.atomic import atomic_write_bytes, check_writable
from sppquant.calibration.table import CalibrationTable
from sppquant.config import Config
from sppquant.data import ImageSet
from sppquant.errors import UserError
from sppquant.pipeline.context import ModelContext, open_model, ort_runner
from sppquant.pipeline.precision_plan import PLAN_FORMAT, PrecisionPlan, read_plan  # noqa: F401 - re-exported
from sppquant.pipeline.report import detection_ground_truth, evaluation_set
from sppquant.pipeline.report_eval import evaluate
from sppquant.pipeline.report_layers import _layer_feeds
from sppquant.pipeline.tables import resolve_tables
from sppquant.pipeline.tune_search import PlanState, greedy_search
from sppquant.pipeline.weight_rounding import QdqExtras, qdq_extras
from sppquant.quantize.qdq import build_qdq_model
from sppquant.tasks.metrics import SqnrAccumulator

log = logging.getLogger(__name__)

def _split(images: ImageSet) -> tuple[ImageSet, ImageSet]:
    def part(idx: range) -> ImageSet:
        labels = tuple(images.labels[i] for i in idx) if images.labels is not None else None
        return replace(images, paths=tuple(images.paths[i] for i in idx), labels=labels)

    return part(range(0, len(images), 2)), part(range(1, len(images), 2))


def _metric_fn(cfg: Config, ctx: ModelContext, model_q: Any, images: ImageSet, metric: str) -> tuple[float, float]:
    """(FP32 value, INT8 value) of ``metric`` on ``images``."""
    with ort_runner(cfg, ctx.model) as fp32, ort_runner(cfg, model_q) as int8:
        ev = evaluate(cfg, ctx, {"fp32": fp32, "int8": int8}, images, images.labels is not None, progress=False)
    res = {k: _merged(v) for k, v in ev.metrics.items()}
    return res["fp32"].get(metric, math.nan), res["int8"].get(metric, math.nan)


def _merged(per_size: dict) -> dict:
    acc = None
    for m in per_size.values():
        acc = m if acc is None else acc.merge(m)
    return acc.result()


def tune(cfg: Config, max_drop: float, output: str | Path, metric: str | None = None, algorithm: str = "auto",
         progress: bool = True, force: bool = False) -> PrecisionPlan:
    """Find and write the precision plan (``output``, plus ``<output>.png``); see the module docstring."""
    output = check_writable(output, "precision plan")
    if not 0 <= max_drop < 1:
        raise UserError(f"--max-drop: expected a fraction in [0, 1) (0.005 = half a point), got {max_drop}")
    ctx = open_model(cfg)
    images, notes = evaluation_set(cfg)
    ctx, images = detection_ground_truth(cfg, ctx, images, notes)  # detection: COCO ids as labels, mAP@.5
    if len(images) < 4:
        raise UserError(f"{cfg.report.images}: tune needs at least 4 evaluation images (tune and held-out halves)")
    metric = metric or (ctx.task.primary if images.labels is not None else "agreement")
    if metric == "agreement" and ctx.task.name != "classification":
        metric = "sqnr_db"
    tune_set, holdout = _split(images)
    choice = resolve_tables(cfg, [algorithm], force=force, progress=progress)[algorithm]
    weights = qdq_extras(cfg, ctx, choice.path, progress)  # the INT8 model tune judges is export-qdq's
    _, info = build_qdq_model(ctx.model, choice.table, **weights.kwargs())  # the tensors export-qdq quantizes
    tensors = list(info.activations)
    proxy = _noise_proxy(cfg, ctx, choice.table, tune_set, progress, weights)

    def evaluate(state: PlanState, on: ImageSet = tune_set) -> tuple[float, float]:
        model_q, _ = build_qdq_model(ctx.model, choice.table, keep_high_precision=state.keep, **weights.kwargs())
        return _metric_fn(cfg, ctx, model_q, on, metric)

    found = greedy_search(tensors, proxy, evaluate, lambda ref, got: within_budget(ref, got, max_drop, metric))
    h_fp32, h_int8 = evaluate(found.state, holdout)
    met = found.met and within_budget(h_fp32, h_int8, max_drop, metric)
    plan = PrecisionPlan(str(cfg.model.path), str(choice.path), algorithm, metric, max_drop, found.ref,
                         list(found.state.keep), found.curve, len(tensors), len(tune_set), len(holdout), h_fp32, h_int8,
                         met, search="greedy", evaluations=found.evaluations + 1, proxy_runs=found.proxy_runs)
    plan.notes += _notes(plan, found.met, found.got)
    for note in plan.notes:
        log.warning("%s", note)
    plan.write(output)
    atomic_write_bytes(output.with_suffix(".png"), plot_curve(plan))
    return plan


def _notes(plan: PrecisionPlan, tune_met: bool, tune_got: float) -> list[str]:
    """What the user must know: the budget missed, and where (tune split, held-out split)."""
    m, notes = plan.metric, []
    if not tune_met:
        notes.append(f"the budget is NOT met on the tune images even with all {plan.quantized_tensors} quantized "
                     f"tensors out of INT8: {m} {tune_got:.4f} vs FP32 {plan.fp32:.4f} (max drop {plan.max_drop:g}); "
                     "the high-precision model itself misses it, or the metric moves more than the budget "
                     "between runs on these images: allow a larger --max-drop or evaluate on more images")
    if not plan.met:
        notes.append(f"the budget is NOT met on the held-out images: {m} {plan.holdout_int8:.4f} vs FP32 "
                     f"{plan.holdout_fp32:.4f}")
    if plan.met and plan.quantized_tensors and len(plan.kept_high_precision) > 0.1 * plan.quantized_tensors:
        notes.append(f"{len(plan.kept_high_precision)} of {plan.quantized_tensors} quantized tensors kept out of "
                     f"INT8 ({1 - len(plan.kept_high_precision) / plan.quantized_tensors:.0%} INT8): under 90% INT8")
    return notes


def _noise_proxy(cfg: Config, ctx: ModelContext, table: CalibrationTable, images: ImageSet,
                 progress: bool, weights: QdqExtras | None = None) -> Callable[[PlanState], float]:
    """The search's proxy: output noise energy / signal energy vs FP32 (1 / output SQNR, linear) on the first
    ``report.layer_images`` tune images, for the plan's Q/DQ model."""
    feeds = _layer_feeds(cfg, ctx, images, cfg.report.layer_images, progress)
    outputs = list(ctx.outputs)
    with ort_runner(cfg, ctx.model) as fp32:
        refs = [fp32.run(f, outputs) for f in feeds]

    def proxy(state: PlanState) -> float:
        model_q, _ = build_qdq_model(ctx.model, table, keep_high_precision=state.keep,
                                     **(weights or QdqExtras()).kwargs())
        acc = SqnrAccumulator()
        with ort_runner(cfg, model_q) as run:
            for f, ref in zip(feeds, refs):
                y = run.run(f, outputs)
                for o in outputs:
                    acc.add(ref[o], y[o])
        return acc.noise / max(acc.signal, 1e-30)

    return proxy


def within_budget(ref: float, got: float, max_drop: float, metric: str) -> bool:
    if metric == "sqnr_db":  # no task metric: a drop budget in dB makes no sense; 30 dB is the bar
        return got >= 30.0 or math.isinf(got)
    return ref - got <= max_drop + 1e-12


def search_smallest_k(evaluate_k: Callable[[int], tuple[float, float]], n: int, max_drop: float,
            metric: str) -> tuple[int, list[list[float]], float]:
    """Smallest k (tensors kept in high precision) meeting the budget: doubling, then bisection."""
    seen: dict[int, float] = {}

    def ok(k: int) -> bool:
        ref, got = evaluate_k(k)
        seen[k] = got
        ok.ref = ref  # type: ignore[attr-defined]
        log.info("tune: %d tensor(s) in high precision -> %s %.4f (FP32 %.4f)", k, metric, got, ref)
        return within_budget(ref, got, max_drop, metric)

    lo, k = -1, 0
    while not ok(k):
        if k >= n:
            break
        lo, k = k, min(n, max(1, 2 * k))
    hi = k
    while hi - lo > 1 and lo >= 0:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, [[kk, v] for kk, v in sorted(seen.items())], ok.ref  # type: ignore[attr-defined]


def plot_curve(plan: PrecisionPlan) -> bytes:
    import io  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6, 3.6))
    pts = sorted((k, v) for k, v in plan.curve)  # a search may evaluate several sets of one size: all are shown
    ks, vs = zip(*pts) if pts else ((), ())
    ax.plot(ks, vs, "o", label=f"INT8 + k tensors in high precision ({plan.algorithm}; {plan.search} search)")
    best: dict[float, float] = {}
    for k, v in pts:
        best[k] = max(best.get(k, v), v)
    if best:
        ax.plot(list(best), list(best.values()), "-", color="C0", alpha=0.5)
    ax.axhline(plan.fp32, color="k", ls=":", label="FP32")
    if plan.metric != "sqnr_db":
        ax.axhline(plan.fp32 - plan.max_drop, color="#c44e52", ls="--", label=f"budget (-{plan.max_drop:g})")
    ax.axvline(len(plan.kept_high_precision), color="#55a868", ls="--", label="chosen")
    ax.set_xlabel(f"tensors kept in high precision (of {plan.quantized_tensors})")
    ax.set_ylabel(plan.metric)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
