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
from mse import mse_amax  # noqa: E402
from prepared import judge, prepare  # noqa: E402

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
    p = prepare(name, n_calib, n_eval)
    for label, (algo, params) in RULES.items():
        q = ours.qdq_model(p.model, amax_of(p.model, p.hists, algo, params), algo, means=p.means, rounded=p.rounded)
        sqnr, metrics = judge(p, q)
        log.info("%s %-18s %6.2f dB %s", name, label, sqnr, metrics)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
