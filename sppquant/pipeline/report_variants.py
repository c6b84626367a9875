"""The precisions a report compares, each as a `Runner`: ONNX Runtime models or TensorRT engines.

ONNX Runtime: FP32 = the model; FP16 = `sppquant.quantize.fp16.ort_fp16_model`; INT8 = the
Q/DQ model `build_qdq_model` makes from each algorithm's table (the file `export-qdq`
writes; saved in the report folder). TensorRT: the FP32/FP16/INT8 engines `sppquant build`
wrote, for the config's algorithm.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from sppquant.atomic import atomic_write_bytes
from sppquant.backends import resolve_backend, tensorrt_version
from sppquant.backends.base import Runner
from sppquant.backends.onnxruntime import integer_kernel_counts
from sppquant.calibration.table import CalibrationTable
from sppquant.config import Config
from sppquant.errors import BackendUnavailable, UserError
from sppquant.ops import upgrade_opset
from sppquant.pipeline.context import ModelContext, ort_runner
from sppquant.pipeline.precision_plan import PrecisionPlan
from sppquant.pipeline.tables import TableChoice
from sppquant.pipeline.weight_rounding import QdqExtras, qdq_extras
from sppquant.quantize.fp16 import ort_fp16_model
from sppquant.quantize.qdq import MIN_OPSET, QdqInfo, build_qdq_model, check_qdq_model
from sppquant.report.model import BackendInfo, DeviceInfo, Fp16Info, Int8ModelInfo

log = logging.getLogger(__name__)


def _tensorrt_runner_class() -> Any:
    """`TrtRunner`, or None when the TensorRT backend cannot be imported (tests swap in a fake)."""
    try:
        from sppquant.backends.tensorrt import TrtRunner  # noqa: PLC0415 - optional backend
    except ImportError:
        return None
    return TrtRunner


def choose_backend(requested: str) -> str:
    """``onnxruntime`` or ``tensorrt`` (only with an engine runner); BackendUnavailable otherwise."""
    chosen = resolve_backend(requested)
    if chosen == "tensorrt" and _tensorrt_runner_class() is None:
        if requested == "auto":
            log.info("TensorRT is installed but sppquant.backends.tensorrt has no engine runner; using ONNX Runtime")
            return "onnxruntime"
        raise BackendUnavailable("backend 'tensorrt' cannot run reports: sppquant.backends.tensorrt has no engine "
                                 "runner in this version; use --backend onnxruntime")
    return chosen


@dataclass
class Variants:
    """Runners by column key, what each column is, and the INT8 / FP16 models behind them."""

    runners: dict[str, Runner]
    info: dict[str, dict[str, Any]]
    qdq: dict[str, tuple[onnx.ModelProto, QdqInfo]] = field(default_factory=dict)
    fp16: Fp16Info | None = None

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()


def int8_models(cfg: Config, ctx: ModelContext, tables: dict[str, TableChoice],
                out_dir: Path, progress: bool = True) -> dict[str, tuple[Any, QdqInfo]]:
    """The Q/DQ model of every algorithm's table (bias-corrected where the config asks and the table's
    calibration recorded the means; weights rounded as ``calibration.weight_rounding`` says), checked
    and saved as ``model_int8_<algo>.qdq.onnx``."""
    qdq = {}
    base = upgrade_opset(ctx.model, MIN_OPSET, "per-axis Q/DQ", str(ctx.path))
    for algo, choice in tables.items():
        model_q, info = build_qdq_model(base, choice.table, **qdq_extras(cfg, ctx, choice.path, progress).kwargs())
        check_qdq_model(model_q, f"INT8 Q/DQ model ({algo})")
        atomic_write_bytes(out_dir / f"model_int8_{algo}.qdq.onnx", model_q.SerializeToString())
        qdq[algo] = (model_q, info)
    return qdq


MIXED_MODEL = "model_mixed.qdq.onnx"


def mixed_model(ctx: ModelContext, plan: PrecisionPlan, table: CalibrationTable, out_dir: Path,
                weights: QdqExtras | None = None) -> onnx.ModelProto:
    """The "mixed" column of ``report --plan``: the plan's table without Q/DQ on its kept tensors (the file
    ``export-qdq --plan`` writes), checked and saved as ``model_mixed.qdq.onnx``."""
    base = upgrade_opset(ctx.model, MIN_OPSET, "per-axis Q/DQ", str(ctx.path))
    model_q, _ = build_qdq_model(base, table, keep_high_precision=plan.kept_high_precision,
                                 **(weights or QdqExtras()).kwargs())
    check_qdq_model(model_q, "mixed-precision Q/DQ model (--plan)")
    atomic_write_bytes(out_dir / MIXED_MODEL, model_q.SerializeToString())
    return model_q


def ort_variants(cfg: Config, ctx: ModelContext, qdq: dict[str, tuple[Any, QdqInfo]],
                 mixed: tuple[onnx.ModelProto, PrecisionPlan] | None = None,
                 fp32_tensors: tuple[str, ...] = ()) -> Variants:
    """``fp32_tensors``: activations past FP16's range (`tables.fp16_overflow`), FP32 in the FP16 column as in
    the INT8 models' FP16 base."""
    fp16_model, kept, moved = ort_fp16_model(ctx.model, cfg.onnxruntime, fp32_tensors)
    runners: dict[str, Runner] = {"fp32": ort_runner(cfg, ctx.model), "fp16": ort_runner(cfg, fp16_model)}
    info: dict[str, dict[str, Any]] = {"fp32": {"precision": "fp32"}, "fp16": {"precision": "fp16"}}
    for i, (algo, (model_q, _)) in enumerate(qdq.items()):
        key = "int8" if i == 0 else f"int8_{algo}"
        runners[key] = ort_runner(cfg, model_q)
        info[key] = {"precision": "int8", "algorithm": algo, "model": f"model_int8_{algo}.qdq.onnx"}
    if mixed is not None:
        runners["mixed"] = ort_runner(cfg, mixed[0])
        info["mixed"] = {"precision": "mixed", "algorithm": mixed[1].algorithm, "model": MIXED_MODEL,
                         "kept_high_precision": len(mixed[1].kept_high_precision)}
    note = ("weights and activations in FP16; ops without an FP16 kernel in ONNX Runtime's CPU provider compute in "
            "FP32 between explicit Casts (their inputs/outputs stay FP16-rounded)")
    if fp32_tensors:
        note += (f"; {len(fp32_tensors)} activation(s) whose calibrated max|x| passes FP16's safe range stay FP32 "
                 f"with the ops around them: {', '.join(fp32_tensors[:5])}")
    return Variants(runners, info, qdq, Fp16Info(kept, moved, note))


def tensorrt_variants(cfg: Config, algorithms: list[str], qdq: dict[str, tuple[Any, QdqInfo]]) -> Variants:
    """FP32/FP16/INT8 engines from ``sppquant build`` (build.output_dir); the INT8 one has one algorithm."""
    from sppquant.pipeline.trt_settings import plan_builds  # noqa: PLC0415

    if algorithms != [cfg.calibration.algorithm]:
        raise UserError(f"--backend tensorrt: the INT8 engine is built with calibration.algorithm "
                        f"({cfg.calibration.algorithm}); --algorithms can only be {cfg.calibration.algorithm} "
                        "(use --backend onnxruntime to compare algorithms)")
    plans = plan_builds(cfg, ("fp32", "fp16", "int8"), cfg.build.output_dir, False)
    missing = [str(p.engine_path) for p in plans if not p.engine_path.is_file()]
    if missing:
        raise UserError(f"--backend tensorrt: engine(s) not found: {', '.join(missing)}; run sppquant build "
                        "--config ... first")
    cls = _tensorrt_runner_class()
    runners = {p.precision: cls(p.engine_path, cfg.build.plugin_library) for p in plans}
    info = {p.precision: {"precision": p.precision, "engine": str(p.engine_path)} for p in plans}
    info["int8"]["algorithm"] = algorithms[0]
    return Variants(runners, info, qdq, None)


def int8_info(qdq: dict[str, tuple[Any, QdqInfo]], cfg: Config) -> dict[str, Int8ModelInfo]:
    return {a: Int8ModelInfo(f"model_int8_{a}.qdq.onnx", sorted(info.activations),
                             {w: axis for w, (_, axis) in info.weights.items()},
                             integer_kernel_counts(model, cfg.onnxruntime), info.placement)
            for a, (model, info) in qdq.items()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def backend_and_device(cfg: Config, chosen: str, variants: Variants) -> tuple[BackendInfo, DeviceInfo]:
    """What ran the numbers, named in every report (runtime, execution provider, device)."""
    batch = cfg.report.batch_size
    if chosen == "tensorrt":
        gpu = getattr(variants.runners.get("fp32"), "device", "") or "unknown GPU"
        return (BackendInfo(chosen, f"TensorRT {tensorrt_version()}", "engines from sppquant build",
                            "TensorRT builder"),
                DeviceInfo("gpu", gpu, None, os.cpu_count(), batch,
                           "wall time per batch incl. host<->device copies / images, after one warm-up run; GPU"))
    import onnxruntime as ort  # noqa: PLC0415

    fp32 = variants.runners["fp32"]
    provider = getattr(fp32, "device", "") or cfg.onnxruntime.providers[0]
    kind = "cpu" if provider == "CPUExecutionProvider" else "gpu"
    return (BackendInfo(chosen, f"ONNX Runtime {ort.__version__}", provider, "all (ORT_ENABLE_ALL)"),
            DeviceInfo(kind, cpu_name() if kind == "cpu" else provider, getattr(fp32, "threads", None),
                       os.cpu_count(), batch, f"wall time per batch / images, after one warm-up run; "
                                              f"{'CPU, not GPU' if kind == 'cpu' else provider}"))
