"""`sppquant tune`: the largest INT8 set that meets an accuracy budget, confirmed on held-out images.

Steps:

1. The table of the chosen algorithm (default ``auto``), from `resolve_table`.
2. The evaluation images split deterministically: even positions tune, odd positions
   confirm (so the budget is not met by fitting the images it is checked on).
3. Sensitivity on the tune split: every quantized tensor's OUTPUT SQNR when quantized
   alone (`report_layers`); most sensitive first.
4. Keep the ``k`` most sensitive tensors in high precision (no Q/DQ; their readers run in
   FP16 / FP32), ``k`` = 0, 1, 2, 4, ... until the metric drop on the tune split is within
   the budget, then bisect between the last two ``k``: each step is one evaluation of the
   INT8 model, and the curve of metric against ``k`` is kept.
5. The chosen plan evaluated on the held-out split: the plan says whether the budget holds
   there too. The metric is the task's primary one (classification: top-1 with labels,
   else agreement) or the one asked for.

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
from sppquant.config import Config
from sppquant.data import ImageSet
from sppquant.errors import UserError
from sppquant.pipeline.context import ModelContext, open_model, ort_runner
from sppquant.pipeline.precision_plan import PLAN_FORMAT, PrecisionPlan, read_plan  # noqa: F401 - re-exported
from sppquant.pipeline.report import detection_ground_truth, evaluation_set
from sppquant.pipeline.report_eval import evaluate
from sppquant.pipeline.report_layers import analyse_layers
from sppquant.pipeline.tables import resolve_tables
from sppquant.quantize.qdq import build_qdq_model

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
    qdq = build_qdq_model(ctx.model, choice.table)
    layers = analyse_layers(cfg, ctx, choice.table, qdq, tune_set, cfg.report.layer_images, progress)
    ranked = [r.name for r in layers.rows if r.quantized]  # most sensitive first

    def evaluate_k(k: int, on: ImageSet = tune_set) -> tuple[float, float]:
        model_q, _ = build_qdq_model(ctx.model, choice.table, keep_high_precision=ranked[:k])
        return _metric_fn(cfg, ctx, model_q, on, metric)

    k, curve, fp32 = search_smallest_k(evaluate_k, len(ranked), max_drop, metric)
    h_fp32, h_int8 = evaluate_k(k, holdout)
    met = within_budget(h_fp32, h_int8, max_drop, metric)
    plan = PrecisionPlan(str(cfg.model.path), str(choice.path), algorithm, metric, max_drop, fp32, ranked[:k],
                         curve, len(ranked), len(tune_set), len(holdout), h_fp32, h_int8, met)
    if not met:
        plan.notes.append(f"the budget is NOT met on the held-out images: {metric} {h_int8:.4f} vs FP32 {h_fp32:.4f}")
        log.warning("%s", plan.notes[-1])
    plan.write(output)
    atomic_write_bytes(output.with_suffix(".png"), plot_curve(plan))
    return plan


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
    ks, vs = zip(*plan.curve) if plan.curve else ((), ())
    ax.plot(ks, vs, "o-", label=f"INT8 + k tensors in high precision ({plan.algorithm})")
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
