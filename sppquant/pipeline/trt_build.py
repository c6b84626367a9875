"""`sppquant build`: ONNX -> FP32 / FP16 / INT8 TensorRT engines, each with a JSON record.

`build_one` is the one TensorRT build sequence: `sppquant build` calls it per precision,
`sppquant calibrate --backend tensorrt` calls it with a calibrator and discards the engine.

Order of work, and why:
1. Decide about the calibration table BEFORE building anything, by the one table rule
   (`tables.resolve_table`): a valid table is reused; a stale one is refused with its
   reasons (``--force``: recalibrated and replaced); a missing one is calibrated, by
   TensorRT during the build, or by sppquant with ONNX Runtime first for algorithms
   TensorRT has no calibrator for.
2. Load the SPP plugin library, so the parser finds ``sppquant::SpatialPyramidPooling``.
3. Per precision: parse, set the optimization profile, flags, workspace limit and the
   shared timing cache (one file, reused across builds and runs), then build.
   INT8 with a valid table: the calibrator serves the table from
   ``read_calibration_cache`` and ``get_batch`` is never called.
4. Write engine + record atomically, then the timing cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from sppquant import __version__
from sppquant.atomic import atomic_write_bytes, atomic_write_text, check_writable
from sppquant.backends.tensorrt._trt import (
    create,
    gpu_name,
    import_tensorrt,
    init_standard_plugins,
    load_plugin,
    trt_logger,
    trt_version,
)
from sppquant.backends.tensorrt.builder import (
    DUMMY_RANGE,
    ProfileShapes,
    TimingCache,
    add_profiles,
    apply_flags,
    parse_network,
    serialize,
    set_dummy_ranges,
)
from sppquant.backends.tensorrt.calibrator import CalibratorMixin, make_calibrator
from sppquant.backends.tensorrt.memory import DeviceMemory, default_memory
from sppquant.backends.tensorrt.ranges import (
    constrain_layers,
    derive_missing,
    network_layers,
    plan_exclusion,
    report_missing,
)
from sppquant.calibration.algorithms import get_algorithm
from sppquant.calibration.provenance import sha256_file
from sppquant.config import Config
from sppquant.errors import UserError
from sppquant.model import input_side_tensors
from sppquant.pipeline import trt_settings as S
from sppquant.pipeline.context import open_model
from sppquant.pipeline.precision_plan import plan_table_path, read_plan
from sppquant.pipeline.tables import TableLookup, fp16_overflow
from sppquant.pipeline.trt_cache import TableCache
from sppquant.pipeline.trt_feed import BatchFeeder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineRecord:
    """The JSON written next to each engine (``<engine>.json``)."""

    engine: str
    precision: str
    tensorrt_version: str
    gpu_name: str
    table_path: str | None
    table_sha256: str | None
    table_source: str | None  # "reused", "calibrated" (by TensorRT in this build) or None
    profile: dict[str, dict[str, list[int]]]
    calibration_shape: list[int] | None
    build_seconds: float
    int8_dummy_scales: bool
    int8_allow_fp16: bool
    workspace_mb: int
    model_path: str
    model_sha256: str
    plugin_library: str | None
    derived_ranges: int = 0
    unranged_tensors: list[str] = field(default_factory=list)
    engine_sha256: str = ""
    # `build --plan`: the plan file, its tensors kept above INT8, the layers constrained, and the flag that did it
    precision_plan: str | None = None
    kept_high_precision: list[str] = field(default_factory=list)
    constrained_layers: list[str] = field(default_factory=list)
    precision_constraints: str | None = None
    # activations past FP16's range (`tables.fp16_overflow`) and the layers constrained to FP32 around them
    fp32_tensors: list[str] = field(default_factory=list)
    fp32_layers: list[str] = field(default_factory=list)
    # `calibration.input_layer: float`: the input-side tensors served without a range (their readers constrained)
    input_side: list[str] = field(default_factory=list)
    sppquant_version: str = __version__
    created: str = ""

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


# --------------------------------------------------------------------------- table decision


def table_decision(cache: TableCache, algorithm: str, force: bool) -> str:
    """The one table rule (`tables.resolve_table`) for an INT8 build, decided before any work.

    ``"reuse"``: a valid table is served. ``"calibrate"``: none (or a stale one with ``force``) and
    TensorRT has a calibrator for ``algorithm``: it calibrates during the build and writes the table.
    ``"sppquant"``: the same, for an algorithm TensorRT has no calibrator for (percentile, mse, auto,
    ...): sppquant calibrates it with ONNX Runtime before the build. A stale table without ``force``:
    TableError with its reasons.
    """
    path = cache.path
    if path.exists():
        status = cache.status()
        if status.valid:
            return "reuse"
        if not force:
            raise TableLookup(algorithm, None, path, True, status.reasons).stale_error(cache.cfg)
        log.warning("--force: recalibrating the stale %s table %s (%s)", algorithm, path, status.explain())
    return "calibrate" if get_algorithm(algorithm).trt_calibrator is not None else "sppquant"


# --------------------------------------------------------------------------- the one build


@dataclass
class TrtSession:
    """TensorRT, its logger, one Builder and the loaded plugin library, shared by every build of a run."""

    trt: ModuleType
    logger: Any
    builder: Any
    plugin: Path
    version: str

    @classmethod
    def open(cls, cfg: Config) -> TrtSession:
        trt = import_tensorrt()
        logger = trt_logger(trt)
        builder = create(trt, trt.Builder, logger)  # first: "no GPU / no TensorRT" is the likelier problem
        init_standard_plugins(trt, logger)
        plugin = load_plugin(cfg.build.plugin_library)
        return cls(trt, logger, builder, plugin, trt_version(trt))


@dataclass
class Calibration:
    """An INT8 build's calibration: the table policy, the calibrator base, where batches come from."""

    cache: TableCache
    base_name: str
    memory: DeviceMemory | None = None
    reuse: bool = True  # serve a valid table (and derive ranges for tensors it lacks)
    progress: bool = True
    keep: frozenset[str] = frozenset()  # a precision plan's tensors: no range, constrained readers/producers


@dataclass
class Built:
    data: bytes
    seconds: float
    shapes: ProfileShapes
    input_name: str
    calibration_shape: tuple[int, ...] | None = None
    derived: dict[str, float] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    source: str | None = None  # "reused" or "calibrated" when a calibrator ran
    constrained: list[str] = field(default_factory=list)  # layers given a precision constraint by a plan
    fp32_layers: list[str] = field(default_factory=list)  # layers kept FP32 around tensors past FP16's range


def build_one(sess: TrtSession, cfg: Config, flags: Sequence[str], what: str, *, calibration: Calibration | None = None,
              dummy_ranges: bool = False, timing: TimingCache | None = None,
              fp32_tensors: frozenset[str] = frozenset()) -> Built:
    """Parse, profile, flag and build one engine; with ``calibration``, TensorRT calibrates or reuses a table;
    with the FP16 flag, layers around ``fp32_tensors`` (past FP16's range) are constrained to FP32."""
    trt = sess.trt
    network, _parser, inputs = parse_network(trt, sess.builder, sess.logger, cfg.model.path,
                                             [cfg.model.input_name, *S.region_inputs(cfg)])
    inp = inputs[cfg.model.input_name]
    shapes = S.profile_shapes(cfg, tuple(inp.shape))
    config = sess.builder.create_builder_config()
    apply_flags(trt, config, flags, S.workspace_bytes(cfg))
    add_profiles(sess.builder, config, {inp.name: shapes, **S.extra_profiles(cfg)})
    if timing is not None:
        timing.attach(config)
    built = Built(b"", 0.0, shapes, inp.name)
    calibrator = None
    if dummy_ranges:
        log.warning("--int8-dummy-scales: %d tensors get range +-%.1f; the %s engine is for timing only, its "
                    "accuracy is meaningless", set_dummy_ranges(trt, network), DUMMY_RANGE, what)
    elif calibration is not None:
        calibrator = _attach_calibrator(sess, cfg, network, config, inp, calibration, built)
    built.fp32_layers = apply_fp32_constraints(sess.trt, network, config, fp32_tensors)  # after a plan's FP16 ones
    start = time.perf_counter()
    built.data = serialize(sess.builder, network, config, calibrator, what)
    built.seconds = time.perf_counter() - start
    if calibrator is not None:
        built.source = "reused" if calibration.cache.served is not None else "calibrated"
    return built


def _attach_calibrator(sess: TrtSession, cfg: Config, network: Any, config: Any, inp: Any, calibration: Calibration,
                       built: Built) -> CalibratorMixin:
    shape = S.calibration_shape(cfg, tuple(inp.shape))
    add_profiles(sess.builder, config, {inp.name: ProfileShapes(shape, shape, shape),
                                        **S.extra_profiles(cfg, calibration=True)}, calibration=True)
    built.calibration_shape = shape
    cache = calibration.cache
    if calibration.reuse:
        table = cache.usable_table()
        if table is not None:
            layers = network_layers(sess.trt, network)
            excluded = plan_exclusion(layers, calibration.keep)
            built.derived, built.missing = derive_missing(layers, table.scales, [inp.name], exclude=excluded)
            cache.extra_scales, cache.exclude = built.derived, frozenset(excluded)
            report_missing(built.missing, str(cache.path))
            if excluded:
                built.constrained = apply_plan_constraints(sess.trt, network, config, excluded)
    regions = {n: shape[0] * per_image for n, per_image in S.region_inputs(cfg).items()}
    feeder = BatchFeeder(cfg, shape, calibration.memory or default_memory(), progress=calibration.progress,
                         extra_feeds=open_model(cfg).extra_feeds if regions else None, regions=regions)
    calibrator = make_calibrator(sess.trt, calibration.base_name, feeder, cache)
    config.int8_calibrator = calibrator
    return calibrator


def apply_plan_constraints(trt: ModuleType, network: Any, config: Any, excluded: set[str]) -> list[str]:
    """Layers reading or producing a plan's tensors compute in FP16 (FP32 without the FP16 flag).

    PREFER_PRECISION_CONSTRAINTS, not OBEY: INT8 is already ruled out for these layers by the missing
    ranges, so the constraint only picks the float precision; OBEY would fail the whole build where a
    layer has no FP16 kernel (a plugin, an odd shape), PREFER falls back to FP32 with a TensorRT warning,
    which only raises accuracy. Without either flag TensorRT may ignore the constraint for speed.
    """
    dtype = trt.float16 if config.get_flag(trt.BuilderFlag.FP16) else trt.float32
    names = constrain_layers(trt, network, excluded, dtype)
    config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    log.info("precision plan: %d tensor(s) without an INT8 range, %d layer(s) constrained to %s", len(excluded),
             len(names), "FP16" if dtype == trt.float16 else "FP32")
    return names


def apply_fp32_constraints(trt: ModuleType, network: Any, config: Any, wide: frozenset[str]) -> list[str]:
    """FP16 builds: layers reading or producing a tensor past FP16's range compute in FP32 and write it in FP32.

    TensorRT's FP16 engines otherwise store such values as inf (users meet this as "FP16 engine, wrong
    output"); PREFER as for a plan: a layer without an FP32 choice warns instead of failing the build."""
    if not wide or not config.get_flag(trt.BuilderFlag.FP16):
        return []
    names = constrain_layers(trt, network, wide, trt.float32)
    config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    log.warning("%d tensor(s) reached FP16's safe range on the calibration images: %d layer(s) constrained to FP32 "
                "(%s)", len(wide), len(names), ", ".join(sorted(wide)[:5]))
    return names


# --------------------------------------------------------------------------- the API


def build_engines(
    cfg: Config,
    precisions: Sequence[str] | str | None = None,
    output_dir: str | Path | None = None,
    force: bool = False,
    int8_dummy_scales: bool = False,
    memory: DeviceMemory | None = None,
    progress: bool = True,
    plan: str | Path | None = None,
) -> list[EngineRecord]:
    """Build one engine per precision; returns their records (also written as JSON).

    ``plan``: a precision plan from `sppquant tune`; INT8 builds then use the plan's table, served
    without its tensors, with precision constraints on the layers around them (`apply_plan_constraints`).
    """
    out = Path(output_dir) if output_dir is not None else cfg.build.output_dir
    plans = S.plan_builds(cfg, precisions or cfg.build.precisions, out, int8_dummy_scales)
    check_writable(plans[0].engine_path, "engine")
    plan_path = Path(plan) if plan is not None else None
    precision_plan = read_plan(plan_path) if plan_path is not None else None  # before TensorRT: bad file -> exit 2
    version = trt_version(import_tensorrt())
    algorithm = precision_plan.algorithm if precision_plan else cfg.calibration.algorithm
    base_name, header = S.calibrator_base(algorithm)
    table_path = plan_table_path(precision_plan, plan_path) if precision_plan else cfg.calibration.output
    cache = TableCache(cfg, table_path, algorithm, header, version)
    decision = None
    keep: frozenset[str] = frozenset(precision_plan.kept_high_precision) if precision_plan else frozenset()
    wide = frozenset(fp16_overflow(table_path)) if Path(table_path).exists() else frozenset()
    front = frozenset(input_side_tensors(open_model(cfg).model)) if cfg.calibration.input_layer == "float" \
        else frozenset()
    if any(p.precision == "int8" and not p.dummy_scales for p in plans):
        decision = table_decision(cache, algorithm, force)  # before any work
        if precision_plan is not None and decision != "reuse":
            raise UserError(f"--plan {plan_path}: its table {table_path} is missing or stale; the plan ranks that "
                            f"table's tensors: rerun sppquant tune (or sppquant calibrate --algorithm {algorithm})")
    if decision == "sppquant":
        from sppquant.pipeline.calibrate import calibrate  # noqa: PLC0415 - calibrate routes to this module

        log.info("TensorRT has no %s calibrator: calibrating %s with ONNX Runtime first", algorithm, cache.path)
        calibrate(cfg, output=cache.path, algorithm=algorithm, backend="onnxruntime", progress=progress)
        cache.invalidate()
        decision = "reuse"
    sess = TrtSession.open(cfg)
    timing = TimingCache(S.timing_cache_path(cfg, out))
    gpu, model_sha = gpu_name(), sha256_file(cfg.model.path)
    records = []
    for plan in plans:
        calibration = None
        if plan.precision == "int8" and not plan.dummy_scales:
            calibration = Calibration(cache, base_name, memory, reuse=decision == "reuse", progress=progress,
                                      keep=keep | wide | front)
        built = build_one(sess, cfg, plan.flags, plan.precision, calibration=calibration,
                          dummy_ranges=plan.dummy_scales, timing=timing, fp32_tensors=wide)
        if built.source is not None:
            decision = "reuse"  # a table TensorRT just wrote is reused by later INT8 builds
            cache.invalidate()
        atomic_write_bytes(plan.engine_path, built.data)
        timing.save()
        record = _record(cfg, plan, built, cache, sess, gpu, model_sha)
        if calibration is not None and keep:
            record = replace(record, precision_plan=str(plan_path), kept_high_precision=sorted(keep),
                             constrained_layers=built.constrained,
                             precision_constraints="PREFER_PRECISION_CONSTRAINTS")
        if built.fp32_layers:
            record = replace(record, fp32_tensors=sorted(wide), fp32_layers=built.fp32_layers)
        if calibration is not None and front:
            record = replace(record, input_side=sorted(front))
        record.write(plan.record_path)
        log.info("built %s (%s, %.1f s)", plan.engine_path, plan.precision, built.seconds)
        records.append(record)
    return records


def _record(cfg: Config, plan: S.BuildPlan, built: Built, cache: TableCache, sess: TrtSession, gpu: str,
            model_sha: str) -> EngineRecord:
    source = built.source
    profile = {built.input_name: built.shapes.as_dict(), **{n: p.as_dict() for n, p in S.extra_profiles(cfg).items()}}
    return EngineRecord(
        engine=str(plan.engine_path), precision=plan.precision, tensorrt_version=sess.version, gpu_name=gpu,
        table_path=str(cache.path) if source else None,
        table_sha256=sha256_file(cache.path) if source and cache.path.exists() else None,
        table_source=source, profile=profile,
        calibration_shape=list(built.calibration_shape) if built.calibration_shape else None,
        build_seconds=round(built.seconds, 3), int8_dummy_scales=plan.dummy_scales,
        int8_allow_fp16=cfg.build.int8_allow_fp16, workspace_mb=cfg.build.workspace_mb,
        model_path=str(cfg.model.path), model_sha256=model_sha, plugin_library=str(sess.plugin),
        derived_ranges=len(built.derived), unranged_tensors=built.missing,
        engine_sha256=hashlib.sha256(built.data).hexdigest(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
