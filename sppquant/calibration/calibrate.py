"""`sppquant calibrate`: images -> FP32 activations -> histograms -> thresholds -> table + provenance."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx

from sppquant import __version__
from sppquant.atomic import check_writable
from sppquant.backends import resolve_backend, tensorrt_version
from sppquant.calibration.algorithms import compute_amax, get_algorithm
from sppquant.calibration.collect import ActivationCollector, collect_onnxruntime
from sppquant.calibration.histogram import Histogram
from sppquant.calibration.provenance import FORMAT, algorithm_params, sha256_file, write_provenance
from sppquant.calibration.table import (
    CalibrationTable,
    format_table,
    read_table,
    scale_from_amax,
    trt_version_code,
    write_table,
)
from sppquant.calibration.tying import apply_ties, tie_sources
from sppquant.config import Config
from sppquant.data import BadFiles, ImageSet, calibration_set, iter_batches
from sppquant.errors import ModelError, TableError

log = logging.getLogger(__name__)

# A tensor that was exactly zero on every calibration image quantizes to 0 under any
# scale; TensorRT still needs a positive one.
ZERO_TENSOR_AMAX = 1.0


@dataclass
class CalibrationResult:
    table_path: Path
    provenance_path: Path
    table: CalibrationTable
    provenance: dict[str, Any]
    images: int
    seconds: float
    bad_files: list[tuple[str, str]] = field(default_factory=list)


def check_output(path: Path) -> None:
    """Before any work: the output must be writable and must not clobber a non-table file."""
    check_writable(path, "calibration table")
    if path.exists() and path.stat().st_size > 0:
        try:
            read_table(path)
        except TableError:
            raise TableError(f"{path}: exists and is not a calibration table; refusing to overwrite it") from None


def check_float_outputs(model: onnx.ModelProto, source: Path) -> None:
    for out in model.graph.output:
        elem = out.type.tensor_type.elem_type
        if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            name = onnx.TensorProto.DataType.Name(elem) if elem else "unknown"
            raise ModelError(f"{source}: output {out.name!r} is {name}, expected a float tensor to calibrate")


def thresholds(
    histograms: dict[str, Histogram], algorithm: str, params: dict[str, Any]
) -> tuple[dict[str, float], list[str]]:
    """amax per tensor; degenerate (all-zero / empty) tensors get ZERO_TENSOR_AMAX."""
    amax, degenerate = {}, []
    for name, hist in histograms.items():
        value = compute_amax(hist, algorithm, **params) if hist.count else 0.0
        if not (math.isfinite(value) and value > 0.0) or scale_from_amax(value) <= 0.0:
            value = hist.max_abs if hist.max_abs > 0 and scale_from_amax(hist.max_abs) > 0 else ZERO_TENSOR_AMAX
            degenerate.append(name)
        amax[name] = value
    return amax, degenerate


def header_version(cfg: Config) -> tuple[int, str]:
    """Table header version: the installed TensorRT's, else the config's target."""
    installed = tensorrt_version()
    version = installed or cfg.calibration.trt_version
    return trt_version_code(version), version


def calibrate(
    cfg: Config,
    output: str | Path | None = None,
    algorithm: str | None = None,
    backend: str | None = None,
    progress: bool = True,
) -> CalibrationResult:
    """Calibrate ``cfg``'s model on its calibration images and write table + provenance."""
    start = time.perf_counter()
    algorithm = algorithm or cfg.calibration.algorithm
    algo = get_algorithm(algorithm)
    params = algorithm_params(cfg, algorithm)
    table_path = Path(output) if output is not None else cfg.calibration.output
    check_output(table_path)
    chosen = resolve_backend(backend or cfg.backend)
    if chosen == "tensorrt" and algorithm == "percentile" and (backend or cfg.backend) == "auto":
        log.info("TensorRT has no percentile calibrator: calibrating with ONNX Runtime (same table format)")
        chosen = "onnxruntime"
    if chosen == "tensorrt":
        from sppquant.backends.tensorrt.calibrate import calibrate_tensorrt

        return calibrate_tensorrt(cfg, table_path, algorithm, progress=progress)

    from sppquant.backends.onnxruntime import OrtRunner, activation_names, load_model

    model = load_model(cfg.model.path, cfg.model.input_name)
    check_float_outputs(model, cfg.model.path)
    images = calibration_set(cfg.calibration)
    names = activation_names(model)
    runner = OrtRunner(model, extra_outputs=names)
    bad = BadFiles()
    cal = cfg.calibration
    batches = iter_batches(images, cfg.preprocess, cfg.input.sizes, cal.batch_size, cal.last_batch, cal.bad_files,
                           cal.workers, bad=bad, progress=progress, desc="calibrate")
    collector = collect_onnxruntime(runner, cfg.model.input_name, batches, names)

    amax, degenerate = thresholds(collector.histograms, algorithm, params)
    if degenerate:
        log.warning("%d tensor(s) had no usable range (all zero or empty); they get amax %.1f: %s",
                    len(degenerate), ZERO_TENSOR_AMAX, ", ".join(degenerate[:10]))
    ties = apply_ties(amax, tie_sources(model)) if cal.tie_scales else {}
    code, version = header_version(cfg)
    table = CalibrationTable.from_amax(code, algo.trt_header_algo, amax)

    record = provenance_record(cfg, table, collector, images, bad, algorithm, params, ties, degenerate, version)
    record["table_sha256"] = hashlib.sha256(format_table(table).encode("utf-8")).hexdigest()
    prov_path = write_provenance(table_path, record)  # first: a crash before the table leaves a hash mismatch
    write_table(table_path, table)
    seconds = time.perf_counter() - start
    log.info("wrote %s (%d tensors, %s, %d images x %d size(s)) in %.1f s", table_path, len(table.scales),
             algorithm, collector.images, len(cfg.input.sizes), seconds)
    return CalibrationResult(table_path, prov_path, table, record, collector.images, seconds, list(bad.items))


def provenance_record(
    cfg: Config,
    table: CalibrationTable,
    collector: ActivationCollector,
    images: ImageSet,
    bad: BadFiles,
    algorithm: str,
    params: dict[str, Any],
    ties: dict[str, str],
    degenerate: list[str],
    trt_version: str,
) -> dict[str, Any]:
    cal = cfg.calibration
    return {
        "format": FORMAT,
        "sppquant_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backend": "onnxruntime",
        "model": {"path": str(cfg.model.path), "sha256": sha256_file(cfg.model.path), "input_name": cfg.model.input_name},
        "preprocess": {"fingerprint": cfg.preprocess_fingerprint(), "config": asdict(cfg.preprocess)},
        "images": {
            "count": len(images),
            "used": collector.images,
            "manifest_sha256": images.manifest_hash(),
            "root": str(images.root) if images.root else None,
            "shuffled": images.shuffled,
            "seed": images.seed,
            "max_images": cal.max_images,
            "order": [images.relative(p) for p in images.paths],
            "bad_files": [{"path": p, "reason": r} for p, r in bad.items],
        },
        "algorithm": {"name": algorithm, "params": params, "trt_header": table.algorithm},
        "batch_size": cal.batch_size,
        "last_batch": cal.last_batch,
        "input_sizes": [list(s) for s in cfg.input.sizes],
        "tensorrt": {"target_version": trt_version, "header": table.header},
        "tying": {"enabled": cal.tie_scales, "tied": ties},
        "degenerate_tensors": degenerate,
        "tensors": {
            name: {"amax": table.amax(name), "scale": table.scales[name], "tied_to": ties.get(name),
                   "histogram": collector.histograms[name].to_summary()}
            for name in table.scales
        },
    }
