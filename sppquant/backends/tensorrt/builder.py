"""`sppquant build`: ONNX -> FP32 / FP16 / INT8 TensorRT engines, each with a JSON record.

Order of work, and why:
1. Decide about the calibration table BEFORE building anything: a stale table is
   refused with `check_table`'s reasons (``--force`` overrides: TensorRT then
   recalibrates from the images and overwrites the stale table; the log says so).
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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from sppquant import __version__
from sppquant.atomic import atomic_write_bytes, atomic_write_text, check_writable
from sppquant.backends.tensorrt import settings as S
from sppquant.backends.tensorrt._trt import (
    create,
    gpu_name,
    import_tensorrt,
    init_standard_plugins,
    load_plugin,
    trt_logger,
    trt_version,
)
from sppquant.backends.tensorrt.cache import TableCache
from sppquant.backends.tensorrt.calibrator import CalibratorMixin, make_calibrator
from sppquant.backends.tensorrt.feed import BatchFeeder
from sppquant.backends.tensorrt.memory import DeviceMemory, PycudaMemory
from sppquant.backends.tensorrt.ranges import derive_missing, network_layers, report_missing
from sppquant.calibration.provenance import sha256_file
from sppquant.config import Config
from sppquant.errors import ModelError, TableError, UserError

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
    sppquant_version: str = __version__
    created: str = ""

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


# --------------------------------------------------------------------------- table decision


def table_decision(cache: TableCache, algorithm: str, force: bool) -> str:
    """``"reuse"`` or ``"calibrate"``; TableError for a stale table without ``force``.

    Percentile tables cannot be produced by TensorRT (it has no percentile calibrator),
    so they must come from ``sppquant calibrate --backend onnxruntime``.
    """
    path = cache.path
    if path.exists():
        status = cache.status()
        if status.valid:
            return "reuse"
        if not force:
            raise TableError(f"{path}: stale calibration table: {status.explain()}; rerun sppquant calibrate, "
                             "or pass --force to let TensorRT recalibrate and overwrite it")
        log.warning("--force: overriding the stale-table refusal for %s (%s); TensorRT recalibrates from the "
                    "calibration images and overwrites it", path, status.explain())
    if algorithm == "percentile":
        raise UserError(f"{path}: no valid percentile table; TensorRT has no percentile calibrator: run "
                        "sppquant calibrate --backend onnxruntime --algorithm percentile first")
    return "calibrate"


# --------------------------------------------------------------------------- TensorRT steps


def spp_namespace_patch(model_path: Path) -> bytes | None:
    """The model with ``plugin_namespace`` set on SPP nodes that lack it, or None when none does.

    TensorRT's ONNX parser looks a custom op up as (op_type, ``plugin_version`` attribute or
    "1", ``plugin_namespace`` attribute or ""). Only recent 10.x parsers retry with the node's
    domain as the namespace (onnx-tensorrt's FallbackPluginImporter; the 10.1 GA importer does
    not), so on older 10.x a ``sppquant`` node without the attribute is "Plugin not found": our
    creator is registered in namespace ``sppquant``. Adding the attribute in memory works on
    every 10.x; the creator ignores it. External data is left where it is (the parser is given
    the model path).
    """
    import onnx  # noqa: PLC0415 - only for builds

    from sppquant.spp.onnx import SPP_DOMAIN, is_spp_node  # noqa: PLC0415

    model = onnx.load(str(model_path), load_external_data=False)
    changed = 0
    for node in model.graph.node:
        if is_spp_node(node) and not any(a.name == "plugin_namespace" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute("plugin_namespace", SPP_DOMAIN))
            changed += 1
    if not changed:
        return None
    log.debug("%s: plugin_namespace=%r set on %d SPP node(s) for TensorRT's parser", model_path, SPP_DOMAIN, changed)
    return model.SerializeToString()


def parse_network(trt: ModuleType, builder: Any, logger: Any, cfg: Config) -> tuple[Any, Any, Any]:
    """``(network, parser, input tensor)``; ModelError with the parser's errors on failure."""
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = create(trt, trt.OnnxParser, network, logger)
    patched = spp_namespace_patch(cfg.model.path)
    ok = (parser.parse_from_file(str(cfg.model.path)) if patched is None
          else parser.parse(patched, str(cfg.model.path)))
    if not ok:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{cfg.model.path}: TensorRT's ONNX parser failed: {errors or 'no details'} "
                         "(is the SPP plugin library loaded and built for this TensorRT?)")
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    if cfg.model.input_name not in inputs:
        raise ModelError(f"{cfg.model.path}: TensorRT network has no input {cfg.model.input_name!r} "
                         f"(inputs: {', '.join(inputs)})")
    if len(inputs) != 1:
        raise ModelError(f"{cfg.model.path}: expected one network input, found {', '.join(inputs)}")
    return network, parser, inputs[cfg.model.input_name]


def apply_flags(trt: ModuleType, config: Any, plan: S.BuildPlan) -> None:
    """Precision flags and the workspace pool limit on an ``IBuilderConfig``."""
    for name in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)


def add_profile(builder: Any, config: Any, name: str, shapes: S.ProfileShapes, calibration: bool = False) -> Any:
    profile = builder.create_optimization_profile()
    profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
    if calibration:
        if not config.set_calibration_profile(profile):
            raise UserError(f"TensorRT rejected the calibration profile {shapes.opt} for input {name!r}")
    elif config.add_optimization_profile(profile) < 0:
        raise UserError(f"TensorRT rejected the optimization profile {shapes.as_dict()} for input {name!r}")
    return profile


def set_dummy_ranges(trt: ModuleType, network: Any) -> int:
    """Give every float tensor ``[-DUMMY_RANGE, DUMMY_RANGE]`` (timing-only INT8 engines)."""
    floats, count = {trt.float32, trt.float16}, 0
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
    for t in tensors:
        if t.dtype in floats:
            t.dynamic_range = (-S.DUMMY_RANGE, S.DUMMY_RANGE)
            count += 1
    return count


def _serialize(builder: Any, network: Any, config: Any, calibrator: CalibratorMixin | None, what: str) -> bytes:
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
            calibrator.raise_pending()  # the callback's own exception beats TensorRT's generic failure
    if plan is None:
        raise UserError(f"TensorRT failed to build the {what} engine (its errors are logged above)")
    return bytes(plan)


# --------------------------------------------------------------------------- the API


class _TimingCache:
    """One ``ITimingCache`` for all builds of a run, loaded from and saved to one file."""

    def __init__(self, path: Path) -> None:
        self.path, self.cache = path, None

    def attach(self, config: Any) -> None:
        if self.cache is None:
            data = self.path.read_bytes() if self.path.is_file() else b""
            self.cache = config.create_timing_cache(data)
            log.info("%s timing cache %s", "reusing" if data else "starting", self.path)
        if not config.set_timing_cache(self.cache, False):
            # A cache from another GPU/TensorRT is refused (``ignore_mismatch=False``). Keeping the refused
            # object would leave every build of this run without a cache and write the stale file back
            # unchanged; start an empty one instead, which this run fills and `save` writes over the file.
            log.warning("timing cache %s does not match this TensorRT/GPU; starting a new one (the file is "
                        "replaced after the build)", self.path)
            self.cache = config.create_timing_cache(b"")
            if not config.set_timing_cache(self.cache, False):
                log.warning("TensorRT refused a new timing cache; builds proceed without one")
                self.cache = None

    def save(self) -> None:
        if self.cache is not None:
            atomic_write_bytes(self.path, bytes(self.cache.serialize()))


def build_engines(
    cfg: Config,
    precisions: Sequence[str] | str | None = None,
    output_dir: str | Path | None = None,
    force: bool = False,
    int8_dummy_scales: bool = False,
    memory: DeviceMemory | None = None,
    progress: bool = True,
) -> list[EngineRecord]:
    """Build one engine per precision; returns their records (also written as JSON)."""
    out = Path(output_dir) if output_dir is not None else cfg.build.output_dir
    plans = S.plan_builds(cfg, precisions or cfg.build.precisions, out, int8_dummy_scales)
    check_writable(plans[0].engine_path, "engine")
    trt = import_tensorrt()
    version = trt_version(trt)
    algorithm = cfg.calibration.algorithm
    base_name, header = S.calibrator_base(algorithm)
    cache = TableCache(cfg, cfg.calibration.output, algorithm, header, version)
    decision = None
    if any(p.precision == "int8" and not p.dummy_scales for p in plans):
        decision = table_decision(cache, algorithm, force)  # before any work

    logger = trt_logger(trt)
    builder = create(trt, trt.Builder, logger)  # first: "no GPU / no TensorRT" is the likelier problem
    init_standard_plugins(trt, logger)
    plugin = load_plugin(cfg.build.plugin_library)
    timing = _TimingCache(S.timing_cache_path(cfg, out))
    gpu, model_sha = gpu_name(), sha256_file(cfg.model.path)
    records = []
    for plan in plans:
        network, _parser, inp = parse_network(trt, builder, logger, cfg)
        shapes = S.profile_shapes(cfg, tuple(inp.shape))
        config = builder.create_builder_config()
        apply_flags(trt, config, plan)
        add_profile(builder, config, inp.name, shapes)
        timing.attach(config)
        calibrator, calib_shape, derived, missing, source = None, None, {}, [], None
        if plan.precision == "int8" and plan.dummy_scales:
            log.warning("--int8-dummy-scales: %d tensors get range +-%.1f; %s is for timing only, its accuracy "
                        "is meaningless", set_dummy_ranges(trt, network), S.DUMMY_RANGE, plan.engine_path.name)
        elif plan.precision == "int8":
            calib_shape = S.calibration_shape(cfg, tuple(inp.shape))
            add_profile(builder, config, inp.name, S.ProfileShapes(calib_shape, calib_shape, calib_shape), True)
            if decision == "reuse":
                table = cache.usable_table()
                if table is not None:
                    derived, missing = derive_missing(network_layers(trt, network), table.scales, [inp.name])
                    cache.extra_scales = derived
                    report_missing(missing, str(cache.path))
            feeder = BatchFeeder(cfg, calib_shape, memory or PycudaMemory(), progress=progress)
            calibrator = make_calibrator(trt, base_name, feeder, cache)
            config.int8_calibrator = calibrator
        start = time.perf_counter()
        data = _serialize(builder, network, config, calibrator, plan.precision)
        seconds = time.perf_counter() - start
        if calibrator is not None:
            source = "reused" if cache.served is not None else "calibrated"
            decision = "reuse"  # a table TensorRT just wrote is reused by later INT8 builds
            cache.invalidate()
        atomic_write_bytes(plan.engine_path, data)
        timing.save()
        record = EngineRecord(
            engine=str(plan.engine_path), precision=plan.precision, tensorrt_version=version, gpu_name=gpu,
            table_path=str(cache.path) if source else None,
            table_sha256=sha256_file(cache.path) if source and cache.path.exists() else None,
            table_source=source, profile={inp.name: shapes.as_dict()},
            calibration_shape=list(calib_shape) if calib_shape else None, build_seconds=round(seconds, 3),
            int8_dummy_scales=plan.dummy_scales, int8_allow_fp16=cfg.build.int8_allow_fp16,
            workspace_mb=cfg.build.workspace_mb, model_path=str(cfg.model.path), model_sha256=model_sha,
            plugin_library=str(plugin), derived_ranges=len(derived), unranged_tensors=missing,
            engine_sha256=hashlib.sha256(data).hexdigest(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        record.write(plan.record_path)
        log.info("built %s (%s, %.1f s)", plan.engine_path, plan.precision, seconds)
        records.append(record)
    return records
