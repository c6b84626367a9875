"""`sppquant export-qdq`: table + model -> checked explicit-quantization (Q/DQ) ONNX, written atomically."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sppquant.atomic import atomic_write_bytes, check_writable
from sppquant.calibration.table import read_table
from sppquant.config import Config
from sppquant.errors import TableError, UserError
from sppquant.ops import upgrade_opset
from sppquant.pipeline.context import open_model, ort_runner
from sppquant.pipeline.tables import resolve_table
from sppquant.pipeline.weight_rounding import qdq_extras
from sppquant.quantize.qdq import (
    HIGH_PRECISIONS,
    MIN_OPSET,
    QdqInfo,
    build_qdq_model,
    check_qdq_model,
    few,
    model_tensor_names,
)

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    path: Path
    table_path: Path
    info: QdqInfo
    warnings: list[str] = field(default_factory=list)


def export_qdq(cfg: Config, output: str | Path, table_path: str | Path | None = None,
               high_precision: str = "fp16", algorithm: str | None = None,
               plan: str | Path | None = None, force: bool = False, progress: bool = True) -> ExportResult:
    """Write the Q/DQ model for ``cfg``'s model and table (``high_precision``: the rest in fp16 or fp32).

    The table follows the one rule of `tables.resolve_table`: ``table_path`` as given (e.g. a
    cache TensorRT wrote); else the config's valid table; else calibrated now; a stale one is
    refused unless ``force``. Table
    entries the model does not have (TensorRT-internal tensors) are ignored with one
    warning, zero/inf entries count as missing; a table lacking a tensor the placement
    quantizes is refused with the list.
    """
    if high_precision not in HIGH_PRECISIONS:
        raise ValueError(f"high_precision must be one of {HIGH_PRECISIONS}, got {high_precision!r}")
    output = check_writable(output, "Q/DQ model")
    if output.resolve() == Path(cfg.model.path).resolve():
        raise UserError(f"--output {output} is the FP32 model itself (model.path); write the Q/DQ model elsewhere")
    ctx = open_model(cfg)
    model = upgrade_opset(ctx.model, MIN_OPSET, "per-axis Q/DQ", str(cfg.model.path))
    keep: list[str] = []
    if plan is not None:  # the plan ranks ITS table's tensors: that table, unless one is given explicitly
        from sppquant.pipeline.precision_plan import plan_table_path, read_plan  # noqa: PLC0415

        read = read_plan(plan)
        keep = read.kept_high_precision
        if table_path is None and algorithm is None:
            table_path, algorithm = plan_table_path(read, plan), read.algorithm
    choice = resolve_table(cfg, algorithm or cfg.calibration.algorithm, Path(table_path) if table_path else None,
                           force, progress)
    table_path = choice.path
    warnings = [f"{table_path}: {'; '.join(choice.reasons)}"] if choice.source == "given" and choice.reasons else []
    table = read_table(table_path, drop_zero_inf=True)  # TensorRT-written caches hold 0 / inf entries
    extra = sorted(set(table.scales) - model_tensor_names(model))
    try:
        qdq, info = build_qdq_model(model, table, high_precision=high_precision, keep_high_precision=keep,
                                    **qdq_extras(cfg, ctx, table_path, progress).kwargs())
    except TableError as exc:
        also = f"; {len(extra)} table tensor(s) not in the model: {few(extra)}" if extra else ""
        raise TableError(f"{table_path}: calibration table does not match {cfg.model.path}: {exc}{also} "
                         "(calibrated for another model? rerun sppquant calibrate)") from None
    if extra:
        msg = f"{table_path}: ignored {len(extra)} table tensor(s) the model does not have: {few(extra)}"
        warnings.append(msg)
        log.warning("%s", msg)
    warnings += [f"weight not quantized: {k}: {v}" for k, v in info.unquantized_weights.items()]
    check_qdq_model(qdq, str(output))
    ort_runner(cfg, qdq).close()  # ONNX Runtime must load it (plugins after their rewrite) before anyone relies on it
    atomic_write_bytes(output, qdq.SerializeToString())
    log.info("wrote %s: %d activation and %d weight Q/DQ pairs, %d plugin(s) with INT8 I/O, rest %s", output,
             len(info.activations), len(info.weights), len(info.plugins), high_precision.upper())
    return ExportResult(output, table_path, info, warnings)
