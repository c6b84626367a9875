"""Every threshold rule on the same histograms, each with the default INT8 weights (GPTQ + bias correction where
nearest): is percentile 99.99 still the right default once the weights are fixed?

    python benchmarks/realmodels/rules_gptq.py ddddocr_det 32 240     # model, calibration images, eval images
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ours  # noqa: E402
import run as R  # noqa: E402
from mse import mse_amax  # noqa: E402
from tune_auto import infer_model, metric_on  # noqa: E402

log = logging.getLogger("rules_gptq")

RULES = {"percentile99.9": ("percentile", {"percentile": 99.9}), "percentile99.99": ("percentile", {}),
         "percentile99.999": ("percentile", {"percentile": 99.999}), "entropy2": ("entropy2", {}),
         "minmax": ("minmax", {}), "mse": ("mse", {})}


def amax_of(model: onnx.ModelProto, hists: dict, algo: str, params: dict) -> dict[str, float]:
    if algo != "mse":
        return ours.amax_table(model, hists, algo, **params)
    amax = {}
    for n, h in hists.items():
        if h.count:
            amax[n] = mse_amax(*ours.histogram_arrays(h))
    return ours.tie(model, amax)


def main(name: str, n_calib: int, n_eval: int) -> None:
    spec = R.load_spec(name)
    model = ours.prepare(onnx.load(str(spec.path())))
    calib, evx, targets = R.data(name, n_calib, n_eval)
    inp = model.graph.input[0].name
    hists, means = ours.collect(model, R.batches(calib, spec.batch, inp))
    rounded = ours.gptq(model, R.batches(calib[:ours.GPTQ_IMAGES], spec.batch, inp))
    ref = infer_model(model, evx, spec.batch)
    for label, (algo, params) in RULES.items():
        q = ours.qdq_model(model, amax_of(model, hists, algo, params), algo, means=means, rounded=rounded)
        outs = infer_model(q, evx, spec.batch)
        metrics = {k: round(v, 4) for k, v in metric_on(spec, ref, outs, targets).items()}
        log.info("%s %-18s %6.2f dB %s", name, label, R.sqnr_db(ref, outs), metrics)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
