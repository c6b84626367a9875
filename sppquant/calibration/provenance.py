"""The provenance record beside every table (``<table>.json``), and the staleness check.

A table is only as good as what it was computed from. The record pins the model
bytes, the preprocessing fingerprint, the exact image set (manifest hash), the
algorithm and its parameters and the input sizes; `check_table` recomputes those
from a config and says, with reasons, whether the table still applies. Builds refuse
stale tables instead of silently reusing them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sppquant.atomic import atomic_write_text
from sppquant.calibration.table import read_table
from sppquant.config import Config
from sppquant.errors import DataError, TableError

FORMAT = "sppquant.provenance/1"


def provenance_path(table_path: str | Path) -> Path:
    p = Path(table_path)
    return p.with_name(p.name + ".json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def algorithm_params(cfg: Config, algorithm: str) -> dict[str, Any]:
    """The parameters that change an algorithm's result (only percentile has one)."""
    return {"percentile": cfg.calibration.percentile} if algorithm == "percentile" else {}


def write_provenance(table_path: str | Path, record: dict[str, Any]) -> Path:
    path = provenance_path(table_path)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False) + "\n")
    return path


def read_provenance(table_path: str | Path) -> dict[str, Any]:
    path = provenance_path(table_path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TableError(f"{path}: provenance record not found (the table was not written by sppquant calibrate)") from None
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: unreadable provenance record: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise TableError(f"{path}: not an sppquant provenance record (expected format {FORMAT})")
    return record


@dataclass(frozen=True)
class TableStatus:
    """Whether a table applies to a config; ``reasons`` lists every mismatch found."""

    valid: bool
    reasons: list[str] = field(default_factory=list)

    def explain(self) -> str:
        return "valid" if self.valid else "; ".join(self.reasons)


def check_table(table_path: str | Path, cfg: Config, algorithm: str | None = None) -> TableStatus:
    """Is the table at ``table_path`` still valid for ``cfg``? Never raises for staleness."""
    from sppquant.data import calibration_set  # local: data imports config

    table_path = Path(table_path)
    if not table_path.exists():
        return TableStatus(False, [f"{table_path}: no calibration table"])
    try:
        read_table(table_path)
        record = read_provenance(table_path)
    except TableError as exc:
        return TableStatus(False, [str(exc)])
    reasons: list[str] = []
    algorithm = algorithm or cfg.calibration.algorithm
    if record.get("table_sha256") != sha256_file(table_path):
        reasons.append("the table file was changed after calibration (hash differs from its provenance)")
    try:
        if record["model"]["sha256"] != sha256_file(cfg.model.path):
            reasons.append(f"model changed: {cfg.model.path} differs from the calibrated model")
    except OSError:
        reasons.append(f"model {cfg.model.path} cannot be read")
    if record["preprocess"]["fingerprint"] != cfg.preprocess_fingerprint():
        reasons.append("preprocessing changed (preprocess fingerprint differs)")
    if record["algorithm"]["name"] != algorithm:
        reasons.append(f"algorithm changed: table uses {record['algorithm']['name']}, config asks {algorithm}")
    elif record["algorithm"]["params"] != algorithm_params(cfg, algorithm):
        reasons.append(f"algorithm parameters changed: {record['algorithm']['params']} vs {algorithm_params(cfg, algorithm)}")
    # TensorRT's own calibrator does no tying, so the setting only applies to our tables.
    if record.get("backend") == "onnxruntime" and record["tying"]["enabled"] != cfg.calibration.tie_scales:
        reasons.append(f"calibration.tie_scales changed: table {record['tying']['enabled']}, "
                       f"config {cfg.calibration.tie_scales}")
    if [list(s) for s in cfg.input.sizes] != record["input_sizes"]:
        reasons.append(f"input sizes changed: table {record['input_sizes']}, config {[list(s) for s in cfg.input.sizes]}")
    try:
        images = calibration_set(cfg.calibration)
        if images.manifest_hash() != record["images"]["manifest_sha256"]:
            reasons.append("calibration images changed (manifest hash differs)")
    except DataError as exc:
        reasons.append(f"calibration images unavailable: {exc}")
    return TableStatus(not reasons, reasons)
