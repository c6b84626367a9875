"""Evaluate the demo detector: ``python -m sppquant.demo.eval_detector``.

Runs the shipped ONNX model (or ``--model``) in ONNX Runtime through the RoI SPP rewrite,
on the evaluation scenes, with exactly the deployed pipeline: project decode ->
`preprocess_image` (letterbox) -> `propose` on the network input -> network ->
`sppquant.tasks.detection_post.detect` -> boxes mapped back to source pixels. Reports
COCO mAP@[.5:.95] and mAP@.5 (pycocotools), per-class AP and proposal recall.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sppquant.demo.proposals import MAX_PROPOSALS, propose
from sppquant.demo.scenes import CATEGORY_NAMES
from sppquant.demo.train import DEMO_PREPROCESS
from sppquant.demo.train_detector import DET_SIZE, DETECTOR_MODEL
from sppquant.preprocess import Preprocessed, load_image, preprocess_image
from sppquant.tasks.detection_post import box_iou, detect, to_source

log = logging.getLogger(__name__)

EVAL_DIR = Path(__file__).resolve().parents[2] / "calib_data" / "scenes-eval"
IOU_THRESHOLD, SCORE_THRESHOLD, MAX_PER_IMAGE = 0.5, 0.05, 100


@dataclass
class DetectionEval:
    """What the evaluation measured (JSON-serialisable)."""

    images: int
    objects: int
    map_50_95: float
    map_50: float
    per_class_ap: dict[str, float] = field(default_factory=dict)  # AP@[.5:.95]
    per_class_ap50: dict[str, float] = field(default_factory=dict)
    proposal_recall: dict[str, float] = field(default_factory=dict)  # "0.5", "0.7"
    proposals_per_image: float = 0.0
    seconds: float = 0.0


def ort_session(model_path: Path):
    import onnx
    import onnxruntime as ort

    from sppquant.ops.roi_spp.onnx import rewrite_roi_spp_for_onnxruntime

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    model = rewrite_roi_spp_for_onnxruntime(onnx.load(str(model_path)))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def detect_image(session, image: np.ndarray, size: tuple[int, int] = DET_SIZE,
                 max_proposals: int = MAX_PROPOSALS) -> tuple[list[dict], np.ndarray, Preprocessed]:
    """One decoded image -> COCO-style detections (source pixels), the proposals and the geometry."""
    pre = preprocess_image(image, DEMO_PREPROCESS, size)
    proposals = propose(pre.tensor, max_proposals)
    rois = np.concatenate([np.zeros((len(proposals), 1), np.float32), proposals], axis=1)
    logits, deltas = session.run(["class_logits", "box_deltas"], {"image": pre.tensor[None], "rois": rois})
    dets = detect(proposals, logits, deltas, size, IOU_THRESHOLD, SCORE_THRESHOLD, MAX_PER_IMAGE)
    boxes = to_source(dets.boxes, pre.scale_x, pre.scale_y, pre.offset_x, pre.offset_y, pre.source_size)
    out = [{"category_id": int(label), "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": float(score)} for b, score, label in zip(boxes, dets.scores, dets.labels)]
    return out, proposals, pre


def _coco_eval(gt_path: Path, results: list[dict]):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(results) if results else COCO()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        ev.summarize()
    return ev, summary.getvalue()


def _per_class(ev) -> tuple[dict[str, float], dict[str, float]]:
    """AP per category from COCOeval's precision array [T, R, K, A, M] (area all, maxDets 100)."""
    prec = ev.eval["precision"][:, :, :, 0, -1]
    ap, ap50 = {}, {}
    for k, cat in enumerate(ev.params.catIds):
        p = prec[:, :, k]
        ap[CATEGORY_NAMES[cat]] = float(p[p > -1].mean()) if np.any(p > -1) else float("nan")
        p50 = prec[0, :, k]
        ap50[CATEGORY_NAMES[cat]] = float(p50[p50 > -1].mean()) if np.any(p50 > -1) else float("nan")
    return ap, ap50


def evaluate(model_path: Path = DETECTOR_MODEL, eval_dir: Path = EVAL_DIR,
             max_proposals: int = MAX_PROPOSALS) -> tuple[DetectionEval, str]:
    t0 = time.perf_counter()
    gt_path = eval_dir / "instances.json"
    coco = json.loads(gt_path.read_text())
    session = ort_session(model_path)
    results, best_ious, n_props = [], [], []
    for image in tqdm(coco["images"], desc="eval scenes"):
        dets, proposals, pre = detect_image(session, load_image(eval_dir / image["file_name"]), DET_SIZE, max_proposals)
        results += [dict(d, image_id=image["id"]) for d in dets]
        gt = np.array([a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"]], np.float64)
        gt_net = np.stack([gt[:, 0] * pre.scale_x + pre.offset_x, gt[:, 1] * pre.scale_y + pre.offset_y,
                           (gt[:, 0] + gt[:, 2]) * pre.scale_x + pre.offset_x,
                           (gt[:, 1] + gt[:, 3]) * pre.scale_y + pre.offset_y], axis=1)
        best_ious.append(box_iou(gt_net, proposals).max(axis=1) if len(proposals) else np.zeros(len(gt)))
        n_props.append(len(proposals))
    ev, summary = _coco_eval(gt_path, results)
    ap, ap50 = _per_class(ev)
    best = np.concatenate(best_ious)
    report = DetectionEval(
        images=len(coco["images"]), objects=len(coco["annotations"]), map_50_95=float(ev.stats[0]),
        map_50=float(ev.stats[1]), per_class_ap=ap, per_class_ap50=ap50,
        proposal_recall={"0.5": float(np.mean(best >= 0.5)), "0.7": float(np.mean(best >= 0.7))},
        proposals_per_image=float(np.mean(n_props)), seconds=time.perf_counter() - t0)
    return report, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DETECTOR_MODEL)
    parser.add_argument("--eval-dir", type=Path, default=EVAL_DIR)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--max-proposals", type=int, default=MAX_PROPOSALS, help="proposal cap per image")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from importlib.metadata import version

    report, summary = evaluate(args.model, args.eval_dir, args.max_proposals)
    log.info("pycocotools %s COCOeval (bbox):\n%s", version("pycocotools"), summary.rstrip())
    log.info("%d images, %d objects, %.1f proposals/image; proposal recall IoU>=0.5 %.3f, IoU>=0.7 %.3f",
             report.images, report.objects, report.proposals_per_image, report.proposal_recall["0.5"],
             report.proposal_recall["0.7"])
    log.info("%-6s %8s %8s", "class", "AP", "AP50")
    for name in CATEGORY_NAMES:
        log.info("%-6s %8.3f %8.3f", name, report.per_class_ap[name], report.per_class_ap50[name])
    log.info("FP32 (ONNX Runtime) mAP@[.5:.95] %.3f  mAP@.5 %.3f  (%.0f s)", report.map_50_95, report.map_50,
             report.seconds)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
