"""Shard jobs of `calibrate` and `report`: module-level functions a Ray worker imports, picklable arguments.

Calibration shards keep one process's batch structure: shard boundaries fall on multiples
of the batch size, and with more than one shard each shard defers its final partial batch
(the end of its range, or a batch a bad file left short) to one tail job that runs the
deferred images in listing order with the configured ``last_batch``. Without bad files
every batch equals the one-process batch; with bad files the image set used is the same
under ``keep``, and under ``drop`` the same number of images (the remainder) is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import reduce
from pathlib import Path
from typing import Any

import onnx

from sppquant.calibration.collect import ActivationCollector, ThreadedFeed, feed_threads
from sppquant.calibration.derive import derivations
from sppquant.config import Config
from sppquant.data import BadFiles, ImageSet, iter_batches
from sppquant.errors import DataError
from sppquant.model import activation_names, weighted_layer_inputs
from sppquant.pipeline.context import open_model, ort_runner
from sppquant.pipeline.executor import Executor, split
from sppquant.pipeline.report_eval import Evaluation, evaluate


def subset(images: ImageSet, indices: tuple[int, ...]) -> ImageSet:
    """The images at ``indices`` (labels follow), same root and selection record."""
    labels = tuple(images.labels[i] for i in indices) if images.labels is not None else None
    return replace(images, paths=tuple(images.paths[i] for i in indices), labels=labels)


@dataclass(frozen=True)
class CalibrationJob:
    """One shard: only its own images travel (``indices``: their positions in the full list)."""

    cfg: Config
    images: ImageSet
    indices: tuple[int, ...]
    defer_partial: bool  # shards of a multi-shard run: hand the final partial batch to the tail job
    progress: bool = False


@dataclass
class CalibrationPart:
    collector: ActivationCollector
    bad: list[tuple[str, str]] = field(default_factory=list)
    deferred: tuple[int, ...] = ()  # indices (into the full image set) of the unprocessed partial batch(es)


def calibration_shard(job: CalibrationJob) -> CalibrationPart:
    """Stream one shard through the FP32 model into histograms (a Ray task body; also run in-process)."""
    cfg, cal = job.cfg, job.cfg.calibration
    ctx = open_model(cfg)
    names = activation_names(ctx.model)
    # idle ORT threads sleep instead of spinning: binning threads run beside the session
    runner = ort_runner(cfg, ctx.model, extra_outputs=names, spinning=False)
    collector = ActivationCollector(names, derivations(ctx.model, names), weighted_layer_inputs(ctx.model))
    bad = BadFiles()
    deferred: tuple[int, ...] = ()
    outputs = [n for n in names if n not in set(runner.input_names)]
    sub = job.images
    last = "keep" if job.defer_partial else cal.last_batch
    try:
        # binning threads work on one batch while ONNX Runtime computes the next; several Ray workers
        # may share a machine, so there only calibration.workers threads each
        threads = cal.workers if cfg.executor.kind == "ray" else feed_threads(cal.workers, runner.threads)
        with runner, ThreadedFeed(collector, threads) as feed:
            for batch in iter_batches(sub, cfg.preprocess, cfg.input.sizes, cal.batch_size, last, cal.bad_files,
                                      cal.workers, bad=bad, progress=job.progress, desc="calibrate",
                                      extra_feeds=ctx.extra_feeds):
                if job.defer_partial and batch.size < cal.batch_size:  # partial batches come last
                    deferred += tuple(job.indices[i] for i in batch.indices)
                    continue
                for k in range(len(cfg.input.sizes)):
                    feeds = batch.feeds(k, cfg.model.input_name)
                    feed.submit({**feeds, **runner.run(feeds, outputs)})
                collector.count_batch(batch.size)
            feed.wait()
            collector.finish()  # Pad/Concat/Reshape... outputs: merged from their inputs' histograms, exactly
    except DataError:
        if len(bad) != len(sub) or len(sub) == 0:  # a whole shard of bad files is not an error of the run
            raise
    return CalibrationPart(collector, list(bad.items), tuple(sorted(deferred)))


def collect_sharded(cfg: Config, images: ImageSet, executor: Executor,
                    progress: bool = True) -> tuple[ActivationCollector, BadFiles]:
    """Histograms of every calibration image, shards on ``executor``, merged exactly in shard order."""
    shards = split(len(images), executor.workers, cfg.calibration.batch_size)
    many = len(shards) > 1
    jobs = [CalibrationJob(cfg, subset(images, tuple(range(s.start, s.stop))), tuple(range(s.start, s.stop)), many,
                           progress and executor.name == "local") for s in shards]
    parts = executor.map(calibration_shard, jobs, [s.label for s in shards], "calibrate", progress)
    deferred = tuple(i for p in parts for i in p.deferred)
    if deferred:
        tail = CalibrationJob(cfg, subset(images, deferred), deferred, False, False)
        parts += executor.map(calibration_shard, [tail], [f"tail ({len(deferred)} deferred images)"], "calibrate",
                              progress)
    bad = BadFiles([item for p in parts for item in p.bad])
    collector = reduce(lambda a, b: a.merge(b), [p.collector for p in parts])
    if len(bad) == len(images):
        first = f" (first: {bad.items[0][0]}: {bad.items[0][1]})" if bad.items else ""
        raise DataError(f"all {len(images)} image(s) were rejected as unreadable{first}")
    return collector, bad


# --------------------------------------------------------------------------- report: evaluation


@dataclass(frozen=True)
class EvaluationJob:
    """One shard of the report's main pass (its own images only); models come from paths every worker can read."""

    cfg: Config
    images: ImageSet
    backend: str
    algorithms: tuple[str, ...]
    qdq_dir: Path  # where the report wrote model_int8_<algo>.qdq.onnx
    progress: bool = False
    mixed: bool = False  # `report --plan`: the mixed model is qdq_dir/model_mixed.qdq.onnx
    task: Any = None  # the parent's configured task (detection: with its ground truth); None: from the config
    fp32_tensors: tuple[str, ...] = ()  # activations past FP16's range: FP32 in the FP16 column


def evaluation_shard(job: EvaluationJob) -> Evaluation:
    """Every precision on one shard, into the task's accumulators (latency: this worker's wall time)."""
    from sppquant.pipeline.precision_plan import PrecisionPlan  # noqa: PLC0415
    from sppquant.pipeline.report_variants import MIXED_MODEL, ort_variants, tensorrt_variants  # noqa: PLC0415 - heavy

    ctx = open_model(job.cfg)
    ctx = replace(ctx, task=job.task) if job.task is not None else ctx
    qdq = {a: (onnx.load(str(job.qdq_dir / f"model_int8_{a}.qdq.onnx")), None) for a in job.algorithms}
    if job.backend == "tensorrt":
        variants = tensorrt_variants(job.cfg, list(job.algorithms), qdq)
    else:
        mixed = None
        if job.mixed:  # the plan itself only labels the column: the coordinator's info wins
            stub = PrecisionPlan("", "", "", "", 0.0, 0.0, [], [], 0, 0, 0, 0.0, 0.0, True)
            mixed = (onnx.load(str(job.qdq_dir / MIXED_MODEL)), stub)
        variants = ort_variants(job.cfg, ctx, qdq, mixed, job.fp32_tensors)
    try:
        return evaluate(job.cfg, ctx, variants.runners, job.images, job.images.labels is not None, job.progress)
    finally:
        variants.close()


def merge_evaluations(parts: list[Evaluation]) -> Evaluation:
    """Shard evaluations in shard order: accumulators merge exactly, timings add up, bad files concatenate."""
    out = parts[0]
    for p in parts[1:]:
        for key, per_size in p.metrics.items():
            for s, m in per_size.items():
                out.metrics[key][s] = out.metrics[key][s].merge(m)
                out.timing[key][s].seconds += p.timing[key][s].seconds
                out.timing[key][s].images += p.timing[key][s].images
        out.bad.items.extend(p.bad.items)
        out.images += p.images
    return out


def evaluate_sharded(job: EvaluationJob, executor: Executor, progress: bool = True) -> Evaluation:
    """The main pass over ``executor``: contiguous shards aligned to report.batch_size, merged exactly."""
    shards = split(len(job.images), executor.workers, job.cfg.report.batch_size)
    jobs = [replace(job, images=subset(job.images, tuple(range(s.start, s.stop))),
                    progress=progress and executor.name == "local") for s in shards]
    ev = merge_evaluations(executor.map(evaluation_shard, jobs, [s.label for s in shards], "report", progress))
    if ev.images == 0:
        raise DataError(f"all {len(job.images)} evaluation image(s) were rejected as unreadable")
    return ev
