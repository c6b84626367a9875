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
from functools import reduce
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from sppquant import __version__
from sppquant.atomic import atomic_write_text, check_writable
from sppquant.calibration.algorithms import ALGORITHMS
from sppquant.config import Config
from sppquant.data import ImageSet, labelled_set
from sppquant.errors import DataError, UserError
from sppquant.labels import check_labels, model_output_width
from sppquant.model import activation_names
from sppquant.pipeline.context import ModelContext, open_model
from sppquant.pipeline.report_eval import evaluate, precision_results
from sppquant.pipeline.report_layers import analyse_layers
from sppquant.pipeline.report_variants import (
    Variants,
    backend_and_device,
    choose_backend,
    int8_info,
    int8_models,
    ort_variants,
    tensorrt_variants,
)
from sppquant.pipeline.tables import TableChoice, resolve_tables
from sppquant.quantize.qdq import check_table_matches
from sppquant.report.model import DatasetInfo, Report, TableInfo

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
    images = replace(images, labels=None)
    if cfg.report.annotations is None:
        notes.append("report.annotations is not set: only box agreement with FP32 (no mAP) is reported")
        return ctx, images
    from sppquant.pipeline.detection import load_ground_truth  # noqa: PLC0415

    gt, images = load_ground_truth(cfg.report.annotations, images)
    task = ctx.task.configure(replace(ctx.task.settings, ground_truth=gt))
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


def build_report(
    cfg: Config,
    output_dir: str | Path | None = None,
    backend: str | None = None,
    algorithms: Sequence[str] | None = None,
    table: str | Path | None = None,
    layer_images: int | None = None,
    progress: bool = True,
) -> ReportResult:
    """Evaluate FP32/FP16/INT8 and write report.md, report.json and plots into ``output_dir``."""
    start = time.perf_counter()
    out_dir = Path(output_dir) if output_dir is not None else cfg.report.output_dir
    check_writable(out_dir / "report.json", "report")
    algos = _check_algorithms(cfg, algorithms)
    chosen = choose_backend(backend or cfg.backend)
    ctx = open_model(cfg)
    images, notes = evaluation_set(cfg)  # data problems before any calibration work
    ctx, images = detection_ground_truth(cfg, ctx, images, notes)
    classes = check_labels_first(ctx, images, cfg.report.images)
    names = activation_names(ctx.model)
    tables = resolve_tables(cfg, algos, out_dir, Path(table) if table is not None else None, progress)
    for choice in tables.values():
        check_table_matches(choice.table, names, str(choice.path), str(cfg.model.path))
    qdq = int8_models(ctx, tables, out_dir)
    variants = tensorrt_variants(cfg, algos, qdq) if chosen == "tensorrt" else ort_variants(cfg, ctx, qdq)
    try:
        ev = evaluate(cfg, ctx, variants.runners, images, images.labels is not None, progress)
        backend_info, device = backend_and_device(cfg, chosen, variants)
    finally:
        variants.close()
    layers = analyse_layers(cfg, ctx, tables[algos[0]].table, qdq[algos[0]], images,
                            layer_images or cfg.report.layer_images, progress)
    report = _assemble(cfg, ctx, chosen, algos, tables, variants, ev, layers, images, notes, classes,
                       backend_info, device)
    return _write(report, layers, tables, out_dir, start, _task_plot_hook(ctx, ev, images, report))


def _assemble(cfg, ctx, chosen, algos, tables, variants: Variants, ev, layers, images, notes, classes,
              backend_info, device) -> Report:
    labelled = images.labels is not None
    dataset = DatasetInfo(str(cfg.report.images), labelled, cfg.report.labels if labelled else "none", len(images),
                          ev.images, [{"path": p, "reason": r} for p, r in ev.bad.items], classes)
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


def _no_fp16():
    from sppquant.report.model import Fp16Info  # noqa: PLC0415

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
