"""The GPTQ weight pass: FP32 layer inputs on calibration images -> INT8 weights rounded for output error.

`calibration.weight_rounding: gptq` (the default) makes every Q/DQ model sppquant writes or judges
(export-qdq, the report's INT8 and mixed columns, tune) carry GPTQ-rounded weights
(`sppquant.quantize.weight_rounding`). The pass needs only the FP32 model and the first
``calibration.weight_rounding_images`` calibration images, so it is the same for every activation
table and runs once per process. TensorRT 10's implicit INT8 (a calibration table) rounds weights
itself, to nearest: `sppquant build` cannot carry these weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sppquant.config import Config
from sppquant.data import calibration_set
from sppquant.pipeline.context import ModelContext, image_feeds, ort_runner
from sppquant.pipeline.tables import bias_means, fp16_overflow
from sppquant.quantize.weight_rounding import RoundedWeight, RoundingPass

log = logging.getLogger(__name__)

_CACHE: dict[tuple, dict[str, RoundedWeight]] = {}


def rounded_weights(cfg: Config, ctx: ModelContext, progress: bool = True) -> dict[str, RoundedWeight] | None:
    """Weight name -> GPTQ-rounded INT8 weight, for the config's model (None: ``weight_rounding: nearest``).

    The layers' inputs come from the first ``weight_rounding_images`` calibration images at every
    configured size; the result is kept for the process (report, tune and export share it)."""
    cal = cfg.calibration
    if cal.weight_rounding != "gptq":
        return None
    key = (str(ctx.path), hash(ctx.model.SerializeToString()), str(cal.images), str(cal.list_file), cal.max_images,
           cal.shuffle, cal.seed, cal.weight_rounding_images, tuple(cfg.input.sizes), repr(cfg.preprocess))
    if key in _CACHE:
        return _CACHE[key]
    rounding = RoundingPass(ctx.model, cal.seed)
    images = calibration_set(cal)
    feeds = image_feeds(cfg, ctx, images, cal.weight_rounding_images, cal.batch_size, progress,
                        "weight rounding (GPTQ) inputs")
    with ort_runner(cfg, ctx.model, extra_outputs=rounding.inputs) as runner:
        wanted = [t for t in rounding.inputs if t not in set(runner.input_names)]
        for f in feeds:
            rounding.observe({**f, **runner.run(f, wanted)})
    out = rounding.result(progress)
    log.info("GPTQ-rounded the INT8 weights of %d layer(s) from %d calibration image(s)", len(out),
             min(cal.weight_rounding_images, len(images)))
    _CACHE[key] = out
    return out


@dataclass(frozen=True)
class QdqExtras:
    """What a Q/DQ model gets beyond the table: bias correction and rounding of its INT8 weights, and the
    activations its FP16 base keeps FP32 because FP16 cannot hold their calibrated range."""

    channel_means: dict[str, np.ndarray] | None = None
    rounded: dict[str, RoundedWeight] | None = None
    fp32_tensors: tuple[str, ...] = ()
    quantize_input_layer: bool = True

    def kwargs(self) -> dict[str, Any]:
        """`build_qdq_model` keyword arguments."""
        return {"channel_means": self.channel_means, "rounded_weights": self.rounded,
                "fp32_tensors": self.fp32_tensors, "quantize_input_layer": self.quantize_input_layer}


def qdq_extras(cfg: Config, ctx: ModelContext, table_path: Path, progress: bool = True) -> QdqExtras:
    """The config's bias correction (means ``table_path``'s calibration recorded), weight rounding, the
    tensors past FP16's range (`tables.fp16_overflow`, from the same record) and `calibration.input_layer`."""
    return QdqExtras(bias_means(cfg, table_path), rounded_weights(cfg, ctx, progress), fp16_overflow(table_path),
                     cfg.calibration.input_layer == "int8")
