"""`sppquant report`: FP32 vs FP16 vs INT8 on an evaluation set, per size, per layer.

The steps, each in its own module: tables per INT8 algorithm (`tables.resolve_table`),
precision runners (`report_variants`), the main pass into the task's mergeable
accumulators (`report_eval`), per-layer sensitivity in bounded memory (`report_layers`),
then the typed `Report` (`sppquant.report.model`) rendered as Markdown, JSON and plots
(`sppquant.report.render`). Everything about the data and the model is checked before
any calibration or evaluation work.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import reduce
from pathlib import Path
from typing import Any

from sppquant import __version__
from sppquant.atomic import atomic_write_text, check_writable
from sppquant.calibration.algorithms import ALGORITHMS
from sppquant.calibration.table import read_table
from sppquant.config import Config
from sppquant.data import ImageSet, labelled_set
from sppquant.errors import DataError, UserError
from sppquant.labels import check_labels, model_output_width
from sppquant.model import activation_names
from sppquant.pipeline.context import ModelContext, open_model
from sppquant.pipeline.executor import make_executor
from sppquant.pipeline.precision_plan import PrecisionPlan, plan_table_path, read_plan
from sppquant.pipeline.report_eval import evaluate, precision_results
from sppquant.pipeline.report_layers import analyse_layers
from sppquant.pipeline.report_variants import (
    Variants,
    backend_and_device,
    choose_backend,
    int8_info,
    int8_models,
    mixed_model,
    ort_variants,
    tensorrt_variants,
)
from sppquant.pipeline.shards import EvaluationJob, evaluate_sharded
from sppquant.pipeline.tables import TableChoice, fp16_overflow, resolve_tables
from sppquant.pipeline.weight_rounding import qdq_extras
from sppquant.quantize.qdq import check_table_matches
from sppquant.report.model import DatasetInfo, Fp16Info, Report, TableInfo

log = logging.getLogger(__name__)

@dataclass
class ReportResult:
    output_dir: Path
    report: Report
    markdown_path: Path
    json_path: Path
    plots: list[Path]
    seconds: float


def evaluation_set(cfg: Config) -> tuple[ImageSet, list[str]]:
    rep = cfg.report
    if rep.images is None:
        raise DataError("config: report.images: no evaluation images configured")
    notes = []
    try:
        images = labelled_set(rep.images, rep.labels, cfg.calibration.extensions, rep.max_images, rep.classes)
    except DataError as exc:
        if rep.labels != "folders" or "subfolder per class" not in str(exc):
            raise
        images = labelled_set(rep.images, "none", cfg.calibration.extensions, rep.max_images)
        notes.append(f"{rep.images} has no class subfolders: no labels, so only agreement with FP32 "
                     "(no accuracy) is reported")
    if rep.labels == "none":
        notes.append("report.labels is 'none': only agreement with FP32 (no accuracy) is reported")
    return images, notes


def detection_ground_truth(cfg: Config, ctx: ModelContext, images: ImageSet,
                           notes: list[str]) -> tuple[ModelContext, ImageSet]:
    """Detection: ``report.annotations`` (COCO) checked against the images, which it labels with image ids."""
    if ctx.task.name != "detection":
        return ctx, images
    from sppquant.pipeline.detection import load_ground_truth, probe_decoder  # noqa: PLC0415

    images = replace(images, labels=None)
    notes[:] = [n for n in notes if "only agreement with FP32" not in n]  # class labels do not apply
    task = ctx.task
    if cfg.report.annotations is None:
        notes.append("report.annotations is not set: only box agreement with FP32 (no mAP) is reported")
    else:
        gt, images = load_ground_truth(cfg.report.annotations, images)
        task = task.configure(replace(task.settings, ground_truth=gt))
    probe_decoder(cfg, ctx.model, ctx.path, task, images)
    return replace(ctx, task=task), images


def check_labels_first(ctx: ModelContext, images: ImageSet, source: Path) -> int | None:
    """Labels must index the model's class output: checked from its declared width before any work."""
    width = model_output_width(ctx.model, ctx.outputs[0])
    if ctx.task.name == "classification":
        check_labels(images, width, str(source))
    return width


def _check_algorithms(cfg: Config, algorithms: Sequence[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(algorithms or cfg.report.algorithms))
    unknown = [a for a in chosen if a not in ALGORITHMS]
    if unknown or not chosen:
        raise UserError(f"--algorithms: unknown algorithm(s) {', '.join(unknown) or '(none given)'}; "
                        f"expected a comma list of {', '.join(ALGORITHMS)}")
    return chosen


def _given(table: str | Path | dict[str, str | Path] | None) -> Path | dict[str, Path] | None:
    if isinstance(table, dict):
        return {a: Path(p) for a, p in table.items()}
    return Path(table) if table is not None else None


def build_report(
    cfg: Config,
    output_dir: str | Path | None = None,
    backend: str | None = None,
    algorithms: Sequence[str] | None = None,
    table: str | Path | dict[str, str | Path] | None = None,
    layer_images: int | None = None,
    progress: bool = True,
    executor: str | None = None,
    force: bool = False,
    plan: str | Path | None = None,
) -> ReportResult:
    """Evaluate FP32/FP16/INT8 and write report.md, report.json and plots into ``output_dir``.

    ``plan``: a precision plan from `sppquant tune`; adds a "mixed" column (its table, no Q/DQ on its kept
    tensors: what ``export-qdq --plan`` writes), evaluated like the others (ONNX Runtime backend).

    ``executor`` (default ``executor.kind``): where evaluation shards and per-layer tensor groups run;
    the metrics do not depend on it (latency is per-worker wall time). Tables follow
    `tables.resolve_table` (``force``: recalibrate stale ones).
    """
    start = time.perf_counter()
    if executor is not None:  # also for the calibrations a report may run
        cfg = replace(cfg, executor=replace(cfg.executor, kind=executor))
    out_dir = Path(output_dir) if output_dir is not None else cfg.report.output_dir
    check_writable(out_dir / "report.json", "report")
    algos = _check_algorithms(cfg, algorithms)
    chosen = choose_backend(backend or cfg.backend)
    ctx = open_model(cfg)
    images, notes = evaluation_set(cfg)  # data problems before any calibration work
    ctx, images = detection_ground_truth(cfg, ctx, images, notes)
    classes = check_labels_first(ctx, images, cfg.report.images)
    names = activation_names(ctx.model)
    mixed = _mixed(cfg, ctx, plan, names, chosen, out_dir) if plan is not None else None
    tables = resolve_tables(cfg, algos, _given(table), force, progress)  # the one table rule
    for choice in tables.values():
        check_table_matches(choice.table, names, str(choice.path), str(cfg.model.path))
    qdq = int8_models(cfg, ctx, tables, out_dir, progress)
    ex = make_executor(cfg, None, chosen)
    wide = fp16_overflow(next(iter(tables.values())).path)
    variants = tensorrt_variants(cfg, algos, qdq) if chosen == "tensorrt" else \
        ort_variants(cfg, ctx, qdq, mixed, wide)
    try:
        if ex.workers > 1:
            job = EvaluationJob(cfg, images, chosen, tuple(algos), out_dir, mixed=mixed is not None, task=ctx.task,
                                fp32_tensors=wide)
            ev = evaluate_sharded(job, ex, progress)
        else:
            ev = evaluate(cfg, ctx, variants.runners, images, images.labels is not None, progress)
        backend_info, device = backend_and_device(cfg, chosen, variants)
    finally:
        variants.close()
    layers = analyse_layers(cfg, ctx, tables[algos[0]].table, qdq[algos[0]], images,
                            layer_images or cfg.report.layer_images, progress, ex)
    if ex.workers > 1:
        notes.append(f"evaluation and per-layer passes ran in {ex.workers} shards on the {ex.name} executor; "
                     "latency is each worker's own wall time per image (not the run's throughput)")
    report = _assemble(cfg, ctx, chosen, algos, tables, variants, ev, layers, images, notes, classes,
                       backend_info, device)
    report.notes += int8_warnings(report, ctx.task.primary) + overflow_warnings(report)
    return _write(report, layers, tables, out_dir, start, _task_plot_hook(ctx, ev, images, report))


def _mixed(cfg: Config, ctx: ModelContext, plan: str | Path, names: Sequence[str], backend: str,
           out_dir: Path) -> tuple[Any, PrecisionPlan]:
    """The plan's Q/DQ model (checked before any evaluation) for the "mixed" column."""
    if backend == "tensorrt":
        raise UserError("--plan: the mixed column runs on ONNX Runtime; with TensorRT, `sppquant build --plan` "
                        "builds the mixed engine (it is then the int8 engine)")
    read = read_plan(plan)
    path = plan_table_path(read, plan)
    table = read_table(path, drop_zero_inf=True)
    check_table_matches(table, names, str(path), str(cfg.model.path))
    return mixed_model(ctx, read, table, out_dir, qdq_extras(cfg, ctx, path)), read


DROP_WARN = 0.01  # a primary-metric drop (fraction) past which INT8 is reported as a problem
SQNR_WARN = 20.0  # dB: for tasks without a labelled metric


def int8_warnings(report: Report, primary: str) -> list[str]:
    """Loud notes (and log warnings) for INT8 columns that lose accuracy, naming the worst tensors and the fix."""
    fp32 = report.precisions["fp32"].metrics
    worst = ", ".join(f"{r.name} ({_db_text(r.output_sqnr_db)} dB)" for r in report.layers[:3] if r.quantized)
    notes = []
    for p in report.precisions.values():
        if p.precision != "int8":
            continue
        ref, got = fp32.get(primary), p.metrics.get(primary)
        if primary != "sqnr_db" and ref is not None and got is not None and ref - got > DROP_WARN:
            what = f"{primary} {100 * got:.2f}% vs FP32 {100 * ref:.2f}%"
        elif (s := p.metrics.get("sqnr_db")) is not None and s < SQNR_WARN:
            what = f"output SQNR {s:.1f} dB"
        else:
            continue
        notes.append(f"INT8 ({p.algorithm}) loses accuracy: {what}. Most sensitive tensors: {worst}. Try "
                     f"`sppquant report --algorithms mse,auto,percentile` and calibrate with the best "
                     f"(`sppquant calibrate --algorithm auto`).")
        log.warning("%s", notes[-1])
    return notes


def overflow_warnings(report: Report) -> list[str]:
    """A loud note per column whose outputs held inf/NaN (scored as lost values): the model overflows there."""
    notes = []
    for key, p in report.precisions.items():
        bad = p.metrics.get("nonfinite_outputs") or 0
        if bad and key != "fp32":
            notes.append(f"{key.upper()} outputs held {bad} inf/NaN value(s) (scored as 0): the model overflows in "
                         "that precision. Calibrate with the ONNX Runtime backend so the table records every "
                         "tensor's range; tensors past FP16's range are then kept FP32 (README: \"Values FP16 "
                         "cannot hold\").")
            log.warning("%s", notes[-1])
    return notes


def _db_text(v: float) -> str:
    return "inf" if v == float("inf") else f"{v:.1f}"


def _assemble(cfg, ctx, chosen, algos, tables, variants: Variants, ev, layers, images, notes, classes,
              backend_info, device) -> Report:
    labelled = images.labels is not None
    kind, n_classes = (cfg.report.labels if labelled else "none"), classes
    gt = getattr(getattr(ctx.task, "settings", None), "ground_truth", None)
    if gt is not None:  # detection: COCO annotations label the images; classes are its categories
        kind, n_classes = f"COCO annotations {cfg.report.annotations}", len(gt["categories"])
    dataset = DatasetInfo(str(cfg.report.images), labelled, kind, len(images),
                          ev.images, [{"path": p, "reason": r} for p, r in ev.bad.items], n_classes)
    table_info = {a: TableInfo(str(c.path), c.source, c.table.header, len(c.table.scales), c.reasons, c.tie_scales)
                  for a, c in tables.items()}
    return Report(
        sppquant_version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        config=str(cfg.source) if cfg.source else None,
        model={"path": str(cfg.model.path), "input_name": cfg.model.input_name, "outputs": classes},
        task=ctx.task.name, columns=ctx.task.columns(labelled), backend=backend_info, device=device,
        dataset=dataset, sizes=[list(s) for s in cfg.input.sizes], algorithms=algos, tables=table_info,
        precisions=precision_results(ev, variants.info), fp16=variants.fp16 or _no_fp16(),
        int8=int8_info(variants.qdq, cfg), layers_algorithm=algos[0],
        layers_backend="onnxruntime (FP32 model and the Q/DQ model; a table analysis, whatever the backend)",
        layers_images=layers.images, layers=layers.rows, notes=notes)


def _no_fp16() -> Fp16Info:
    return Fp16Info([], [], "FP16 numbers come from the TensorRT FP16 engine")


def _task_plot_hook(ctx: ModelContext, ev, images: ImageSet, report: Report):
    """The task's own plots (``extra_plots``: detection PR curves and sample boxes), or None."""
    if not hasattr(ctx.task, "extra_plots"):
        return None
    merged = {k: reduce(lambda a, b: a.merge(b), per.values()) for k, per in ev.metrics.items()}
    labels = {k: p.label for k, p in report.precisions.items()}
    paths = dict(zip(images.labels, images.paths)) if images.labels is not None else {}
    return lambda out_dir: ctx.task.extra_plots(merged, labels, paths, out_dir)


def _write(report: Report, layers, tables: dict[str, TableChoice], out_dir: Path, start: float,
           task_plots=None) -> ReportResult:
    from sppquant.report.render import render_markdown, render_plots  # noqa: PLC0415 - matplotlib

    plots = render_plots(report, layers.histograms, {a: c.table for a, c in tables.items()}, out_dir, task_plots)
    report.plots = [p.name for p in plots]
    report.seconds = round(time.perf_counter() - start, 2)
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    atomic_write_text(json_path, json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
    atomic_write_text(md_path, render_markdown(report))
    log.info("wrote %s (%.1f s)", md_path, report.seconds)
    return ReportResult(out_dir, report, md_path, json_path, plots, report.seconds)
