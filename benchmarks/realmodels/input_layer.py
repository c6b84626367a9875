"""The default Q/DQ model (percentile 99.99 + GPTQ weights) with the first layers' input in INT8 (the old
default) and left float (`calibration.input_layer: float`, the default now), on the same cached tensors.

    python benchmarks/realmodels/input_layer.py effnet_lite0 64 160     # model, calibration images, eval images
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ours  # noqa: E402
import run as R  # noqa: E402
from tune_auto import infer_model, metric_on  # noqa: E402

from sppquant.model import input_side_tensors  # noqa: E402

log = logging.getLogger("input_layer")


def main(name: str, n_calib: int, n_eval: int) -> None:
    spec = R.load_spec(name)
    model = ours.prepare(onnx.load(str(spec.path())))
    calib, evx, targets = R.data(name, n_calib, n_eval)
    inp = model.graph.input[0].name
    hists, means = ours.collect(model, R.batches(calib, spec.batch, inp))
    rounded = ours.gptq(model, R.batches(calib[:ours.GPTQ_IMAGES], spec.batch, inp))
    amax = ours.amax_table(model, hists, "percentile")
    ref = infer_model(model, evx, spec.batch)
    front = sorted(input_side_tensors(model) & set(amax))
    log.info("%s: input side %s (amax %s)", name, front, [round(amax[t], 3) for t in front])
    for layer in ("int8", "float"):
        q = ours.qdq_model(model, amax, "percentile", means=means, rounded=rounded, input_layer=layer)
        outs = infer_model(q, evx, spec.batch)
        metrics = {k: round(v, 4) for k, v in metric_on(spec, ref, outs, targets).items()}
        log.info("%s input_layer=%-5s %6.2f dB %s", name, layer, R.sqnr_db(ref, outs), metrics)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
