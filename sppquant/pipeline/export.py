"""`sppquant export-qdq`: table + model -> checked explicit-quantization (Q/DQ) ONNX, written atomically."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sppquant.atomic import atomic_write_bytes, check_writable
from sppquant.calibration.table import read_table
from sppquant.config import Config
from sppquant.errors import TableError
from sppquant.model import activation_names
from sppquant.ops import upgrade_opset
from sppquant.pipeline.context import open_model, ort_runner
from sppquant.pipeline.tables import check_table
from sppquant.quantize.qdq import MIN_OPSET, QdqInfo, build_qdq_model, check_qdq_model, check_table_matches

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    path: Path
    table_path: Path
    info: QdqInfo
    warnings: list[str] = field(default_factory=list)


def export_qdq(cfg: Config, output: str | Path, table_path: str | Path | None = None) -> ExportResult:
    """Write the Q/DQ model for ``cfg``'s model and table.

    Without ``table_path`` the config's ``calibration.output`` is used and must be valid
    for the config (`check_table`); an explicit table is used as given (provenance
    problems become warnings, e.g. for a cache TensorRT wrote). Either way its tensors
    must be exactly the model's activations.
    """
    output = check_writable(output, "Q/DQ model")
    model = open_model(cfg).model
    warnings: list[str] = []
    if table_path is None:
        table_path = cfg.calibration.output
        status = check_table(table_path, cfg)
        if not status.valid:
            raise TableError(f"{table_path}: calibration table is not valid for {cfg.source or 'the config'}: "
                             f"{status.explain()} (run sppquant calibrate, or pass --table to use it anyway)")
    else:
        status = check_table(table_path, cfg)
        if not status.valid:
            warnings.append(f"{table_path}: {status.explain()}")
            log.warning("using %s as given: %s", table_path, status.explain())
    table_path = Path(table_path)
    table = read_table(table_path)
    check_table_matches(table, activation_names(model), str(table_path), str(cfg.model.path))
    qdq, info = build_qdq_model(upgrade_opset(model, MIN_OPSET, "per-axis Q/DQ", str(cfg.model.path)), table)
    check_qdq_model(qdq, str(output))
    ort_runner(cfg, qdq).close()  # ONNX Runtime must load it (after the op rewrite) before anyone relies on it
    atomic_write_bytes(output, qdq.SerializeToString())
    log.info("wrote %s: %d activation and %d weight Q/DQ pairs", output, len(info.activations), len(info.weights))
    return ExportResult(output, table_path, info, warnings)
