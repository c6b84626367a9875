"""The default Q/DQ model (percentile 99.99 + GPTQ weights) with the first layers' input in INT8 (the old
default) and left float (`calibration.input_layer: float`, the default now), on the same cached tensors.

    python benchmarks/realmodels/input_layer.py effnet_lite0 64 160     # model, calibration images, eval images
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ours  # noqa: E402
from prepared import judge, prepare  # noqa: E402

from sppquant.model import input_side_tensors  # noqa: E402

log = logging.getLogger("input_layer")


def main(name: str, n_calib: int, n_eval: int) -> None:
    p = prepare(name, n_calib, n_eval)
    amax = ours.amax_table(p.model, p.hists, "percentile")
    front = sorted(input_side_tensors(p.model) & set(amax))
    log.info("%s: input side %s (amax %s)", name, front, [round(amax[t], 3) for t in front])
    for layer in ("int8", "float"):
        q = ours.qdq_model(p.model, amax, "percentile", means=p.means, rounded=p.rounded, input_layer=layer)
        sqnr, metrics = judge(p, q)
        log.info("%s input_layer=%-5s %6.2f dB %s", name, layer, sqnr, metrics)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
