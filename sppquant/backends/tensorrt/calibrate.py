"""`sppquant calibrate --backend tensorrt`: let TensorRT's own calibrator compute the table.

TensorRT only calibrates inside an INT8 engine build, so this builds one (INT8 only,
no table read) and discards the engine; the table and its provenance come from
``write_calibration_cache``. TensorRT calibrates at ONE shape,
``(calibration.batch_size, C, *input.sizes[0])`` (see `settings`); with several
``input.sizes`` the ONNX Runtime backend is the one that calibrates across all of them.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sppquant.backends.tensorrt import settings as S
from sppquant.backends.tensorrt._trt import (
    create,
    import_tensorrt,
    init_standard_plugins,
    load_plugin,
    trt_logger,
    trt_version,
)
from sppquant.backends.tensorrt.builder import _serialize, add_profile, apply_flags, parse_network
from sppquant.backends.tensorrt.cache import TableCache
from sppquant.backends.tensorrt.calibrator import make_calibrator
from sppquant.backends.tensorrt.feed import BatchFeeder
from sppquant.backends.tensorrt.memory import DeviceMemory, PycudaMemory
from sppquant.calibration.provenance import provenance_path, read_provenance
from sppquant.calibration.table import read_table
from sppquant.config import Config
from sppquant.errors import UserError

log = logging.getLogger(__name__)


def calibrate_tensorrt(
    cfg: Config, table_path: Path, algorithm: str, progress: bool = True, memory: DeviceMemory | None = None
):  # -> sppquant.calibration.calibrate.CalibrationResult (imported lazily: it imports us)
    """Calibrate with TensorRT's calibrator and write ``table_path`` + provenance."""
    from sppquant.calibration.calibrate import CalibrationResult  # noqa: PLC0415

    if algorithm == "percentile":
        raise UserError("TensorRT has no percentile calibrator: use --backend onnxruntime for --algorithm percentile")
    start = time.perf_counter()
    trt = import_tensorrt()
    base_name, header = S.calibrator_base(algorithm)
    if len(cfg.input.sizes) > 1:
        log.warning("TensorRT calibrates at one shape: input.sizes[0] %s of %s; use --backend onnxruntime to "
                    "calibrate across all sizes", list(cfg.input.sizes[0]), [list(s) for s in cfg.input.sizes])
    logger = trt_logger(trt)
    builder = create(trt, trt.Builder, logger)
    init_standard_plugins(trt, logger)
    load_plugin(cfg.build.plugin_library)
    network, _parser, inp = parse_network(trt, builder, logger, cfg)
    config = builder.create_builder_config()
    plan = S.BuildPlan("int8", ("INT8",), Path("unused"), Path("unused"), S.workspace_bytes(cfg), False)
    apply_flags(trt, config, plan)
    add_profile(builder, config, inp.name, S.profile_shapes(cfg, tuple(inp.shape)))
    shape = S.calibration_shape(cfg, tuple(inp.shape))
    add_profile(builder, config, inp.name, S.ProfileShapes(shape, shape, shape), calibration=True)
    cache = TableCache(cfg, table_path, algorithm, header, trt_version(trt), reuse=False)
    feeder = BatchFeeder(cfg, shape, memory or PycudaMemory(), progress=progress)
    calibrator = make_calibrator(trt, base_name, feeder, cache)
    config.int8_calibrator = calibrator
    _serialize(builder, network, config, calibrator, "calibration")
    if cache.writes == 0:
        raise UserError("TensorRT finished without handing over a calibration table (see its log above)")
    seconds = time.perf_counter() - start
    return CalibrationResult(table_path, provenance_path(table_path), read_table(table_path),
                             read_provenance(table_path), feeder.images_used, seconds, list(feeder.bad.items))
