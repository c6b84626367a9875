"""Bias correction on the real models: each rule's INT8 Q/DQ model with and without it.

    python benchmarks/realmodels/bias_correction.py --models effnet_lite0,ddddocr_rec,ddddocr_det \\
        --calib 32 --eval 160 [--rules percentile,minmax,entropy2,mse]

Same models, tensors, metrics and disjoint calibration / eval seeds as run.py. One pass of the FP32
model over the calibration tensors gives the histograms and the per-channel means of every Conv/Gemm
input (sppquant's `ActivationCollector`); the Q/DQ models are sppquant's export with an FP32 base, run
by ONNX Runtime as exact quantization (its integer fusions off, as sppquant runs them).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ours  # noqa: E402
import run as R  # noqa: E402

from sppquant.calibration import CalibrationTable  # noqa: E402
from sppquant.calibration.collect import ActivationCollector  # noqa: E402
from sppquant.model import weighted_layer_inputs  # noqa: E402
from sppquant.quantize.qdq import build_qdq_model  # noqa: E402

log = logging.getLogger("bias_correction")
PRIMARY = {"ddddocr_rec": "exact_match", "ddddocr_det": "box_f1_fp32", "effnet_lite0": "top1_agree_fp32"}


def collect(model: onnx.ModelProto, calib: np.ndarray, batch: int) -> ActivationCollector:
    names = ours.activations(model)
    inp = model.graph.input[0].name
    collector = ActivationCollector(names, mean_axes=weighted_layer_inputs(model))
    runner = ours.runner(model, extra_outputs=names, threads=R.THREADS)
    for i in range(0, len(calib), batch):
        feeds = {inp: calib[i:i + batch]}
        values = runner.run(feeds, [n for n in names if n != inp])
        collector.observe_all({**feeds, **values})
    return collector


def outputs(model: onnx.ModelProto, x: np.ndarray, batch: int) -> list[np.ndarray]:
    r = ours.runner(model, threads=R.THREADS)
    inp = model.graph.input[0].name
    first = r.output_names[0]
    return [r.run({inp: x[i:i + batch]}, [first])[first] for i in range(0, len(x), batch)]


def bench(name: str, rules: list[str], n_calib: int, n_eval: int) -> list[str]:
    spec = R.load_spec(name)
    model = ours.prepare(onnx.load(str(spec.path())))
    calib, evx, targets = R.data(name, n_calib, n_eval)
    t0 = time.perf_counter()
    col = collect(model, calib, spec.batch)
    means = col.channel_means.means()
    log.info("%s: histogram + mean pass %.1f s, %d layer inputs with means", name, time.perf_counter() - t0, len(means))
    metric = type(spec.metric)() if hasattr(spec.metric, "ref") else spec.metric
    ref = outputs(model, evx, spec.batch)
    fp32 = metric(ref, targets)
    key = PRIMARY.get(name, next(iter(fp32)))
    rows = [f"| {name} | FP32 | - | {key} {fp32[key]:.4f} | inf | - |"]
    for rule in rules:
        amax = ours.amax_table(model, col.histograms, rule)
        table = CalibrationTable.from_amax(ours.TRT_VERSION, ours.HEADERS.get(rule, "EntropyCalibration2"), amax)
        got = {}
        for corrected in (False, True):
            q, info = build_qdq_model(model, table, high_precision="fp32",
                                      channel_means=means if corrected else None)
            out = outputs(q, evx, spec.batch)
            got[corrected] = (metric(out, targets)[key], R.sqnr_db(ref, out), len(info.bias_corrections))
        for corrected, (m, sq, n) in got.items():
            rows.append(f"| {name} | {rule} | {'on (' + str(n) + ' layers)' if corrected else 'off'} | {m:.4f} | "
                        f"{sq:.2f} | {m - got[False][0]:+.4f} / {sq - got[False][1]:+.2f} dB |")
        log.info("%s", "\n".join(rows[-2:]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="effnet_lite0,ddddocr_rec,ddddocr_det")
    ap.add_argument("--rules", default="percentile,minmax,entropy2,mse")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=160)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    lines = [f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
             f"`python benchmarks/realmodels/bias_correction.py {' '.join(sys.argv[1:])}`", "",
             "| model | rule | bias correction | task metric | SQNR vs FP32 (dB) | change |", "|---|---|---|---|---|---|"]
    for name in args.models.split(","):
        lines += bench(name, args.rules.split(","), args.calib, args.eval)
    out = HERE / "results" / "bias_correction.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
