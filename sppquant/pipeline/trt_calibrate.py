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
from typing import Any

from sppquant.calibration.algorithms import get_algorithm
from sppquant.calibration.provenance import provenance_path, read_provenance
from sppquant.calibration.table import read_table
from sppquant.config import Config
from sppquant.errors import UserError
from sppquant.pipeline import trt_settings as S
from sppquant.pipeline.trt_build import Calibration, TrtSession, build_one
from sppquant.pipeline.trt_cache import TableCache

log = logging.getLogger(__name__)


def calibrate_tensorrt(cfg: Config, table_path: Path, algorithm: str, progress: bool = True,
                       memory: Any = None) -> Any:  # -> sppquant.pipeline.calibrate.CalibrationResult
    """Calibrate with TensorRT's calibrator (an INT8 build whose engine is discarded); table + provenance."""
    from sppquant.pipeline.calibrate import CalibrationResult  # noqa: PLC0415 - it routes here

    base_name, header = S.calibrator_base(algorithm)
    if get_algorithm(algorithm).trt_calibrator is None:
        raise UserError(f"TensorRT has no calibrator for {algorithm!r}: use --backend onnxruntime")
    start = time.perf_counter()
    if len(cfg.input.sizes) > 1:
        log.warning("TensorRT calibrates at one shape: input.sizes[0] %s of %s; use --backend onnxruntime to "
                    "calibrate across all sizes", list(cfg.input.sizes[0]), [list(s) for s in cfg.input.sizes])
    sess = TrtSession.open(cfg)
    cache = TableCache(cfg, table_path, algorithm, header, sess.version, reuse=False)
    build_one(sess, cfg, ("INT8",), "calibration",
              calibration=Calibration(cache, base_name, memory, reuse=False, progress=progress))
    if cache.writes == 0:
        raise UserError("TensorRT finished without handing over a calibration table (see its log above)")
    seconds = time.perf_counter() - start
    return CalibrationResult(table_path, provenance_path(table_path), read_table(table_path),
                             read_provenance(table_path), cache.images_used, seconds, list(cache.bad.items))
