"""Detection wiring: the proposal hook as a feed builder, the decoder hook, COCO ground truth checked first.

Proposals come from the same preprocessed tensor the network reads, at every size, so
calibration, predict, report and the TensorRT calibrator all feed ``image`` + ``rois``.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sppquant.config import Config
from sppquant.data import FeedBuilder, ImageSet
from sppquant.errors import ConfigError, DataError, ModelError
from sppquant.preprocess import Geometry
from sppquant.tasks.detection import DetectionSettings

log = logging.getLogger(__name__)


def import_hook(spec: str, key: str, source: str) -> Callable[..., Any]:
    """``module:function`` -> the function; ConfigError (one line) naming the key."""
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{source}: {key}: cannot import {spec!r}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"{source}: {key}: {spec!r} is not a function")
    return fn


def _checked_boxes(got: Any, name: str) -> np.ndarray:
    """A proposal hook's answer as (K, 4) finite float32; ConfigError naming the hook otherwise."""
    boxes = np.asarray(got, np.float32) if got is not None else np.zeros((0, 4), np.float32)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.all(np.isfinite(boxes)):
        raise ConfigError(f"detection.proposals {name} returned {list(boxes.shape)} "
                          f"{'non-finite ' if boxes.size and not np.all(np.isfinite(boxes)) else ''}boxes; "
                          "expected (K, 4) finite [x1, y1, x2, y2] in network pixels")
    return boxes


def proposal_feeds(propose: Callable[[np.ndarray], np.ndarray], rois_input: str,
                   max_regions: int = 300, name: str = "hook") -> FeedBuilder:
    """A feed builder: every image's proposals as ``(R, 5)`` rows ``[batch index, x1, y1, x2, y2]``.

    Proposals come from the preprocessed tensor itself, so they are already in network
    pixels of the letterboxed canvas: the image's geometry maps them, like the network's
    boxes, back to source pixels. At most ``max_regions`` per image (the first, i.e. best
    ranked); an image without proposals gets one whole-canvas region, so R >= 1.
    """

    def build(x: np.ndarray, geometry: Sequence[Geometry]) -> Mapping[str, np.ndarray]:
        rows = []
        for i, img in enumerate(x):
            boxes = _checked_boxes(propose(img), name)[:max_regions]
            if len(boxes) == 0:
                boxes = np.array([[0, 0, img.shape[2], img.shape[1]]], np.float32)
            rows.append(np.concatenate([np.full((len(boxes), 1), i, np.float32), boxes], axis=1))
        return {rois_input: np.ascontiguousarray(np.concatenate(rows), np.float32)}

    return build


def detection_settings(cfg: Config) -> DetectionSettings:
    det, source = cfg.detection, str(cfg.source or "config")
    decoder = None if det.decoder == "builtin" else import_hook(det.decoder, "detection.decoder", source)
    return DetectionSettings(det.rois_input, det.iou_threshold, det.score_threshold, det.max_detections, decoder,
                             None if decoder is None else det.decoder, agreement_score=det.agreement_score)


def extra_feeds(cfg: Config, input_names: Sequence[str]) -> FeedBuilder | None:
    det = cfg.detection
    if det.proposals is None:
        return None
    if det.rois_input not in input_names:
        raise ConfigError(f"{cfg.source or 'config'}: detection.rois_input: the model has no input {det.rois_input!r} "
                          f"(inputs: {', '.join(input_names)})")
    return proposal_feeds(import_hook(det.proposals, "detection.proposals", str(cfg.source or "config")),
                          det.rois_input, det.max_regions, det.proposals)


def _check_boxes(gt: Mapping[str, Any], path: Path) -> None:
    sizes = {im["id"]: (im.get("width"), im.get("height")) for im in gt["images"]}
    cats = {c["id"] for c in gt["categories"]}
    for a in gt["annotations"]:
        if a.get("category_id") not in cats:
            raise DataError(f"{path}: annotation {a.get('id')} has unknown category id {a.get('category_id')!r}")
        if a.get("image_id") not in sizes:
            raise DataError(f"{path}: annotation {a.get('id')} refers to unknown image id {a.get('image_id')!r}")
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: annotation {a.get('id')} bbox {a.get('bbox')!r} is not [x, y, w, h] "
                            "numbers") from None
        if not all(np.isfinite((x, y, w, h))):
            raise DataError(f"{path}: annotation {a.get('id')} bbox {a['bbox']} is not finite")
        if w < 0 or h < 0:
            raise DataError(f"{path}: annotation {a.get('id')} has x2 < x1 or y2 < y1 (bbox {a['bbox']})")
        iw, ih = sizes[a["image_id"]]
        if x < 0 or y < 0 or (iw is not None and x + w > iw + 0.5) or (ih is not None and y + h > ih + 0.5):
            raise DataError(f"{path}: annotation {a.get('id')} bbox {a['bbox']} lies outside its {iw}x{ih} image")


def load_ground_truth(path: Path, images: ImageSet) -> tuple[dict[str, Any], ImageSet]:
    """The COCO JSON, checked against the image folder; ``images`` labelled with COCO image ids."""
    try:
        gt = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read COCO annotations: {exc}") from None
    if not isinstance(gt, dict) or not all(isinstance(gt.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError(f"{path}: not COCO JSON (needs lists 'images', 'annotations', 'categories')")
    _check_boxes(gt, path)
    root = images.root or Path(path).parent
    by_name = {im["file_name"]: im["id"] for im in gt["images"]}
    missing = [n for n in by_name if not (root / n).is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} annotated image(s) missing from {root}, e.g. {missing[0]!r}")
    ids = [by_name.get(images.relative(p)) for p in images.paths]
    keep = [i for i, v in enumerate(ids) if v is not None]
    if not keep:
        raise DataError(f"{path}: none of the {len(images)} images in {root} is annotated")
    if len(keep) < len(ids):
        log.warning("%d image(s) in %s have no COCO entry and are not evaluated", len(ids) - len(keep), root)
    labelled = replace(images, paths=tuple(images.paths[i] for i in keep), labels=tuple(int(ids[i]) for i in keep))
    return gt, labelled


def probe_decoder(cfg: Config, model: Any, path: Path, task: Any, images: ImageSet) -> None:
    """One image through the FP32 model and the decoder, before any calibration or report work.

    Why: a decoder that does not fit the model's outputs (a user's hook above all) must
    fail as one line before anything is written, not halfway through the report.
    """
    from sppquant.data import iter_batches  # noqa: PLC0415
    from sppquant.pipeline.context import ort_runner  # noqa: PLC0415

    one = replace(images, paths=images.paths[:1], labels=None if images.labels is None else images.labels[:1])
    feeds = extra_feeds(cfg, [i.name for i in model.graph.input])
    with ort_runner(cfg, model) as runner:
        for batch in iter_batches(one, cfg.preprocess, cfg.input.sizes[:1], 1, bad_files="error", workers=1,
                                  progress=False, extra_feeds=feeds):
            out = runner.run(batch.feeds(0, cfg.model.input_name), list(runner.model_outputs))
            try:
                task.decode({**out, **batch.extra[0]}, batch.geometry[0])
            except ModelError as exc:
                raise ModelError(f"{path}: {exc}") from None
