"""The report's main pass: every batch at every size through every precision, into the task's accumulators.

Nothing but accumulators outlives a batch (memory does not grow with the image count);
per-size accumulators merge exactly into the all-sizes column. Latency is the wall time
of the runner's ``run`` per batch, after one warm-up run per precision and size,
divided by the images.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from sppquant.backends.base import Runner
from sppquant.config import Config
from sppquant.data import BadFiles, ImageSet, iter_batches
from sppquant.pipeline.context import ModelContext
from sppquant.report.model import PrecisionResult
from sppquant.tasks import Metrics


def size_key(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@dataclass
class _Timing:
    seconds: float = 0.0
    images: int = 0

    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(1, self.images)


@dataclass
class Evaluation:
    metrics: dict[str, dict[str, Metrics]]  # key -> size key -> accumulator
    timing: dict[str, dict[str, _Timing]]
    bad: BadFiles
    images: int = 0
    warm: set[tuple[str, str]] = field(default_factory=set)


def evaluate(cfg: Config, ctx: ModelContext, runners: Mapping[str, Runner], images: ImageSet, labelled: bool,
             progress: bool = True) -> Evaluation:
    """Stream the evaluation set through every runner; ``runners["fp32"]`` is the reference."""
    sizes = [size_key(s) for s in cfg.input.sizes]
    outputs = list(ctx.outputs)
    ev = Evaluation({k: {s: ctx.task.new_metrics(outputs, labelled) for s in sizes} for k in runners},
                    {k: {s: _Timing() for s in sizes} for k in runners}, BadFiles())
    rep = cfg.report
    for batch in iter_batches(images, cfg.preprocess, cfg.input.sizes, rep.batch_size, "keep", rep.bad_files,
                              cfg.calibration.workers, bad=ev.bad, progress=progress, desc="report",
                              extra_feeds=ctx.extra_feeds):
        ev.images += batch.size
        for k, s in enumerate(sizes):
            feeds = batch.feeds(k, cfg.model.input_name)
            outs = {key: _timed_run(ev, key, s, runner, feeds, outputs, batch.size) for key, runner in runners.items()}
            extra = batch.extra[k] if batch.extra else {}  # e.g. the rois a detection task decodes against
            targets = ctx.task.targets(batch.labels, batch.geometry[k]) if hasattr(ctx.task, "targets") \
                else batch.labels
            for key in runners:
                ev.metrics[key][s].update({**outs["fp32"], **extra}, {**outs[key], **extra}, targets)
    return ev


def _timed_run(ev: Evaluation, key: str, s: str, runner: Runner, feeds: dict[str, Any], outputs: list[str],
               n: int) -> dict[str, Any]:
    if (key, s) not in ev.warm:
        runner.run(feeds, outputs)  # warm-up: allocations and first-run costs are not latency
        ev.warm.add((key, s))
    t0 = time.perf_counter()
    out = runner.run(feeds, outputs)
    ev.timing[key][s].seconds += time.perf_counter() - t0
    ev.timing[key][s].images += n
    return out


def precision_results(ev: Evaluation, info: Mapping[str, dict[str, Any]]) -> dict[str, PrecisionResult]:
    """Per column: the per-size results and their exact merge over all sizes."""
    out = {}
    for key, per_size in ev.metrics.items():
        sizes = {s: {**m.result(), "latency_ms_per_image": ev.timing[key][s].ms_per_image()}
                 for s, m in per_size.items()}
        pooled = reduce(lambda a, b: a.merge(b), per_size.values()).result()
        pooled.pop("images", None)
        seconds = sum(t.seconds for t in ev.timing[key].values())
        timed = sum(t.images for t in ev.timing[key].values())
        spec = info[key]
        out[key] = PrecisionResult(key, spec["precision"], pooled, sizes, ev.images, ev.images * len(per_size),
                                   1000.0 * seconds / max(1, timed), spec.get("algorithm"), spec.get("model"),
                                   spec.get("engine"))
    return out
