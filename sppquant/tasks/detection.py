"""Detection: region classifier outputs (SPP-net / Fast R-CNN) -> boxes in source pixels; COCO mAP, F1 vs FP32.

The model reads the image and the regions (``rois`` (R, 5) ``[batch, x1, y1, x2, y2]`` in
network pixels) and writes class logits (R, K+1) (background first) and class-specific
deltas (R, 4(K+1)). The built-in decoder is `detection_post.detect`; a user's detector
may bring a ``module:function`` decoder instead. Metrics keep every image's detections
(mergeable: shards are unions of image ids) and run pycocotools once, in ``result()``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sppquant.errors import ModelError
from sppquant.preprocess import Geometry
from sppquant.tasks.base import Column, OutputInfo
from sppquant.tasks.detection_post import Detections, box_iou, detect, to_source

# (proposals (R, 4) network px, {output: array of those rows}, canvas (H, W)) -> Detections in network px.
Decoder = Callable[[np.ndarray, Mapping[str, np.ndarray], tuple[int, int]], Detections]


@dataclass(frozen=True)
class DetectionSettings:
    """What decoding needs; from the config's ``detection:`` section."""

    rois_input: str = "rois"
    iou_threshold: float = 0.5
    score_threshold: float = 0.05
    max_detections: int = 100
    decoder: Decoder | None = None  # None: the built-in Fast R-CNN decoder
    decoder_name: str | None = None  # the hook's module:function, for messages
    ground_truth: Mapping[str, Any] | None = None  # COCO dict (images' ids = ImageSet labels)
    agreement_iou: float = 0.5
    agreement_score: float = 0.5  # F1 vs FP32 counts the boxes a user keeps, not the 0.05-score tail


@dataclass(frozen=True)
class DetectionTarget:
    """Per image: its COCO image id and where it lies in the network input."""

    image_id: int
    geometry: Geometry


def _split_outputs(outputs: Mapping[str, np.ndarray], rois_input: str) -> tuple[np.ndarray, np.ndarray]:
    """(class logits (R, K+1), deltas (R, 4(K+1))): by name, else by width."""
    named = [outputs[k] for k in ("class_logits", "box_deltas") if k in outputs]
    if len(named) == 2:
        return named[0], named[1]
    arrays = sorted((v for k, v in outputs.items() if k != rois_input), key=lambda a: a.shape[-1])
    if len(arrays) != 2:
        raise ModelError(f"the built-in detection decoder needs two outputs (class logits, box deltas), got "
                         f"{len(arrays)} (set detection.decoder: module:function)")
    return arrays[0], arrays[1]


def _run_hook(settings: DetectionSettings, proposals: np.ndarray, outputs: Mapping[str, np.ndarray],
              canvas: tuple[int, int]) -> Detections:
    """The user's decoder, its result checked: (D, 4) boxes, (D,) scores and labels (ModelError otherwise)."""
    name = settings.decoder_name or "detection.decoder"
    try:
        got = settings.decoder(proposals, outputs, canvas)
        boxes, scores, labels = (np.asarray(getattr(got, k)) for k in ("boxes", "scores", "labels"))
    except Exception as exc:  # a user's hook: any failure is "outputs do not fit the decoder"
        raise ModelError(f"detection.decoder {name} failed on outputs "
                         f"{ {k: list(v.shape) for k, v in outputs.items()} }: {type(exc).__name__}: {exc}") from None
    d = len(scores)
    if boxes.reshape(-1).size != 4 * d or len(labels) != d or scores.ndim != 1:
        raise ModelError(f"detection.decoder {name} returned boxes {list(boxes.shape)}, scores {list(scores.shape)}, "
                         f"labels {list(labels.shape)}; expected (D, 4), (D,), (D,)")
    return Detections(boxes.reshape(d, 4).astype(np.float32), scores.astype(np.float32), labels.astype(np.int64))


def decode_images(outputs: Mapping[str, np.ndarray], geometry: Sequence[Geometry],
                  settings: DetectionSettings) -> list[Detections]:
    """Per image of the batch: final detections in SOURCE pixels."""
    rois = np.asarray(outputs[settings.rois_input], np.float32).reshape(-1, 5)
    rest = {k: np.asarray(v) for k, v in outputs.items() if k != settings.rois_input}
    out = []
    for b, geo in enumerate(geometry):
        rows = np.flatnonzero(rois[:, 0] == b)
        per = {k: v[rows] for k, v in rest.items()}
        if settings.decoder is not None:
            dets = _run_hook(settings, rois[rows, 1:], per, geo.canvas)
        else:
            logits, deltas = _split_outputs(per, settings.rois_input)
            if logits.ndim != 2 or deltas.shape != (len(rows), 4 * logits.shape[1]):
                raise ModelError(f"the built-in detection decoder needs class logits (R, K+1) and box deltas "
                                 f"(R, 4(K+1)) for R={len(rows)} regions, got {list(logits.shape)} and "
                                 f"{list(deltas.shape)} (set detection.decoder: module:function)")
            dets = detect(rois[rows, 1:], logits, deltas, geo.canvas, settings.iou_threshold,
                          settings.score_threshold, settings.max_detections)
        boxes = to_source(dets.boxes, geo.scale_x, geo.scale_y, geo.offset[1], geo.offset[0], geo.source)
        out.append(Detections(boxes.astype(np.float32), np.asarray(dets.scores, np.float32),
                              np.asarray(dets.labels, np.int64)))
    return out


def box_f1(ref: Detections, out: Detections, iou: float = 0.5) -> tuple[int, int, int]:
    """(matches, ref boxes, out boxes): greedy same-label matching, best score first, IoU >= ``iou``."""
    used = np.zeros(len(ref), bool)
    matches = 0
    ious = box_iou(out.boxes, ref.boxes) if len(ref) and len(out) else np.zeros((len(out), len(ref)))
    for i in np.argsort(-np.asarray(out.scores), kind="stable"):
        cand = np.flatnonzero(~used & (ref.labels == out.labels[i]) & (ious[i] >= iou))
        if len(cand):
            used[cand[np.argmax(ious[i, cand])]] = True
            matches += 1
    return matches, len(ref), len(out)


def _confident(d: Detections, floor: float) -> Detections:
    keep = np.asarray(d.scores) >= floor
    return Detections(d.boxes[keep], d.scores[keep], d.labels[keep])


def coco_evaluate(gt: Mapping[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """pycocotools bbox evaluation: mAP@[.5:.95], mAP@.5, per-class AP and the IoU-0.5 PR curve."""
    from pycocotools.coco import COCO  # noqa: PLC0415 - loaded when a detection report runs
    from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {k: gt[k] for k in ("images", "annotations", "categories")}
        coco.createIndex()
        dt = coco.loadRes(results) if results else COCO()
        ev = COCOeval(coco, dt, iouType="bbox")
        ev.params.imgIds = sorted(im["id"] for im in gt["images"])
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # [T, R, K] area all, maxDets 100
    names = {c["id"]: c["name"] for c in gt["categories"]}
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = prec[:, :, k]
        per_class[str(names[cat])] = float(p[p > -1].mean()) if np.any(p > -1) else None  # JSON: no NaN
    p50 = prec[0]
    curve = [float(np.mean(row[row > -1])) if np.any(row > -1) else 0.0 for row in p50]
    return {"map": float(ev.stats[0]), "map50": float(ev.stats[1]), "per_class_ap": per_class,
            "pr_curve_50": {"recall": [float(r) for r in ev.params.recThrs], "precision": curve}}


@dataclass
class DetectionMetrics:
    """Detections per image id (dict union merges exactly) and F1 counts against FP32 (sums)."""

    settings: DetectionSettings
    labelled: bool
    detections: dict[int, Detections] = field(default_factory=dict)
    matches: int = 0
    ref_boxes: int = 0
    out_boxes: int = 0
    _result: dict[str, Any] | None = field(default=None, repr=False, compare=False)  # COCOeval runs once

    def update(self, ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray],
               targets: Sequence[Any] | None) -> None:
        self._result = None
        if not targets or not isinstance(targets[0], DetectionTarget):
            raise ModelError("task 'detection' needs detection targets (report.annotations and the detection section)")
        geo = [t.geometry for t in targets]
        ref_d = decode_images(ref, geo, self.settings)
        out_d = decode_images(out, geo, self.settings)
        for t, r, o in zip(targets, ref_d, out_d):
            self.detections[t.image_id] = o
            m, nr, no = box_f1(_confident(r, self.settings.agreement_score),
                               _confident(o, self.settings.agreement_score), self.settings.agreement_iou)
            self.matches, self.ref_boxes, self.out_boxes = self.matches + m, self.ref_boxes + nr, self.out_boxes + no

    def merge(self, other: DetectionMetrics) -> DetectionMetrics:
        return DetectionMetrics(self.settings, self.labelled, {**self.detections, **other.detections},
                                self.matches + other.matches, self.ref_boxes + other.ref_boxes,
                                self.out_boxes + other.out_boxes)

    def coco_results(self, label_to_category: Sequence[int]) -> list[dict[str, Any]]:
        return [{"image_id": int(i), "category_id": int(label_to_category[int(lab)]),
                 "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(s)}
                for i, d in sorted(self.detections.items()) for b, s, lab in zip(d.boxes, d.scores, d.labels)
                if int(lab) < len(label_to_category)]

    def result(self) -> dict[str, Any]:
        """Counts, F1 vs FP32 and (with ground truth) COCO mAP; computed once per state (reports ask thrice)."""
        if self._result is None:
            self._result = self._compute()
        return dict(self._result)

    def _compute(self) -> dict[str, Any]:
        denom = self.ref_boxes + self.out_boxes
        res: dict[str, Any] = {"images": len(self.detections),
                               "detections": sum(len(d) for d in self.detections.values()),
                               "agreement_f1": 2 * self.matches / denom if denom else 1.0}
        gt = self.settings.ground_truth
        if self.labelled and gt is not None:
            cats = sorted(c["id"] for c in gt["categories"])  # label k is the k-th category id
            scored = dict(gt, images=[im for im in gt["images"] if im["id"] in self.detections])
            scored["annotations"] = [a for a in gt["annotations"] if a["image_id"] in self.detections]
            res.update(coco_evaluate(scored, self.coco_results(cats)))
        return res


@dataclass(frozen=True)
class DetectionTask:
    """Region classifier + box regression; see the module docstring."""

    settings: DetectionSettings = DetectionSettings()
    name: str = "detection"
    description: str = "image + regions in, class logits and box deltas out: COCO mAP with annotations, box F1 vs FP32"
    primary: str = "map50"

    def configure(self, settings: DetectionSettings) -> DetectionTask:
        return replace(self, settings=settings)

    def check_outputs(self, outputs: Sequence[OutputInfo], source: str) -> None:
        if self.settings.decoder is not None:
            return  # the user's decoder reads its own outputs
        floats = [o for o in outputs if o.is_float]
        if len(floats) != 2 or any(len(o.shape) != 2 for o in floats):
            raise ModelError(f"{source}: the built-in detection decoder needs two 2-D float outputs (class logits "
                             f"(R, K+1), box deltas (R, 4(K+1))), the model has {[(o.name, list(o.shape)) for o in outputs]}"
                             " (set detection.decoder: module:function)")
        a, b = sorted((o.shape[1] for o in floats), key=lambda w: -1 if w is None else w)
        if a is not None and b is not None and b != 4 * a:
            raise ModelError(f"{source}: the built-in detection decoder needs box deltas 4x as wide as the class logits "
                             f"(4(K+1) vs K+1), the outputs are {a} and {b} wide (set detection.decoder: module:function)")

    def targets(self, labels: Sequence[Any] | None, geometry: Sequence[Geometry]) -> list[DetectionTarget] | None:
        """The batch's image ids (the image set's labels) paired with their geometry."""
        return None if labels is None else [DetectionTarget(int(i), g) for i, g in zip(labels, geometry)]

    def decode(self, outputs: Mapping[str, np.ndarray], geometry: Sequence[Geometry],
               top_k: int = 1) -> list[dict[str, Any]]:
        return [{"detections": [{"box": [round(float(v), 2) for v in b], "score": float(s), "label": int(lab)}
                                for b, s, lab in zip(d.boxes, d.scores, d.labels)]}
                for d in decode_images(outputs, geometry, self.settings)]

    def format_prediction(self, prediction: Mapping[str, Any]) -> str:
        dets = prediction["detections"]
        return f"{len(dets)} boxes\t" + "  ".join(f"{d['label']}:{d['score']:.2f}@{[round(v) for v in d['box']]}"
                                                   for d in dets[:5])

    def new_metrics(self, outputs: Sequence[str], labelled: bool) -> DetectionMetrics:
        return DetectionMetrics(self.settings, labelled)

    def extra_plots(self, results: Mapping[str, DetectionMetrics], labels: Mapping[str, str],
                    paths: Mapping[int, Any], out_dir: Any) -> list[Any]:
        """PR curves per precision and a grid of sample images with FP32 and INT8 boxes (report hook)."""
        from sppquant.tasks.detection_plots import plot_pr_curves, plot_samples  # noqa: PLC0415 - matplotlib

        done = [plot_pr_curves({k: m.result() for k, m in results.items()}, labels, out_dir / "pr_curves.png")]
        int8 = next((k for k in results if k.startswith("int8")), None)
        if int8 is not None and "fp32" in results:
            done.append(plot_samples(results["fp32"], results[int8], labels[int8], paths, out_dir / "samples.png"))
        return [p for p in done if p is not None]

    def columns(self, labelled: bool) -> list[Column]:
        cols = [Column("map", "mAP@[.5:.95]", "pct", True), Column("map50", "mAP@.5", "pct", True)] if labelled else []
        return cols + [Column("agreement_f1", "box F1 vs FP32 (IoU .5)", "pct"), Column("detections", "boxes", "g")]
