"""What a tune budget can reach on a model: the floor of its task metric under non-INT8 perturbations.

    python benchmarks/realmodels/tune_floor.py --models ddddocr_det --calib 32 --eval 80

Per model, on the eval images (whole set and the tune / held-out halves `tune_auto.py` uses):

- FP16 (ONNX Runtime's FP16 model as sppquant's report runs it: FP16 storage; ops without an FP16 CPU
  kernel compute in FP32 between FP16 values);
- INT8 weights only (per-channel, activations FP32) and INT8 activations only (the percentile table,
  weights FP32), both with sppquant's Q/DQ placement;
- the whole INT8 model (percentile);
- detector only: how many FP32 detections sit near the decision thresholds (score within +-20% of
  ddddocr's 0.1 threshold; pre-NMS candidates whose overlap with a kept box is within +-0.05 of the
  0.45 NMS IoU), i.e. boxes that any small perturbation can add or remove.

Writes results/floor_<model>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ours  # noqa: E402
import run as R  # noqa: E402
from tune_auto import TUNE_METRIC, infer_model, metric_on  # noqa: E402

log = logging.getLogger("tune_floor")


def variants(model: onnx.ModelProto, amax: dict[str, float]) -> dict[str, onnx.ModelProto]:
    """The perturbed models: FP16, INT8 weights only, INT8 activations only, full INT8."""
    from sppquant.calibration.table import CalibrationTable
    from sppquant.quantize.fp16 import ort_fp16_model
    from sppquant.quantize.qdq import build_qdq_model

    table = CalibrationTable.from_amax(ours.TRT_VERSION, "EntropyCalibration2", amax)
    fp16, _, _ = ort_fp16_model(model)
    w_only, _ = build_qdq_model(model, table, only=[], high_precision="fp32")  # weights' pairs, no activation
    a_only, _ = build_qdq_model(model, table, quantize_weights=False, high_precision="fp32")
    return {"fp16": fp16, "int8 weights only": w_only, "int8 activations only": a_only,
            "int8 (percentile)": ours.qdq_model(model, amax, "percentile")}


def near_thresholds(outputs: list[np.ndarray], score_thr: float = 0.1, band: float = 0.2,
                    nms_thr: float = 0.45, iou_band: float = 0.05) -> dict[str, int]:
    """Detections of the FP32 model that a small perturbation can flip (see the module docstring)."""
    near_score = near_nms = kept = 0
    for o in outputs:
        for p in o:
            boxes, scores = _decoded(p)
            keep = scores > score_thr
            kept += int(keep.sum())
            near_score += int(((scores > score_thr * (1 - band)) & (scores < score_thr * (1 + band))).sum())
            iou = _iou_matrix(boxes[keep])
            near_nms += int((np.abs(np.triu(iou, 1) - nms_thr) < iou_band).sum())
    return {"candidates_above_score": kept, "near_score_threshold": near_score, "pairs_near_nms_iou": near_nms}


def _iou_matrix(b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    u = area[:, None] + area[None, :] - inter
    return np.where(u > 0, inter / np.where(u > 0, u, 1), 0.0)


def _decoded(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ddddocr's decode (as models.det_boxes) before the threshold: xyxy boxes and scores."""
    from models import DET_SIZE

    grids, exp = [], []
    for s in (8, 16, 32):
        n = DET_SIZE // s
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        exp.append(np.full((n * n, 1), s))
    grid, st = np.concatenate(grids), np.concatenate(exp)
    q = p.astype(np.float64).copy()
    q[:, :2] = (q[:, :2] + grid) * st
    q[:, 2:4] = np.exp(q[:, 2:4]) * st
    xyxy = np.stack([q[:, 0] - q[:, 2] / 2, q[:, 1] - q[:, 3] / 2, q[:, 0] + q[:, 2] / 2, q[:, 1] + q[:, 3] / 2], 1)
    return xyxy, (q[:, 4:5] * q[:, 5:]).max(1)


def _per_image(outs: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """One output per image (the halves index images; batched models return one array per batch)."""
    return outs if batch == 1 else [o[j:j + 1] for o in outs for j in range(len(o))]


def floor(name: str, n_calib: int, n_eval: int) -> dict:
    spec = R.load_spec(name)
    model = ours.prepare(onnx.load(str(spec.path())))
    calib, evx, targets = R.data(name, n_calib, n_eval)
    inp = model.graph.input[0].name
    amax = ours.amax_table(model, ours.collect_histograms(model, R.batches(calib, spec.batch, inp)), "percentile")
    metric = TUNE_METRIC[name]
    ref = _per_image(infer_model(model, evx, spec.batch), spec.batch)
    halves = {"all": list(range(len(evx))), "tune": list(range(0, len(evx), 2)), "held-out": list(range(1, len(evx), 2))}
    rows = {}
    for key, m in variants(model, amax).items():
        t0 = time.perf_counter()
        outs = _per_image(infer_model(m, evx, spec.batch), spec.batch)
        rows[key] = {h: metric_on(spec, [ref[i] for i in idx], [outs[i] for i in idx], [targets[i] for i in idx])[metric]
                     for h, idx in halves.items()}
        rows[key]["sqnr_db"] = R.sqnr_db(ref, outs)
        log.info("%s %s: %s (%.0f s)", name, key, rows[key], time.perf_counter() - t0)
    res = {"model": name, "metric": metric, "rows": rows, "eval_images": len(evx)}
    if name == "ddddocr_det":
        res["fp32_boxes"] = {h: int(sum(len(R_boxes) for i in idx for R_boxes in _boxes(ref[i]))) for h, idx in halves.items()}
        res["near"] = near_thresholds(ref)
    return res


def _boxes(o: np.ndarray) -> list[np.ndarray]:
    from models import det_boxes

    return [det_boxes(p) for p in o]


def markdown(res: dict) -> str:
    out = [f"{res['date']}, {res['machine']}, `{res['command']}`, wall {res['wall_s']:.0f} s.", "",
           f"| variant | {res['metric']} all | tune half | held-out half | SQNR vs FP32 (dB) |", "|---|---|---|---|---|"]
    for k, r in res["rows"].items():
        out.append(f"| {k} | {r['all']:.4f} | {r['tune']:.4f} | {r['held-out']:.4f} | {r['sqnr_db']:.1f} |")
    if "near" in res:
        out += ["", f"FP32 boxes: {res['fp32_boxes']}; near the thresholds: {res['near']}."]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ddddocr_det")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=80)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cmd = "python benchmarks/realmodels/tune_floor.py " + " ".join(sys.argv[1:])
    for name in args.models.split(","):
        t0 = time.perf_counter()
        res = floor(name, args.calib, args.eval)
        res.update(command=cmd, wall_s=time.perf_counter() - t0, machine=f"{platform.node()} ({os.cpu_count()} cores)",
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load=os.getloadavg()[0])
        (R.RESULTS / f"floor_{name}.json").write_text(json.dumps(res, indent=1, default=float))
        (R.RESULTS / f"floor_{name}.md").write_text(markdown(res))
        log.info("%s", markdown(res))


if __name__ == "__main__":
    main()
