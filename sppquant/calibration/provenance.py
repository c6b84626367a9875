"""The provenance record beside every table (``<table>.json``), typed, and what makes a table stale.

A table is only as good as what it was computed from. `ProvenanceRecord` pins the model
bytes, the preprocessing fingerprint, the exact image set (manifest hash), the
algorithm and its parameters and the input sizes; `ProvenanceRecord.mismatches` compares
it with `CalibrationInputs` (the same facts recomputed from a config by the pipeline layer)
and lists every reason the table no longer applies. One record type for both backends:
the ONNX Runtime path fills the histogram summaries and ties, TensorRT's calibrator the
calibration shape.

This module reads no config and no images: it compares facts, so the calibration layer
stays free of backends and of the data pipeline.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sppquant.atomic import atomic_write_text
from sppquant.errors import TableError

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


@dataclass(frozen=True)
class CalibrationInputs:
    """What a table must have been computed from to apply to a config (recomputed each check).

    ``manifest_sha256`` is None when the images cannot be listed (``images_problem`` says why).
    """

    model_path: str
    model_sha256: str | None  # None: the model cannot be read
    preprocess_fingerprint: str
    manifest_sha256: str | None
    algorithm: str
    params: dict[str, Any]
    input_sizes: list[list[int]]
    tie_scales: bool
    images_problem: str | None = None


@dataclass
class ImagesRecord:
    count: int | None
    used: int
    manifest_sha256: str | None
    root: str | None
    shuffled: bool
    seed: int | None
    max_images: int | None
    order: list[str]
    bad_files: list[dict[str, str]]


@dataclass
class ProvenanceRecord:
    """``<table>.json``: the JSON keys are this dataclass's fields (format ``sppquant.provenance/1``)."""

    backend: str
    model: dict[str, Any]  # path, sha256, input_name
    preprocess: dict[str, Any]  # fingerprint, config
    images: ImagesRecord
    algorithm: dict[str, Any]  # name, params, trt_header
    batch_size: int
    last_batch: str
    input_sizes: list[list[int]]
    tensorrt: dict[str, Any]  # target_version, header
    tying: dict[str, Any]  # enabled, tied
    tensors: dict[str, dict[str, Any]]
    degenerate_tensors: list[str] = field(default_factory=list)
    table_sha256: str = ""
    calibration_shape: list[int] | None = None
    executor: dict[str, Any] | None = None  # where the shards ran (kind, workers); results do not depend on it
    # Conv/Gemm input -> per-channel mean over the calibration images (bias correction; absent in older records)
    channel_means: dict[str, list[float]] = field(default_factory=dict)
    created: str = ""
    sppquant_version: str = ""
    format: str = FORMAT

    # -- JSON ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        first = {k: data.pop(k) for k in ("format", "sppquant_version", "created")}
        return {**first, **data}

    @classmethod
    def from_json(cls, data: Any, source: str) -> ProvenanceRecord:
        """Validate keys and types; a TableError naming ``source`` and the key otherwise."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TableError(f"{source}: not an sppquant provenance record (expected format {FORMAT})")
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                if f.default is not MISSING or f.default_factory is not MISSING:
                    continue
                raise TableError(f"{source}: provenance record lacks the key {f.name!r}")
            kwargs[f.name] = data[f.name]
        _check_types(kwargs, source)
        images = kwargs["images"]
        try:
            kwargs["images"] = ImagesRecord(**{f.name: images.get(f.name) for f in fields(ImagesRecord)})
        except (AttributeError, TypeError):
            raise TableError(f"{source}: provenance key 'images' is not a mapping") from None
        return cls(**kwargs)

    # -- staleness ----------------------------------------------------------------------
    def mismatches(self, expected: CalibrationInputs, table_sha256: str) -> list[str]:
        """Every reason this record's table does not apply to ``expected`` (empty: valid)."""
        reasons: list[str] = []
        if self.table_sha256 != table_sha256:
            reasons.append("the table file was changed after calibration (hash differs from its provenance)")
        if expected.model_sha256 is None:
            reasons.append(f"model {expected.model_path} cannot be read")
        elif self.model.get("sha256") != expected.model_sha256:
            reasons.append(f"model changed: {expected.model_path} differs from the calibrated model")
        if self.preprocess.get("fingerprint") != expected.preprocess_fingerprint:
            reasons.append("preprocessing changed (preprocess fingerprint differs)")
        name = self.algorithm.get("name")
        if name != expected.algorithm:
            reasons.append(f"algorithm changed: table uses {name}, config asks {expected.algorithm}")
        elif self.algorithm.get("params") != expected.params:
            reasons.append(f"algorithm parameters changed: {self.algorithm.get('params')} vs {expected.params}")
        # TensorRT's own calibrator does no tying, so the setting only applies to our tables.
        if self.backend != "tensorrt" and self.tying.get("enabled") != expected.tie_scales:
            reasons.append(f"calibration.tie_scales changed: table {self.tying.get('enabled')}, "
                           f"config {expected.tie_scales}")
        if self.input_sizes != expected.input_sizes:
            reasons.append(f"input sizes changed: table {self.input_sizes}, config {expected.input_sizes}")
        if expected.images_problem is not None:
            reasons.append(f"calibration images unavailable: {expected.images_problem}")
        elif self.images.manifest_sha256 != expected.manifest_sha256:
            reasons.append("calibration images changed (manifest hash differs)")
        return reasons


_TYPES: dict[str, type | tuple[type, ...]] = {
    "backend": str, "model": dict, "preprocess": dict, "images": dict, "algorithm": dict, "batch_size": int,
    "last_batch": str, "input_sizes": list, "tensorrt": dict, "tying": dict, "tensors": dict,
    "degenerate_tensors": list, "table_sha256": str, "created": str, "sppquant_version": str, "channel_means": dict,
}


def _check_types(values: dict[str, Any], source: str) -> None:
    for key, tp in _TYPES.items():
        if key in values and not isinstance(values[key], tp):
            name = tp.__name__ if isinstance(tp, type) else "/".join(t.__name__ for t in tp)
            raise TableError(f"{source}: provenance key {key!r} must be a {name}, got {type(values[key]).__name__}")
    for key, sub in (("algorithm", ("name", "params")), ("tying", ("enabled", "tied")), ("model", ("sha256",)),
                     ("preprocess", ("fingerprint",))):
        missing = [s for s in sub if s not in values.get(key, {})]
        if missing:
            raise TableError(f"{source}: provenance key {key!r} lacks {', '.join(missing)}")


def table_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_provenance(table_path: str | Path, record: ProvenanceRecord) -> Path:
    path = provenance_path(table_path)
    atomic_write_text(path, json.dumps(record.to_json(), indent=2, sort_keys=False) + "\n")
    return path


def read_provenance(table_path: str | Path) -> ProvenanceRecord:
    path = provenance_path(table_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TableError(f"{path}: provenance record not found (the table was not written by sppquant calibrate)") from None
    except (OSError, ValueError) as exc:
        raise TableError(f"{path}: unreadable provenance record: {exc}") from None
    return ProvenanceRecord.from_json(data, str(path))


@dataclass(frozen=True)
class TableStatus:
    """Whether a table applies to a config; ``reasons`` lists every mismatch found."""

    valid: bool
    reasons: list[str] = field(default_factory=list)

    def explain(self) -> str:
        return "valid" if self.valid else "; ".join(self.reasons)
