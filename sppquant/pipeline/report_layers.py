"""Per-layer INT8 error of one table, in memory that does not grow with the number of tensors.

For each table tensor, on the first ``limit`` evaluation images at every size:

- LOCAL SQNR: the tensor fake-quantized alone vs its FP32 value;
- ACCUMULATED SQNR: that tensor in the whole INT8 Q/DQ model vs FP32;
- OUTPUT SQNR: the model output with only that tensor quantized, vs FP32: the tensor's
  sensitivity, which ranks the list. Measured for the tensors the Q/DQ model quantizes (n/a for
  the others: one model run per tensor and image, and an unrolled RNN has hundreds of gate
  tensors no layer quantizes). One session (`sppquant.quantize.switchable`) serves them all;
  each run switches one quantizer on.

The FP32 histograms of the same images feed the histogram plots.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from sppquant.calibration.histogram import Histogram
from sppquant.calibration.table import CalibrationTable
from sppquant.config import Config
from sppquant.data import ImageSet
from sppquant.model import activation_names
from sppquant.pipeline.context import ModelContext, image_feeds, ort_runner
from sppquant.pipeline.executor import Executor, split
from sppquant.quantize.qdq import QdqInfo, fake_quantize
from sppquant.quantize.switchable import switch_feeds, switchable_model
from sppquant.report.model import LayerRow
from sppquant.tasks.metrics import SqnrAccumulator

TENSORS_PER_RUN = 32  # activations fetched per run: bounds memory on large models at little extra cost


@dataclass
class LayerAnalysis:
    rows: list[LayerRow]
    histograms: dict[str, Histogram]
    images: int


def _layer_feeds(cfg: Config, ctx: ModelContext, images: ImageSet, limit: int, progress: bool) -> list[dict]:
    """The feeds of the first ``limit`` images at every size (kept: every tensor's pass reuses them)."""
    return image_feeds(cfg, ctx, images, limit, cfg.report.batch_size, progress, "layers")


def analyse_layers(cfg: Config, ctx: ModelContext, table: CalibrationTable, qdq: tuple[Any, QdqInfo],
                   images: ImageSet, limit: int, progress: bool = False,
                   executor: Executor | None = None) -> LayerAnalysis:
    """LOCAL, ACCUMULATED and OUTPUT SQNR per table tensor (see the module docstring).

    With an executor of several workers, OUTPUT SQNR (one run per tensor) spreads over tensor groups.
    """
    qmodel, info = qdq
    names = activation_names(ctx.model)
    feeds = _layer_feeds(cfg, ctx, images, limit, progress)
    inputs = set(feeds[0]) if feeds else {cfg.model.input_name}
    hists = {n: Histogram() for n in names}
    zeros = dict.fromkeys(names, 0)
    local = {n: SqnrAccumulator() for n in names}
    accum = {n: SqnrAccumulator() for n in names}
    int8_read = {n: info.activations.get(n, n) for n in names}  # the INT8 value consumers see
    with ort_runner(cfg, ctx.model, extra_outputs=names) as fp32, \
            ort_runner(cfg, qmodel, extra_outputs=list(int8_read.values())) as int8:
        refs = [{o: v for o, v in fp32.run(f, list(ctx.outputs)).items()} for f in feeds]
        # A few tensors per run: only those activations are alive at once, not the whole network's.
        for group in [names[i:i + TENSORS_PER_RUN] for i in range(0, len(names), TENSORS_PER_RUN)]:
            for f in feeds:
                ref = {**fp32.run(f, [n for n in group if n not in inputs]), **{k: v for k, v in f.items() if k in group}}
                wanted = [t for t in dict.fromkeys(int8_read[n] for n in group) if t not in inputs]
                q = int8.run(f, wanted)
                for n in group:
                    a = ref[n]
                    hists[n].update(a)
                    zeros[n] += int(np.count_nonzero(a == 0))
                    local[n].add(a, fake_quantize(a, table.scales[n]))
                    accum[n].add(a, q[int8_read[n]] if int8_read[n] not in inputs else a)  # unquantized input: exact
    ranked = [n for n in names if n in info.activations] or names  # nothing quantized: rank every tensor
    if executor is not None and executor.workers > 1:
        output = _sharded_sensitivity(cfg, ctx, table, ranked, images, limit, refs, executor, progress)
    else:
        output = _output_sensitivity(cfg, ctx, table, names, feeds, refs, progress, only=ranked)
    rows = [_row(n, info, table, hists[n], zeros[n], local[n], accum[n], output[n] if n in ranked else None)
            for n in names]
    rows.sort(key=lambda r: (not r.quantized, _rank_key(r.output_sqnr_db), _rank_key(r.local_sqnr_db)))
    for i, r in enumerate(rows, 1):
        r.rank = i
    return LayerAnalysis(rows, hists, min(limit, len(images)))


def _output_sensitivity(cfg: Config, ctx: ModelContext, table: CalibrationTable, names: list[str], feeds: list[dict],
                        refs: list[Mapping[str, np.ndarray]], progress: bool,
                        only: Sequence[str] | None = None) -> dict[str, SqnrAccumulator]:
    """OUTPUT SQNR per tensor (``only``: these) through one switchable session (memory flat in the tensor count)."""
    outputs = list(ctx.outputs)
    out = {n: SqnrAccumulator() for n in names}
    graph_outputs = set(outputs)
    chosen = set(only) if only is not None else set(names)
    todo = [n for n in names if n not in graph_outputs and n in chosen]
    model, flags = switchable_model(ctx.model, table.scales, todo)  # switches for these only: a lighter graph
    with ort_runner(cfg, model) as runner:
        for n in tqdm(todo, desc="layer sensitivity", unit="tensor", disable=None if progress else True):
            on = switch_feeds(flags, n)
            for f, ref in zip(feeds, refs):
                y = runner.run({**f, **on}, outputs)
                for o in outputs:
                    out[n].add(ref[o], y[o])
    for n in names:
        if n in graph_outputs and n in chosen:  # quantizing an output alone changes it by exactly its own rounding error
            for ref in refs:
                out[n].add(ref[n], fake_quantize(ref[n], table.scales[n]))
    return out


@dataclass(frozen=True)
class SensitivityJob:
    """OUTPUT SQNR of a group of tensors on the layer images (a Ray task body; also run in-process)."""

    cfg: Config
    images: ImageSet
    limit: int
    table: CalibrationTable
    tensors: tuple[str, ...]


def sensitivity_shard(job: SensitivityJob) -> dict[str, SqnrAccumulator]:
    """Recompute the layer feeds and FP32 references exactly as the driver does, then run this group."""
    from sppquant.pipeline.context import open_model  # noqa: PLC0415

    ctx = open_model(job.cfg)
    names = activation_names(ctx.model)
    feeds = _layer_feeds(job.cfg, ctx, job.images, job.limit, False)
    with ort_runner(job.cfg, ctx.model, extra_outputs=names) as fp32:  # as the driver computes them
        refs = [dict(fp32.run(f, list(ctx.outputs))) for f in feeds]
    out = _output_sensitivity(job.cfg, ctx, job.table, names, feeds, refs, False, job.tensors)
    return {n: out[n] for n in job.tensors}


def _sharded_sensitivity(cfg: Config, ctx: ModelContext, table: CalibrationTable, names: list[str], images: ImageSet,
                         limit: int, refs: list[Mapping[str, np.ndarray]], executor: Executor,
                         progress: bool) -> dict[str, SqnrAccumulator]:
    """Tensors in contiguous groups over the executor's workers; each tensor's accumulator is computed whole."""
    shards = split(len(names), executor.workers, 1, "tensors")
    first = replace(images, paths=images.paths[:limit],  # only the layer images travel
                    labels=images.labels[:limit] if images.labels is not None else None)
    jobs = [SensitivityJob(cfg, first, limit, table, tuple(names[s.start:s.stop])) for s in shards]
    out: dict[str, SqnrAccumulator] = {}
    for part in executor.map(sensitivity_shard, jobs, [s.label for s in shards], "layer sensitivity", progress):
        out.update(part)
    return out


def _row(n: str, info: QdqInfo, table: CalibrationTable, hist: Histogram, zeros: int, local: SqnrAccumulator,
         accum: SqnrAccumulator, output: SqnrAccumulator | None) -> LayerRow:
    """``output`` None: not measured (a tensor the INT8 model does not quantize): NaN, shown as n/a."""
    return LayerRow(n, n in info.activations, table.amax(n), table.scales[n], hist.max_abs,
                    clipped_fraction(hist, table.amax(n)), zeros / hist.count if hist.count else 0.0,
                    local.db, accum.db, output.db if output is not None else math.nan)


def _rank_key(v: float) -> float:
    return v if not math.isnan(v) else math.inf


def clipped_fraction(hist: Histogram, amax: float) -> float:
    """Fraction of values with |x| beyond amax (bin resolution)."""
    if hist.count == 0 or hist.bin_width == 0.0:
        return 0.0
    counts = hist.counts
    first = int(math.ceil(amax / hist.bin_width))
    return float(counts[first:].sum()) / hist.count if first < counts.size else 0.0
