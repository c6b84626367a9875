"""`sppquant calibrate`: images -> FP32 activations -> histograms -> thresholds -> table + provenance.

Routing comes from the registries: TensorRT computes the table itself only for an
algorithm whose spec names one of its calibrators (entropy2, minmax); every other
algorithm is computed by sppquant from exact histograms of the FP32 model's activations
(ONNX Runtime), and written under the header a TensorRT calibrator loads. A table is never
labelled with an algorithm that did not compute it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from sppquant.atomic import check_writable
from sppquant.backends import resolve_backend, tensorrt_version
from sppquant.calibration.algorithms import get_algorithm
from sppquant.calibration.collect import ActivationCollector
from sppquant.calibration.provenance import ProvenanceRecord, provenance_path, write_provenance
from sppquant.calibration.table import CalibrationTable, read_table, trt_version_code, write_table
from sppquant.calibration.thresholds import ZERO_TENSOR_AMAX, thresholds
from sppquant.calibration.tying import apply_ties, tie_sources
from sppquant.config import Config
from sppquant.data import BadFiles, calibration_set
from sppquant.errors import BackendUnavailable, DataError, ModelError, TableError
from sppquant.pipeline.context import ModelContext, open_model
from sppquant.pipeline.executor import Executor, make_executor
from sppquant.pipeline.shards import collect_sharded
from sppquant.pipeline.tables import images_record, provenance_record

log = logging.getLogger(__name__)


@dataclass
class CalibrationResult:
    table_path: Path
    provenance_path: Path
    table: CalibrationTable
    provenance: ProvenanceRecord
    images: int
    seconds: float
    bad_files: list[tuple[str, str]] = field(default_factory=list)


def check_output(path: Path) -> None:
    """Before any work: table and provenance must be writable, and no non-table file is clobbered."""
    check_writable(path, "calibration table")
    check_writable(provenance_path(path), "provenance record")
    if path.exists() and path.stat().st_size > 0:
        try:
            read_table(path)
        except TableError:
            raise TableError(f"{path}: exists and is not a calibration table; refusing to overwrite it") from None


def check_float_outputs(model: onnx.ModelProto, source: Path) -> None:
    """A model needs at least one float output to be calibrated (integer outputs beside float ones are fine)."""
    types = [o.type.tensor_type.elem_type for o in model.graph.output]
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    if types and not any(t in floats for t in types):
        out = model.graph.output[0]
        name = onnx.TensorProto.DataType.Name(types[0]) if types[0] else "unknown"
        raise ModelError(f"{source}: output {out.name!r} is {name}, expected a float tensor to calibrate "
                         "(the model has no float output)")


CLIP_WARN = 0.01  # share of a tensor's values beyond its amax that deserves a warning


def warn_heavy_clipping(collector: ActivationCollector, table: CalibrationTable, algorithm: str) -> None:
    """One loud warning when the thresholds clip a visible share of some tensors' values (the KL rule's
    failure mode on real networks), naming the worst and the command that avoids it."""
    from sppquant.pipeline.report_layers import clipped_fraction  # noqa: PLC0415

    clipped = {n: clipped_fraction(collector.histograms[n], table.amax(n)) for n in table.scales}
    worst = sorted((f, n) for n, f in clipped.items() if f > CLIP_WARN)[::-1]
    if worst:
        names = ", ".join(f"{n} ({100 * f:.1f}%)" for f, n in worst[:5])
        log.warning("%s clips more than %.0f%% of the values of %d tensor(s): %s. Check INT8 accuracy with "
                    "`sppquant report --algorithms %s,mse,auto`, or calibrate with --algorithm auto", algorithm,
                    100 * CLIP_WARN, len(worst), names, algorithm)


def warn_fp16_overflow(collector: ActivationCollector) -> None:
    """One warning naming the activations FP16 cannot hold (`FP16_SAFE_MAX`): build, export-qdq, report and
    tune keep them FP32 (from the ranges this calibration records)."""
    from sppquant.quantize.fp16 import FP16_SAFE_MAX  # noqa: PLC0415

    wide = sorted((h.max_abs, n) for n, h in collector.histograms.items() if h.max_abs >= FP16_SAFE_MAX)[::-1]
    if wide:
        names = ", ".join(f"{n} ({a:.3g})" for a, n in wide[:5])
        log.warning("%d activation(s) reach max|x| >= %.0f, past FP16's safe range (FP16 holds 65504): %s. FP16 "
                    "engines and the Q/DQ export's FP16 base keep them FP32", len(wide), FP16_SAFE_MAX, names)


def header_version(cfg: Config) -> tuple[int, str]:
    """Table header version: the installed TensorRT's, else the config's target."""
    version = tensorrt_version() or cfg.calibration.trt_version
    return trt_version_code(version), version


def choose_backend(cfg: Config, algorithm: str, requested: str | None) -> str:
    """The backend that computes ``algorithm``: TensorRT only where it has a calibrator for it."""
    asked = requested or cfg.backend
    chosen = resolve_backend(asked)
    native = get_algorithm(algorithm).trt_calibrator
    if chosen == "tensorrt" and native is None:
        if asked == "auto":
            log.info("TensorRT has no calibrator for %s: sppquant computes it from ONNX Runtime histograms "
                     "(same table format)", algorithm)
            return "onnxruntime"
        raise BackendUnavailable(f"TensorRT has no calibrator for {algorithm!r}: use --backend onnxruntime "
                                 f"(sppquant computes {algorithm} itself and writes a table TensorRT loads)")
    return chosen


Collected = tuple[ActivationCollector, BadFiles]


def calibrate(
    cfg: Config,
    output: str | Path | None = None,
    algorithm: str | None = None,
    backend: str | None = None,
    progress: bool = True,
    collected: Collected | None = None,
    executor: str | None = None,
) -> CalibrationResult:
    """Calibrate ``cfg``'s model on its calibration images and write table + provenance.

    ``collected``: histograms of an earlier pass over the same images (`collect_activations`),
    so several algorithms' tables cost one pass through the model. ``executor`` (default
    ``executor.kind``): where histogram shards run; the table does not depend on it. TensorRT's
    own calibration stays in this process (its calibrator drives the batches).
    """
    start = time.perf_counter()
    algorithm = algorithm or cfg.calibration.algorithm
    get_algorithm(algorithm)
    table_path = Path(output) if output is not None else cfg.calibration.output
    check_output(table_path)
    check_float_outputs(open_model(cfg).model, cfg.model.path)
    if choose_backend(cfg, algorithm, backend) == "tensorrt":
        from sppquant.pipeline.trt_calibrate import calibrate_tensorrt  # noqa: PLC0415 - optional backend

        if (executor or cfg.executor.kind) != "local":
            log.info("TensorRT calibrates in this process (its calibrator drives the batches): executor ignored")
        return calibrate_tensorrt(cfg, table_path, algorithm, progress=progress)
    return _calibrate_histograms(cfg, table_path, algorithm, progress, start, make_executor(cfg, executor), collected)


def collect_activations(cfg: Config, ctx: ModelContext, progress: bool = True,
                        executor: Executor | None = None) -> tuple[ActivationCollector, BadFiles]:
    """Every calibration batch, at every size, through the FP32 model: one exact histogram per activation.

    Shards run on ``executor`` (default: the config's, ``executor.kind``) and merge exactly.
    """
    cal = cfg.calibration
    images = calibration_set(cal)
    if cal.last_batch == "drop" and len(images) < cal.batch_size:
        raise DataError(f"calibration.batch_size {cal.batch_size} is more than the {len(images)} calibration "
                        "image(s) and calibration.last_batch is 'drop': no batch would be used")
    collector, bad = collect_sharded(cfg, images, executor or make_executor(cfg), progress)
    collector.warn_nan()
    if executor is not None and executor.name != "local":
        bad.log_summary()  # workers' logs stay on the workers
    return collector, bad


def _calibrate_histograms(cfg: Config, table_path: Path, algorithm: str, progress: bool, start: float,
                          executor: Executor, collected: Collected | None = None) -> CalibrationResult:
    ctx = open_model(cfg)
    collector, bad = collected or collect_activations(cfg, ctx, progress, executor)
    pass_s = None if collected else time.perf_counter() - start  # auto's time budget (None: it estimates one)
    params = cfg.calibration.algorithm_params(algorithm)
    rules: dict[str, str] = {}
    scores: dict[str, dict[str, float]] = {}
    pruned: dict[str, dict[str, float]] = {}
    because: dict[str, str] = {}
    if get_algorithm(algorithm).candidates:  # per-tensor choice by measured effect on the output
        from sppquant.pipeline.auto import choose_rules  # noqa: PLC0415

        choice = choose_rules(cfg, ctx, collector, get_algorithm(algorithm).candidates, progress, pass_s)
        amax, degenerate, rules, scores = dict(choice.amax), choice.degenerate, choice.rules, choice.scores
        pruned, because = choice.pruned, choice.why
    else:
        amax, degenerate = thresholds(collector.histograms, algorithm, params)
    if degenerate:
        log.warning("%d tensor(s) had no usable range (all zero or empty); they get amax %.1f: %s",
                    len(degenerate), ZERO_TENSOR_AMAX, ", ".join(degenerate[:10]))
    ties = apply_ties(amax, tie_sources(ctx.model)) if cfg.calibration.tie_scales else None
    code, version = header_version(cfg)
    table = CalibrationTable.from_amax(code, get_algorithm(algorithm).trt_header, amax)
    tensors = {name: {"amax": table.amax(name), "scale": table.scales[name], "tied_to": (ties or {}).get(name),
                      "histogram": collector.histograms[name].to_summary()} for name in table.scales}
    for name, rule in rules.items():  # auto: which rule won, every rule's measured output SQNR (null: identical), why
        tensors[name].update(rule=rule, why={r: (v if np.isfinite(v) else None) for r, v in scores.get(name, {}).items()},
                             pruned=pruned.get(name, {}), because=because.get(name, ""))
    images = images_record(cfg, calibration_set(cfg.calibration), collector.images, bad)
    record = provenance_record(cfg, table, images, algorithm, "onnxruntime", version, tensors, ties, degenerate)
    record.executor = executor.record()
    record.channel_means = {n: [float(f"{v:.8g}") for v in m] for n, m in collector.channel_means.means().items()}
    warn_heavy_clipping(collector, table, algorithm)
    warn_fp16_overflow(collector)
    prov_path = write_provenance(table_path, record)  # first: a crash before the table leaves a hash mismatch
    try:
        write_table(table_path, table)
    except BaseException:  # no orphan: a record without its table (or beside an older table) must not stay
        prov_path.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - start
    log.info("wrote %s (%d tensors, %s, %d images x %d size(s)) in %.1f s", table_path, len(table.scales),
             algorithm, collector.images, len(cfg.input.sizes), seconds)
    return CalibrationResult(table_path, prov_path, table, record, collector.images, seconds, list(bad.items))
