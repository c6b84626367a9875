"""Detection post-processing: hand-computed boxes, a slow obvious NMS, the letterbox round trip."""

from __future__ import annotations

import numpy as np
import pytest

from sppquant.preprocess import PreprocessConfig, preprocess_image
from sppquant.tasks.detection_post import (
    box_iou,
    class_nms,
    clip_boxes,
    decode_boxes,
    detect,
    encode_boxes,
    nms,
    to_source,
)


def test_decode_hand_computed() -> None:
    proposal = np.array([[0, 0, 10, 20]], np.float32)  # centre (5, 10), 10 x 20
    deltas = np.array([[0.1, -0.05, np.log(2.0), 0.0]], np.float32)
    # centre (5 + 0.1*10, 10 - 0.05*20) = (6, 9); size (20, 20)
    np.testing.assert_allclose(decode_boxes(proposal, deltas)[0, 0], [-4, -1, 16, 19], atol=1e-5)


def test_decode_per_class_and_encode_round_trip() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (20, 2))
    props = np.concatenate([xy, xy + rng.uniform(2, 30, (20, 2))], axis=1).astype(np.float32)
    xy2 = rng.uniform(0, 50, (20, 2))
    gts = np.concatenate([xy2, xy2 + rng.uniform(2, 30, (20, 2))], axis=1).astype(np.float32)
    deltas = np.zeros((20, 3, 4), np.float32)
    deltas[:, 1] = encode_boxes(props, gts)
    boxes = decode_boxes(props, deltas.reshape(20, 12))
    assert boxes.shape == (20, 3, 4)
    np.testing.assert_allclose(boxes[:, 1], gts, atol=1e-3)
    np.testing.assert_allclose(boxes[:, 0], props, atol=1e-4)  # zero deltas: the proposal itself


def test_iou_hand_computed() -> None:
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6], [1, 1, 1, 1]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1 / 7, 1.0, 0.0, 0.0])


def _slow_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """The textbook loop: repeatedly take the best remaining box, drop all that overlap it by more than thr."""
    remaining = list(range(len(scores)))
    keep = []
    while remaining:
        best = max(remaining, key=lambda i: (scores[i], -i))
        keep.append(best)
        remaining = [i for i in remaining if i != best and box_iou(boxes[best:best + 1], boxes[i:i + 1])[0, 0] <= thr]
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_nms_matches_slow_nms(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    xy = rng.uniform(0, 40, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 25, (n, 2))], axis=1).astype(np.float32)
    scores = np.round(rng.uniform(0, 1, n), 1)  # many ties
    thr = float(rng.choice([0.3, 0.5, 0.7]))
    assert list(nms(boxes, scores, thr)) == _slow_nms(boxes, scores, thr)


def test_class_nms_keeps_other_classes_and_applies_limits() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.01])
    labels = np.array([3, 3, 5, 3, 5])
    keep = class_nms(boxes, scores, labels, iou_threshold=0.5, score_threshold=0.05)
    assert list(keep) == [0, 2, 3]  # box 1 suppressed by 0 (same class); 2 survives (other class); 4 below threshold
    assert list(class_nms(boxes, scores, labels, max_per_image=2)) == [0, 2]
    assert len(class_nms(boxes, scores, labels, score_threshold=0.95)) == 0


@pytest.mark.parametrize("seed", range(5))
def test_class_nms_equals_slow_nms_per_class(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 80
    xy = rng.uniform(0, 40, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 25, (n, 2))], axis=1).astype(np.float32)
    scores, labels = rng.uniform(0, 1, n), rng.integers(0, 4, n)
    keep = class_nms(boxes, scores, labels, 0.5, 0.2, 1000)
    want = []
    for label in range(4):
        idx = np.flatnonzero((labels == label) & (scores > 0.2))
        want += [int(idx[i]) for i in _slow_nms(boxes[idx], scores[idx], 0.5)]
    assert sorted(keep.tolist()) == sorted(want)
    assert np.all(np.diff(scores[keep]) <= 0)


def test_to_source_inverts_the_letterbox_and_clips() -> None:
    image = np.zeros((50, 100, 3), np.uint8)  # H 50, W 100 -> 128x128: scale 1.28, 64 rows, offset_y 32
    pre = preprocess_image(image, PreprocessConfig(), (128, 128))
    assert (pre.scale_x, pre.offset_x, pre.offset_y) == (1.28, 0, 32)
    src = np.array([[10, 5, 30, 25]], np.float64)
    net = np.stack([src[:, 0] * pre.scale_x + pre.offset_x, src[:, 1] * pre.scale_y + pre.offset_y,
                    src[:, 2] * pre.scale_x + pre.offset_x, src[:, 3] * pre.scale_y + pre.offset_y], axis=1)
    np.testing.assert_allclose(to_source(net, pre.scale_x, pre.scale_y, pre.offset_x, pre.offset_y,
                                         pre.source_size), src, atol=1e-4)
    # a box reaching into the top padding and past the right edge is clipped to the image
    out = to_source(np.array([[120, 0, 140, 40]]), pre.scale_x, pre.scale_y, pre.offset_x, pre.offset_y,
                    pre.source_size)
    np.testing.assert_allclose(out, [[93.75, 0, 100, 6.25]])
    np.testing.assert_array_equal(clip_boxes(np.array([[-1, -2, 5, 9]]), 8, 4), [[0, 0, 4, 8]])


def test_detect_end_to_end_hand_case() -> None:
    proposals = np.array([[10, 10, 30, 40], [11, 10, 31, 40], [60, 60, 80, 90]], np.float32)
    logits = np.full((3, 11), -10.0, np.float32)
    logits[0, 4] = 5.0  # digit 3, confident
    logits[1, 4] = 4.0  # same digit, overlapping: suppressed
    logits[2, 0] = 5.0  # background
    deltas = np.zeros((3, 44), np.float32)
    deltas[0, 16:20] = [0.05, 0.0, 0.0, 0.0]  # class 4 (digit 3) moves right by 0.05 widths: +1 px, onto roi 1
    dets = detect(proposals, logits, deltas, (128, 128))
    assert list(dets.labels) == [3] and len(dets) == 1
    np.testing.assert_allclose(dets.boxes[0], [11, 10, 31, 40], atol=1e-4)
    assert dets.scores[0] == pytest.approx(np.exp(5) / (np.exp(5) + 10 * np.exp(-10)), rel=1e-5)
