"""Which calibration table applies to a config: staleness checks and the per-algorithm table choice.

The calibration layer compares facts (`ProvenanceRecord.mismatches`); this module
computes those facts from a config (model hash, preprocessing fingerprint, the image
manifest) and builds the provenance record both backends write.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sppquant import __version__
from sppquant.calibration.provenance import (
    CalibrationInputs,
    ImagesRecord,
    ProvenanceRecord,
    TableStatus,
    read_provenance,
    sha256_file,
    table_sha256,
)
from sppquant.calibration.table import CalibrationTable, format_table, read_table
from sppquant.config import Config
from sppquant.data import BadFiles, ImageSet, calibration_set
from sppquant.errors import DataError, TableError
from sppquant.ops import default_opset
from sppquant.quantize.fp16 import FP16_SAFE_MAX

log = logging.getLogger(__name__)


def calibration_inputs(cfg: Config, algorithm: str | None = None) -> CalibrationInputs:
    """The facts a table for ``cfg`` (and ``algorithm``) must have been computed from."""
    algorithm = algorithm or cfg.calibration.algorithm
    try:
        model_sha: str | None = sha256_file(cfg.model.path)
    except OSError:
        model_sha = None
    manifest, problem = None, None
    try:
        manifest = calibration_set(cfg.calibration).manifest_hash()
    except DataError as exc:
        problem = str(exc)
    return CalibrationInputs(str(cfg.model.path), model_sha, cfg.preprocess_fingerprint(), manifest, algorithm,
                             cfg.calibration.algorithm_params(algorithm), [list(s) for s in cfg.input.sizes],
                             cfg.calibration.tie_scales, problem)


def check_table(table_path: str | Path, cfg: Config, algorithm: str | None = None) -> TableStatus:
    """Is the table at ``table_path`` still valid for ``cfg``? Never raises for staleness."""
    table_path = Path(table_path)
    if not table_path.exists():
        return TableStatus(False, [f"{table_path}: no calibration table"])
    try:
        read_table(table_path)
        record = read_provenance(table_path)
    except TableError as exc:
        return TableStatus(False, [str(exc)])
    reasons = record.mismatches(calibration_inputs(cfg, algorithm), sha256_file(table_path))
    return TableStatus(not reasons, reasons)


def table_for(cfg: Config, algorithm: str) -> Path:
    """Where ``algorithm``'s table lives: ``calibration.output`` for the configured algorithm, else
    ``<stem>.<algorithm><suffix>`` next to it (``calibrate --algorithm`` writes there)."""
    out = cfg.calibration.output
    return out if algorithm == cfg.calibration.algorithm else out.with_name(f"{out.stem}.{algorithm}{out.suffix}")


def find_valid_table(cfg: Config, algorithm: str) -> tuple[Path | None, list[str]]:
    """The first valid table for ``algorithm`` among ``calibration.output`` and its per-algorithm variant;
    else None and the reasons the first candidate is not usable."""
    candidates = list(dict.fromkeys([cfg.calibration.output, table_for(cfg, algorithm)]))
    first: list[str] = []
    for path in candidates:
        status = check_table(path, cfg, algorithm)
        if status.valid:
            return path, []
        first = first or [f"{path}: {r}" if not r.startswith(str(path)) else r for r in status.reasons]
    return None, first


def images_record(cfg: Config, images: ImageSet | None, used: int, bad: BadFiles) -> ImagesRecord:
    return ImagesRecord(
        count=len(images) if images is not None else None,
        used=used,
        manifest_sha256=images.manifest_hash() if images is not None else None,
        root=str(images.root) if images is not None and images.root else None,
        shuffled=images.shuffled if images is not None else False,
        seed=images.seed if images is not None else None,
        max_images=cfg.calibration.max_images,
        order=[images.relative(p) for p in images.paths] if images is not None else [],
        bad_files=[{"path": p, "reason": r} for p, r in bad.items],
    )


def provenance_record(
    cfg: Config,
    table: CalibrationTable,
    images: ImagesRecord,
    algorithm: str,
    backend: str,
    trt_version: str,
    tensors: dict[str, dict[str, Any]],
    ties: dict[str, str] | None = None,
    degenerate: list[str] | None = None,
    last_batch: str | None = None,
    calibration_shape: list[int] | None = None,
) -> ProvenanceRecord:
    """The one builder of provenance records, for tables sppquant computed and tables TensorRT computed."""
    cal = cfg.calibration
    try:
        opset: int | None = default_opset(onnx.load(str(cfg.model.path), load_external_data=False))
    except Exception:  # the record is still useful without it
        opset = None
    return ProvenanceRecord(
        backend=backend,
        model={"path": str(cfg.model.path), "sha256": sha256_file(cfg.model.path), "input_name": cfg.model.input_name,
               "opset": opset},
        preprocess={"fingerprint": cfg.preprocess_fingerprint(), "config": asdict(cfg.preprocess)},
        images=images,
        algorithm={"name": algorithm, "params": cal.algorithm_params(algorithm), "trt_header": table.algorithm},
        batch_size=cal.batch_size,
        last_batch=last_batch or cal.last_batch,
        input_sizes=[list(s) for s in cfg.input.sizes],
        tensorrt={"target_version": trt_version, "header": table.header},
        tying={"enabled": ties is not None, "tied": ties or {}},
        tensors=tensors,
        degenerate_tensors=degenerate or [],
        table_sha256=table_sha256(format_table(table)),
        calibration_shape=calibration_shape,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        sppquant_version=__version__,
    )


@dataclass
class TableChoice:
    """The table an INT8 variant uses, where it came from, and why the config's own was not used."""

    algorithm: str
    path: Path
    table: CalibrationTable
    source: str  # "config" (valid table reused), "calibrated" (now), "given" (--table)
    reasons: list[str] = field(default_factory=list)
    tie_scales: bool | None = None


def resolve_tables(cfg: Config, algorithms: list[str], given: Path | dict[str, Path] | None = None,
                   force: bool = False, progress: bool = True) -> dict[str, TableChoice]:
    """`resolve_table` for each algorithm (``given``: a path for the first, or a path per algorithm); the
    algorithms that need a fresh table share one pass of the FP32 model over the calibration images.
    Stale tables are refused for every algorithm before any calibration work starts."""
    from sppquant.pipeline.calibrate import collect_activations  # noqa: PLC0415 - calibrate uses this module
    from sppquant.pipeline.context import open_model  # noqa: PLC0415

    shared: list = []

    def collected():  # computed on first need only
        if not shared:
            shared.append(collect_activations(cfg, open_model(cfg), progress))
        return shared[0]

    per_algo = given if isinstance(given, dict) else ({algorithms[0]: given} if given and algorithms else {})
    for a in algorithms:  # all refusals first: nothing is calibrated for a run that will stop anyway
        if per_algo.get(a) is None and not force:
            lookup_table(cfg, a).refuse_if_stale(cfg)
    return {a: resolve_table(cfg, a, per_algo.get(a), force, progress, collected) for a in algorithms}


def bias_means(cfg: Config, table_path: Path) -> dict[str, np.ndarray] | None:
    """The per-channel layer-input means ``table_path``'s calibration recorded, when the config asks for bias
    correction (None: off, or a table without them: one calibrated by an older sppquant or given bare)."""
    if not cfg.calibration.bias_correction:
        return None
    try:
        stored = read_provenance(table_path).channel_means
    except TableError:
        stored = {}
    if not stored:
        log.info("%s: no per-channel means recorded (older or foreign table): INT8 without bias correction; "
                 "recalibrate (--force) to get it", table_path)
        return None
    return {name: np.asarray(values, np.float32) for name, values in stored.items()}


def fp16_overflow(table_path: Path) -> tuple[str, ...]:
    """Activations whose max|x| on ``table_path``'s calibration images reached `FP16_SAFE_MAX`: FP16 storage
    would overflow on them, so FP16 models keep them FP32. Empty for a table without histogram summaries
    (TensorRT's own calibrator, or a bare table)."""
    try:
        tensors = read_provenance(table_path).tensors
    except TableError:
        return ()
    return tuple(sorted(n for n, t in tensors.items()
                        if float((t.get("histogram") or {}).get("max_abs") or 0.0) >= FP16_SAFE_MAX))


@dataclass(frozen=True)
class TableLookup:
    """Where ``algorithm``'s table for a config stands: a valid one, a stale one at ``target``, or none."""

    algorithm: str
    valid: Path | None  # a table valid for the config (calibration.output or the per-algorithm file)
    target: Path  # where `sppquant calibrate --algorithm A` writes this algorithm's table
    stale: bool  # ``target`` exists but no longer matches the config
    reasons: list[str]

    def stale_error(self, cfg: Config) -> TableError:
        src = cfg.source or "CONFIG"
        return TableError(f"{self.target}: stale {self.algorithm} calibration table: {'; '.join(self.reasons)} "
                          f"(rerun: sppquant calibrate --config {src} --algorithm {self.algorithm}; or pass --force "
                          "to recalibrate and replace it)")

    def refuse_if_stale(self, cfg: Config) -> None:
        if self.valid is None and self.stale:
            raise self.stale_error(cfg)


def lookup_table(cfg: Config, algorithm: str) -> TableLookup:
    found, reasons = find_valid_table(cfg, algorithm)
    target = table_for(cfg, algorithm)
    if found is not None:
        return TableLookup(algorithm, found, target, False, [])
    status = check_table(target, cfg, algorithm)
    return TableLookup(algorithm, None, target, target.exists(), status.reasons if target.exists() else reasons)


def resolve_table(cfg: Config, algorithm: str, given: Path | None = None, force: bool = False,
                  progress: bool = True, collected: Any = None) -> TableChoice:
    """The one table rule of every command that needs a table (build, export-qdq, report, tune).

    1. ``given`` (``--table``) is used as given; provenance differences are warnings.
    2. A table valid for the config (``calibration.output`` or the per-algorithm file) is reused.
    3. None exists: calibrated now with ONNX Runtime into the file ``sppquant calibrate --algorithm A``
       writes (table + provenance), so later commands reuse it.
    4. One exists but is stale: refused with its reasons; ``force`` recalibrates and replaces it.
    """
    if given is not None:
        table = read_table(given, drop_zero_inf=True)  # a cache TensorRT wrote holds 0 / inf entries
        status = check_table(given, cfg, algorithm)
        if not status.valid:
            log.warning("table %s: %s (used as given)", given, status.explain())
        return TableChoice(algorithm, given, table, "given", [] if status.valid else status.reasons)
    look = lookup_table(cfg, algorithm)
    if look.valid is not None:
        return TableChoice(algorithm, look.valid, read_table(look.valid), "config",
                           tie_scales=cfg.calibration.tie_scales)
    if look.stale and not force:
        raise look.stale_error(cfg)
    from sppquant.pipeline.calibrate import calibrate  # noqa: PLC0415 - calibrate uses this module

    if look.stale:
        log.warning("--force: recalibrating the stale %s table %s (%s)", algorithm, look.target, "; ".join(look.reasons))
    else:
        log.info("%s table: none valid (%s); calibrating into %s", algorithm, "; ".join(look.reasons), look.target)
    result = calibrate(cfg, output=look.target, algorithm=algorithm, backend="onnxruntime", progress=progress,
                       collected=collected() if collected is not None else None)
    return TableChoice(algorithm, look.target, result.table, "calibrated", look.reasons, cfg.calibration.tie_scales)
