"""One model made ready for default-model experiments: its cached tensors, the calibration pass (histograms,
channel means), the GPTQ weights and the FP32 outputs; `judge` scores a Q/DQ model against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import ours
import run as R
from tune_auto import infer_model, metric_on


@dataclass
class Prepared:
    name: str
    spec: Any
    model: onnx.ModelProto
    evx: np.ndarray
    targets: list
    hists: dict
    means: dict
    rounded: dict
    ref: list[np.ndarray]


def prepare(name: str, n_calib: int, n_eval: int) -> Prepared:
    spec = R.load_spec(name)
    model = ours.prepare(onnx.load(str(spec.path())))
    calib, evx, targets = R.data(name, n_calib, n_eval)
    inp = model.graph.input[0].name
    hists, means = ours.collect(model, R.batches(calib, spec.batch, inp))
    rounded = ours.gptq(model, R.batches(calib[:ours.GPTQ_IMAGES], spec.batch, inp))
    return Prepared(name, spec, model, evx, targets, hists, means, rounded, infer_model(model, evx, spec.batch))


def judge(p: Prepared, q: onnx.ModelProto) -> tuple[float, dict[str, float]]:
    """(output SQNR vs FP32 in dB, the task metrics rounded to 4 digits) of ``q`` on the evaluation tensors."""
    outs = infer_model(q, p.evx, p.spec.batch)
    return R.sqnr_db(p.ref, outs), {k: round(v, 4) for k, v in metric_on(p.spec, p.ref, outs, p.targets).items()}
