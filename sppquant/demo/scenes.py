"""Digit scenes for the SPP-net detection demo: real handwritten digits on cluttered canvases.

Detection needs what classification did not: several objects per image at varied scales,
clutter that looks a bit like ink (lines, blobs, textures, photos), overlaps and objects
cut by the border, and boxes that are exact. Digits are scikit-learn's 1797 real 8x8
scans (``load_digits``, bundled), upsampled and blended onto backgrounds made from
colour gradients and scikit-image's bundled textures and photos (no download).

Train / calibration / evaluation scenes draw their digits from disjoint stratified
subsets of the 1797 scans (split by source digit), so evaluation never sees a training
scan. Every scene is a pure function of ``(seed, stream, index, epoch)``.
``python -m sppquant.demo.scenes`` rewrites ``calib_data/scenes`` and
``calib_data/scenes-eval`` (+ COCO ``instances.json``).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sppquant.demo.render import glyph_alpha

log = logging.getLogger(__name__)

SEED = 20261204
STREAM_TRAIN, STREAM_CALIB, STREAM_EVAL = 11, 12, 13
CALIB_FRACTION, EVAL_FRACTION = 0.1, 0.3  # of the 1797 scans; the rest trains
MIN_SIDE, MAX_SIDE = 96, 288
MAX_HEIGHT, MIN_WIDTH = 208, 80
MIN_ASPECT, MAX_ASPECT = 0.6, 1.8  # canvas W / H
MAX_DIGITS = 6
DIGIT_FRACTION = (0.2, 0.55)  # digit height / canvas short side
MIN_DIGIT_PX = 16
MAX_IOU = 0.3  # digits may overlap up to this IoU
BORDER_SHARE = 0.2  # placements allowed to leave the canvas (at most 25% of the glyph box)
INK_THRESHOLD = 0.35  # alpha at or above which a pixel counts as ink for the box
MIN_CONTRAST = 80.0  # |luma(digit) - luma(background under it)|, 8-bit units
JPEG_QUALITY = 90
CATEGORY_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEXTURES = ("brick", "grass", "gravel", "camera", "moon", "coins", "clock", "cell")
PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry", "hubble_deep_field")


@dataclass(frozen=True)
class SceneSplit:
    """The 1797 scans (N x 8 x 8, 0..16), labels, and disjoint sorted index sets."""

    images: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    calib: np.ndarray
    eval: np.ndarray

    def pool(self, stream: int) -> np.ndarray:
        return {STREAM_TRAIN: self.train, STREAM_CALIB: self.calib, STREAM_EVAL: self.eval}[stream]


@dataclass(frozen=True)
class Scene:
    """BGR uint8 image, boxes ``(K, 4)`` float32 ``[x1, y1, x2, y2]`` (pixel edges), labels, source scan ids."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    digit_ids: np.ndarray


def load_scene_split(seed: int = SEED) -> SceneSplit:
    """Stratified split of ``load_digits`` by source scan: train / calib / eval never share a scan."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    rest, evl = train_test_split(index, test_size=EVAL_FRACTION, random_state=seed, stratify=digits.target)
    train, calib = train_test_split(rest, test_size=CALIB_FRACTION / (1 - EVAL_FRACTION), random_state=seed + 1,
                                    stratify=digits.target[rest])
    return SceneSplit(digits.images.astype(np.float32), digits.target.astype(np.int64),
                      np.sort(train), np.sort(calib), np.sort(evl))


def scene_rng(seed: int, stream: int, index: int, epoch: int = 0) -> np.random.Generator:
    """One scene's generator: independent of the order scenes are made in."""
    return np.random.default_rng([int(seed), int(stream), int(index), int(epoch)])


@functools.cache
def _source_image(name: str) -> np.ndarray:
    """A scikit-image sample as float32 HxWx3 BGR in 0..255 (bundled with the wheel)."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, 2::-1].astype(np.float32))


def _luma(bgr: np.ndarray) -> np.ndarray:
    return 0.114 * bgr[..., 0] + 0.587 * bgr[..., 1] + 0.299 * bgr[..., 2]


def _crop_resized(rng: np.random.Generator, src: np.ndarray, h: int, w: int) -> np.ndarray:
    sh, sw = src.shape[:2]
    frac = rng.uniform(0.3, 1.0)
    ch, cw = max(8, int(sh * frac)), max(8, int(min(sw, sh * frac * w / h)))
    y0, x0 = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
    return cv2.resize(src[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_AREA)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gradient, tinted texture or faded photo, then lines, blobs and noise (float32 BGR 0..255)."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    kind = rng.choice(["gradient", "texture", "photo"], p=[0.3, 0.4, 0.3])
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        img = c0 + (c1 - c0) * t[:, :, None]
    elif kind == "texture":
        t = _luma(_crop_resized(rng, _source_image(str(rng.choice(TEXTURES))), h, w)) / 255.0
        img = c0 + (c1 - c0) * rng.uniform(0.2, 0.7) * t[:, :, None]
    else:
        photo = _crop_resized(rng, _source_image(str(rng.choice(PHOTOS))), h, w)
        amp = rng.uniform(0.3, 0.8)
        img = photo.mean(axis=(0, 1)) + amp * (photo - photo.mean(axis=(0, 1)))
    img = np.ascontiguousarray(img, dtype=np.float32)
    for _ in range(int(rng.integers(0, 6))):  # lines: thin strokes like digit strokes
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 4))):  # blobs: digit-sized distractors
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(3, max(4, w // 6))), int(rng.integers(3, max(4, h // 6))))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, rng.uniform(0, 255, 3).tolist(), -1)
    return img


def _iou(box: np.ndarray, boxes: list[np.ndarray]) -> float:
    """IoU of one box with the placed ones, in float32 like the boxes: the committed scenes were drawn with
    it (tasks.detection_post.box_iou computes in float64 and could flip a placement at MAX_IOU)."""
    if not boxes:
        return 0.0
    b = np.asarray(boxes)
    iw = np.clip(np.minimum(box[2], b[:, 2]) - np.maximum(box[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], b[:, 3]) - np.maximum(box[1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return float((inter / union).max())


def _draw_digit(rng: np.random.Generator, img: np.ndarray, glyph: np.ndarray,
                boxes: list[np.ndarray]) -> np.ndarray | None:
    """Blend one glyph onto ``img`` in place; returns its visible ink box, or None when no place fits."""
    h, w = img.shape[:2]
    gh = max(MIN_DIGIT_PX, int(min(h, w) * rng.uniform(*DIGIT_FRACTION)))
    gw = max(8, int(round(gh * rng.uniform(0.65, 1.0))))
    alpha = glyph_alpha(glyph, gh, gw)
    ink = alpha >= INK_THRESHOLD
    for _ in range(30):
        margin_y, margin_x = (gh // 4, gw // 4) if rng.uniform() < BORDER_SHARE else (0, 0)
        y0 = int(rng.integers(-margin_y, h - gh + margin_y + 1))
        x0 = int(rng.integers(-margin_x, w - gw + margin_x + 1))
        ys, xs = slice(max(y0, 0), min(y0 + gh, h)), slice(max(x0, 0), min(x0 + gw, w))
        visible = ink[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        if visible.sum() < 0.6 * ink.sum():
            continue
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        box = np.array([xs.start + cols[0], ys.start + rows[0], xs.start + cols[-1] + 1, ys.start + rows[-1] + 1],
                       np.float32)
        if _iou(box, boxes) > MAX_IOU:
            continue
        under = float(_luma(img[ys, xs]).mean())
        while True:
            fg = rng.uniform(0, 255, 3)
            if abs(float(_luma(fg)) - under) >= MIN_CONTRAST:
                break
        a = alpha[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0, None]
        img[ys, xs] = img[ys, xs] * (1.0 - a) + fg * a
        return box
    return None


def render_scene(split: SceneSplit, stream: int, rng: np.random.Generator) -> Scene:
    """A canvas of random size and aspect with 1..MAX_DIGITS digits from ``stream``'s scans."""
    h = int(rng.integers(MIN_SIDE, MAX_HEIGHT + 1))
    aspect = float(np.exp(rng.uniform(np.log(MIN_ASPECT), np.log(MAX_ASPECT))))
    w = int(np.clip(round(h * aspect), MIN_WIDTH, MAX_SIDE))
    img = _background(rng, h, w)
    pool = split.pool(stream)
    boxes, labels, ids = [], [], []
    for _ in range(int(rng.integers(1, MAX_DIGITS + 1))):
        idx = int(rng.choice(pool))
        box = _draw_digit(rng, img, split.images[idx], boxes)
        if box is not None:
            boxes.append(box)
            labels.append(int(split.labels[idx]))
            ids.append(idx)
    noise = rng.normal(0.0, rng.uniform(0.0, 6.0), size=(h, w, 1)).astype(np.float32)
    pixels = np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)
    return Scene(pixels, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                 np.asarray(ids, np.int64))


def make_scene(split: SceneSplit, stream: int, index: int, seed: int = SEED, epoch: int = 0) -> Scene:
    return render_scene(split, stream, scene_rng(seed, stream, index, epoch))


def encode_jpeg(image: np.ndarray) -> bytes:
    """JPEG keeps the shipped sets small (textures do not compress in PNG); boxes do not depend on it."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def coco_instances(scenes: list[Scene], file_names: list[str]) -> dict:
    """COCO detection ground truth: bbox ``[x, y, w, h]`` in source pixels, categories 0..9."""
    images, annotations = [], []
    for image_id, (scene, name) in enumerate(zip(scenes, file_names), start=1):
        images.append({"id": image_id, "file_name": name, "height": int(scene.image.shape[0]),
                       "width": int(scene.image.shape[1])})
        for box, label, digit in zip(scene.boxes, scene.labels, scene.digit_ids):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0, "source_digit": int(digit)})
    categories = [{"id": k, "name": name, "supercategory": "digit"} for k, name in enumerate(CATEGORY_NAMES)]
    return {"info": {"description": "sppquant digit scenes", "seed": SEED}, "images": images,
            "annotations": annotations, "categories": categories}


def write_scene_sets(out_dir: str | Path, seed: int = SEED, calib_count: int = 100,
                     eval_count: int = 180) -> dict[str, int]:
    """Write ``scenes/`` (calibration, from calib scans) and ``scenes-eval/`` + ``instances.json`` (eval scans)."""
    out = Path(out_dir)
    split = load_scene_split(seed)
    counts = {}
    for folder, stream, count in (("scenes", STREAM_CALIB, calib_count), ("scenes-eval", STREAM_EVAL, eval_count)):
        target = out / folder
        target.mkdir(parents=True, exist_ok=True)
        for old in list(target.glob("*.jpg")) + list(target.glob("instances.json")):
            old.unlink()
        scenes, names = [], []
        for i in range(count):
            scene = make_scene(split, stream, i, seed)
            name = f"scene_{i:05d}.jpg"
            (target / name).write_bytes(encode_jpeg(scene.image))
            scenes.append(scene)
            names.append(name)
        if stream == STREAM_EVAL:
            (target / "instances.json").write_text(json.dumps(coco_instances(scenes, names), indent=1))
        counts[folder] = sum(len(s.labels) for s in scenes)
        log.info("wrote %d scenes with %d digits to %s", count, counts[folder], target)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate calib_data/scenes and calib_data/scenes-eval")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "calib_data")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--calib-count", type=int, default=100)
    parser.add_argument("--eval-count", type=int, default=180)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_scene_sets(args.out, args.seed, args.calib_count, args.eval_count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
