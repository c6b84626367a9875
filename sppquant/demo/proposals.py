"""Classical region proposals for the SPP-net demo detector, computed from the network input.

SPP-net (He et al. 2014) pooled features of externally computed proposals (Selective
Search / EdgeBoxes): the network never learns where to look, it scores and refines
regions. We keep that split. Our objects are uniformly coloured strokes blended onto
gradients, textures and photos, so the natural classical detector is a stable-region
one: MSER (Matas et al. 2002) finds connected regions that stay the same over a range
of thresholds, i.e. blobs with a contrasting, roughly constant boundary -- what a digit
is, whatever its colour or the background's, in either polarity. Running it on every
colour channel and on luma catches digits that differ from their surroundings only in
hue. Boxes of nearby fragments are merged (a glyph broken by an occluder or a
thin stroke), and every box is jittered a little (MSER boxes hug a threshold level of
the blurred ink, not the annotated one), which is what lets the regression head learn.

Why from the PREPROCESSED tensor: calibration, evaluation and deployment all see the
network input only; proposals from it are in network-input pixels (the RoI op's
coordinates) and need no second decode or geometry. The function is pure and
deterministic (no randomness, sorted output) so a calibration table built with it is
reproducible. Measured recall on the eval scenes: `sppquant/demo/DETECTION.md`.
"""

from __future__ import annotations

import cv2
import numpy as np

MAX_PROPOSALS = 300
MIN_SIDE, MIN_AREA = 5, 30  # network-input pixels
MAX_ASPECT = 4.0
DEDUPE_IOU = 0.9
# Added to x1 y1 x2 y2: fractions of (w, h, w, h), then pixels. The pixel terms matter for
# thin glyphs ("1" is 3-5 px wide here): one pixel of width is already 0.2-0.3 IoU.
_JITTER = (((0.0, 0.0, 0.0, 0.0), (0, 0, 0, 0)), ((-0.08, -0.08, 0.08, 0.08), (0, 0, 0, 0)),
           ((0.05, 0.05, -0.05, -0.05), (0, 0, 0, 0)), ((0.0, 0.0, 0.0, 0.0), (-2, 0, 2, 0)),
           ((0.0, 0.0, 0.0, 0.0), (-1.5, -1.5, 1.5, 1.5)), ((-0.06, 0.0, 0.06, 0.0), (0, 0, 0, 0)),
           ((0.0, -0.06, 0.0, 0.06), (0, 0, 0, 0)))


def _gray_maps(image_chw: np.ndarray) -> list[np.ndarray]:
    """Each channel and the channel mean, stretched to uint8 (the tensor's normalisation is unknown here)."""
    chans = [image_chw[c] for c in range(image_chw.shape[0])]
    if len(chans) > 1:
        chans.append(image_chw.mean(axis=0))
    maps = []
    for ch in chans:
        lo, hi = float(ch.min()), float(ch.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        maps.append(np.clip(np.rint((ch - lo) * scale), 0, 255).astype(np.uint8))
    return maps


def _mser_boxes(gray: np.ndarray) -> np.ndarray:
    h, w = gray.shape
    mser = cv2.MSER_create(delta=4, min_area=MIN_AREA, max_area=int(0.5 * h * w), max_variation=0.5)
    out = []
    for img in (gray, 255 - gray):  # dark-on-bright and bright-on-dark
        _, bbs = mser.detectRegions(img)
        if len(bbs):
            out.append(np.asarray(bbs, np.float32))
    if not out:
        return np.zeros((0, 4), np.float32)
    b = np.concatenate(out)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU in the boxes' float32. Not tasks.detection_post.box_iou on purpose: its float64 and
    empty-box rule change the proposals of 76 of the 280 demo scenes the shipped detector was trained on."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


def _dedupe(boxes: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Greedy: keep a box unless it overlaps a kept one by more than ``iou`` (order decides).

    Only kept boxes' IoU rows are computed, and the scan stops at ``limit`` kept boxes: the
    same result as the full pairwise matrix (same float32 element operations) at a fraction
    of the cost (the final dedupe sees thousands of jittered boxes and keeps 300).
    """
    keep: list[int] = []
    suppressed = np.zeros(len(boxes), bool)
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    area = (x2 - x1) * (y2 - y1)
    for i in range(len(boxes)):
        if limit is not None and len(keep) >= limit:
            break
        if suppressed[i]:
            continue
        keep.append(i)
        # _pairwise_iou's row i, element for element (same float32 operations in the same order)
        iw = np.maximum(np.minimum(x2[i], x2) - np.maximum(x1[i], x1), 0)
        ih = np.maximum(np.minimum(y2[i], y2) - np.maximum(y1[i], y1), 0)
        inter = iw * ih
        suppressed |= inter / np.maximum(area[i] + area - inter, 1e-6) > iou
    return boxes[keep]


def _valid(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ok = (bw >= MIN_SIDE) & (bh >= MIN_SIDE) & (bw <= 0.95 * w) & (bh <= 0.95 * h)
    ok &= (bw / np.maximum(bh, 1) <= MAX_ASPECT) & (bh / np.maximum(bw, 1) <= MAX_ASPECT)
    return boxes[ok]


def _merge_neighbours(boxes: np.ndarray) -> np.ndarray:
    """Union boxes of similar-height regions that touch or overlap: fragments of one glyph."""
    if len(boxes) < 2:
        return np.zeros((0, 4), np.float32)
    grown = boxes + np.array([-2, -2, 2, 2], np.float32)
    touch = _pairwise_iou(grown, grown) > 0
    hs = boxes[:, 3] - boxes[:, 1]
    similar = np.minimum(hs[:, None], hs[None, :]) >= 0.5 * np.maximum(hs[:, None], hs[None, :])
    i, j = np.nonzero(np.triu(touch & similar, 1))
    return np.stack([np.minimum(boxes[i, 0], boxes[j, 0]), np.minimum(boxes[i, 1], boxes[j, 1]),
                     np.maximum(boxes[i, 2], boxes[j, 2]), np.maximum(boxes[i, 3], boxes[j, 3])], axis=1)


def _ranked_regions(raw: np.ndarray, h: int, w: int) -> np.ndarray:
    """Distinct regions, most stable first: a box found again across channels, polarities and
    MSER levels (IoU > 0.7) is a sharp, contrasting blob; clutter texture yields one-off boxes."""
    boxes = _valid(raw[np.lexsort(raw.T[::-1])], h, w)  # sorted first: ties break deterministically
    if len(boxes) == 0:
        return boxes
    support = (_pairwise_iou(boxes, boxes) > 0.7).sum(axis=1)
    order = np.argsort(-support, kind="stable")
    return _dedupe(boxes[order], DEDUPE_IOU)


def propose(image_chw: np.ndarray, max_proposals: int = MAX_PROPOSALS) -> np.ndarray:
    """``(K, 4)`` float32 ``[x1, y1, x2, y2]`` proposals in network-input pixels for one CHW tensor, K <= cap.

    Order: distinct regions by stability, then merged fragments, then each jitter round;
    the cap therefore drops jittered copies of weak regions first.
    """
    x = np.asarray(image_chw, np.float32)
    h, w = x.shape[1:]
    raw = np.concatenate([_mser_boxes(g) for g in _gray_maps(x)])
    base = _ranked_regions(raw, h, w)
    base = _dedupe(np.concatenate([base, _valid(_merge_neighbours(base), h, w)]), DEDUPE_IOU)
    size = np.concatenate([base[:, 2:] - base[:, :2]] * 2, axis=1)
    boxes = np.concatenate([base + np.asarray(f, np.float32) * size + np.asarray(px, np.float32)
                            for f, px in _JITTER])  # un-jittered round first
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    boxes = _dedupe(_valid(boxes, h, w), DEDUPE_IOU, max_proposals)
    return np.ascontiguousarray(boxes[:max_proposals], dtype=np.float32)
