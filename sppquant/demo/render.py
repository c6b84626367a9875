"""Render scikit-learn's 8x8 handwritten digits as colour images of varied size and shape.

The demo network must see what real SPP users feed it: images of any size and
aspect ratio (so letterboxing matters), arbitrary colours (so channel order
matters) and a few grayscale / 16-bit / BGRA files (so every decoder path runs).
Every image is a pure function of ``(seed, stream, index)``: the same seed gives
byte-identical pixels in any order, on any machine with the same OpenCV.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

SEED = 20261121
TEST_FRACTION = 0.2
MIN_SIDE, MAX_SIDE = 20, 64
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0
MIN_CONTRAST = 90.0  # |luma(fg) - luma(bg)| in 8-bit units, so grayscale copies stay legible
# Streams keep the random draws of different uses apart (same digit, different picture).
STREAM_CALIB, STREAM_EVAL, STREAM_TRAIN = 1, 2, 3
# File format of a saved image: "bgr" (8-bit 3-channel), "gray", "bgr16", "bgra".
FORMAT_SHARES = (("gray", 0.05), ("bgr16", 0.05), ("bgra", 0.05))


@dataclass(frozen=True)
class DigitsSplit:
    """The 1797 digits (``images``: N x 8 x 8, values 0..16) and a stratified train/test split."""

    images: np.ndarray
    labels: np.ndarray
    train: np.ndarray  # indices into images, sorted
    test: np.ndarray


def load_split(seed: int = SEED, test_fraction: float = TEST_FRACTION) -> DigitsSplit:
    """Deterministic stratified split of ``sklearn.datasets.load_digits`` (bundled, no download)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train, test = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=digits.target, shuffle=True
    )
    return DigitsSplit(
        images=digits.images.astype(np.float32),
        labels=digits.target.astype(np.int64),
        train=np.sort(train),
        test=np.sort(test),
    )


def _luma(bgr: np.ndarray) -> float:
    # OpenCV's BGR2GRAY weights.
    return float(0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2])


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    while True:
        fg = rng.integers(0, 256, size=3).astype(np.float32)
        bg = rng.integers(0, 256, size=3).astype(np.float32)
        if abs(_luma(fg) - _luma(bg)) >= MIN_CONTRAST:
            return fg, bg


def glyph_alpha(glyph: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """A scikit-learn digit (0..16 ink) as a (gh, gw) alpha mask in [0, 1]; both demos' renderers use it."""
    alpha = cv2.resize(np.asarray(glyph, np.float32) / 16.0, (gw, gh), interpolation=cv2.INTER_CUBIC)
    return np.clip(alpha, 0.0, 1.0)


def render_digit(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 8x8 glyph (0..16) -> BGR uint8 image of random size, aspect, colours, placement."""
    h = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    aspect = float(np.exp(rng.uniform(np.log(MIN_ASPECT), np.log(MAX_ASPECT))))  # W / H
    w = int(np.clip(round(h * aspect), MIN_SIDE, MAX_SIDE))
    # The glyph box stays roughly square (the digit keeps its shape); the canvas does not.
    side = min(h, w)
    gh = max(8, int(round(side * rng.uniform(0.65, 0.95))))
    gw = max(6, min(w, int(round(gh * rng.uniform(0.75, 1.15)))))
    gh = min(gh, h)
    y0 = int(rng.integers(0, h - gh + 1))
    x0 = int(rng.integers(0, w - gw + 1))
    alpha = glyph_alpha(glyph, gh, gw)
    mask = np.zeros((h, w), np.float32)
    mask[y0 : y0 + gh, x0 : x0 + gw] = alpha
    fg, bg = _colours(rng)
    img = bg[None, None, :] * (1.0 - mask[:, :, None]) + fg[None, None, :] * mask[:, :, None]
    # Mild, low-entropy noise: one small integer per pixel, shared by the channels.
    noise = rng.integers(-3, 4, size=(h, w, 1)).astype(np.float32)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)


def choose_format(rng: np.random.Generator) -> str:
    u = float(rng.uniform())
    acc = 0.0
    for fmt, share in FORMAT_SHARES:
        acc += share
        if u < acc:
            return fmt
    return "bgr"


def to_format(bgr: np.ndarray, fmt: str) -> np.ndarray:
    """Same picture in another file format; each decodes back to (about) the same digit."""
    if fmt == "bgr":
        return bgr
    if fmt == "gray":
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    if fmt == "bgr16":
        return bgr.astype(np.uint16) * np.uint16(257)  # exact full-scale 16-bit copy
    if fmt == "bgra":
        alpha = np.full(bgr.shape[:2] + (1,), 255, np.uint8)  # opaque: alpha carries no meaning
        return np.concatenate([bgr, alpha], axis=2)
    raise ValueError(f"unknown format {fmt!r}")


def image_rng(seed: int, stream: int, index: int, epoch: int = 0) -> np.random.Generator:
    """The generator of one image: independent of the order images are made in."""
    return np.random.default_rng([int(seed), int(stream), int(index), int(epoch)])


def render_file_image(split: DigitsSplit, index: int, stream: int, seed: int = SEED) -> tuple[np.ndarray, str]:
    """The pixels (in their file format) and the format of the saved image of digit ``index``."""
    rng = image_rng(seed, stream, index)
    bgr = render_digit(split.images[index], rng)
    fmt = choose_format(rng)
    return to_format(bgr, fmt), fmt


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def calib_indices(split: DigitsSplit, count: int = 300, seed: int = SEED) -> np.ndarray:
    """``count`` train-split indices for calibration (sorted, seeded)."""
    rng = np.random.default_rng([int(seed), STREAM_CALIB])
    return np.sort(rng.choice(split.train, size=count, replace=False))


def write_datasets(out_dir: str | Path, seed: int = SEED, calib_count: int = 300) -> dict[str, int]:
    """Write ``digits/train_XXXXX.png`` (calibration) and ``digits-eval/<d>/test_XXXXX.png`` (whole test split).

    Existing PNGs in those two folders are removed first so the folders hold exactly
    this dataset. Returns counts per file format.
    """
    out = Path(out_dir)
    split = load_split(seed)
    calib_dir, eval_dir = out / "digits", out / "digits-eval"
    for folder in (calib_dir, eval_dir):
        if folder.exists():
            for old in folder.rglob("*.png"):
                old.unlink()
    calib_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for idx in calib_indices(split, calib_count, seed):
        img, fmt = render_file_image(split, int(idx), STREAM_CALIB, seed)
        (calib_dir / f"train_{idx:05d}.png").write_bytes(encode_png(img))
        counts[fmt] = counts.get(fmt, 0) + 1
    for idx in split.test:
        img, fmt = render_file_image(split, int(idx), STREAM_EVAL, seed)
        folder = eval_dir / str(int(split.labels[idx]))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"test_{idx:05d}.png").write_bytes(encode_png(img))
        counts[fmt] = counts.get(fmt, 0) + 1
    log.info("wrote %d calibration and %d eval images to %s (formats %s)", calib_count, len(split.test), out, counts)
    return counts


def digit_index(path: str | Path) -> int:
    """``train_00012.png`` / ``test_00012.png`` -> 12 (index into ``load_digits()``)."""
    return int(Path(path).stem.split("_", 1)[1])
