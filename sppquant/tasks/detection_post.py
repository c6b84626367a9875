"""Detection post-processing in NumPy: Fast R-CNN box decoding, per-class NMS, letterbox undo.

Pure functions, so the ONNX Runtime and TensorRT paths (and FP32 / FP16 / INT8) share
one post-process and differ only in the network outputs they feed it. Boxes are
``[x1, y1, x2, y2]`` in continuous pixel coordinates (pixel i covers [i, i+1)); width is
``x2 - x1`` (no +1), matching COCO's ``[x, y, w, h]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# exp(dw) larger than this is a broken delta, not a box (Detectron's log(1000/16)).
MAX_LOG_SCALE = float(np.log(1000.0 / 16.0))


@dataclass(frozen=True)
class Detections:
    """Final detections of one image: ``boxes`` (D, 4) float32, ``scores`` (D,), ``labels`` (D,) int64."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def encode_boxes(proposals: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Fast R-CNN deltas ``(dx, dy, dw, dh)`` that move ``proposals`` onto ``targets`` (both (R, 4))."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + 0.5 * pw, proposals[:, 1] + 0.5 * ph
    gw, gh = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    gx, gy = targets[:, 0] + 0.5 * gw, targets[:, 1] + 0.5 * gh
    return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1).astype(np.float32)


def decode_boxes(proposals: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply deltas ``(R, 4K)`` to proposals ``(R, 4)`` -> ``(R, K, 4)`` boxes (inverse of `encode_boxes`)."""
    r = len(proposals)
    d = np.asarray(deltas, np.float64).reshape(r, -1, 4)
    p = np.asarray(proposals, np.float64)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    px, py = p[:, 0] + 0.5 * pw, p[:, 1] + 0.5 * ph
    cx = px[:, None] + d[..., 0] * pw[:, None]
    cy = py[:, None] + d[..., 1] * ph[:, None]
    w = pw[:, None] * np.exp(np.minimum(d[..., 2], MAX_LOG_SCALE))
    h = ph[:, None] * np.exp(np.minimum(d[..., 3], MAX_LOG_SCALE))
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1).astype(np.float32)


def clip_boxes(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    out = np.array(boxes, np.float32, copy=True)
    out[..., 0::2] = np.clip(out[..., 0::2], 0.0, width)
    out[..., 1::2] = np.clip(out[..., 1::2], 0.0, height)
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(len(a), len(b))``; empty boxes have IoU 0 with everything."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices kept, highest score first (ties: lower index first); drops IoU > threshold."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, np.float64)))
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        if len(order) == 1:
            break
        ious = box_iou(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, np.int64)


def class_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float = 0.5,
              score_threshold: float = 0.05, max_per_image: int = 100) -> np.ndarray:
    """Intra-class NMS over candidates ``(D, 4)``; indices of the kept ones, best first, at most ``max_per_image``.

    Boxes of different classes never suppress each other (overlapping digits both survive).
    """
    scores = np.asarray(scores, np.float64)
    candidates = np.flatnonzero(scores > score_threshold)
    kept = []
    for label in np.unique(labels[candidates]):
        idx = candidates[labels[candidates] == label]
        kept.append(idx[nms(boxes[idx], scores[idx], iou_threshold)])
    if not kept:
        return np.zeros(0, np.int64)
    kept_all = np.concatenate(kept)
    order = np.lexsort((kept_all, -scores[kept_all]))
    return kept_all[order][:max_per_image]


def to_source(boxes: np.ndarray, scale_x: float, scale_y: float, offset_x: float, offset_y: float,
              source_size: tuple[int, int]) -> np.ndarray:
    """Network-input boxes -> source-image pixels: ``x_src = (x_net - offset_x) / scale_x``, clipped to the image."""
    out = np.array(boxes, np.float64, copy=True).reshape(-1, 4)
    out[:, 0::2] = (out[:, 0::2] - offset_x) / scale_x
    out[:, 1::2] = (out[:, 1::2] - offset_y) / scale_y
    return clip_boxes(out, source_size[0], source_size[1])


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def detect(proposals: np.ndarray, class_logits: np.ndarray, box_deltas: np.ndarray, net_size: tuple[int, int],
           iou_threshold: float = 0.5, score_threshold: float = 0.05, max_per_image: int = 100,
           background: int = 0) -> Detections:
    """Network outputs of one image -> detections in network-input pixels.

    Every (region, foreground class) pair is a candidate with that class's refined box
    and softmax probability; a label is the class's position among the non-background
    logits (with background 0, logit k is label k - 1).
    """
    probs = softmax(class_logits)
    boxes = clip_boxes(decode_boxes(proposals, box_deltas), net_size[0], net_size[1])  # (R, K, 4)
    fg = [k for k in range(probs.shape[1]) if k != background]
    cand_boxes = boxes[:, fg].reshape(-1, 4)
    cand_scores = probs[:, fg].reshape(-1)
    cand_labels = np.tile(np.arange(len(fg)), len(proposals))
    keep = class_nms(cand_boxes, cand_scores, cand_labels, iou_threshold, score_threshold, max_per_image)
    return Detections(cand_boxes[keep], cand_scores[keep].astype(np.float32), cand_labels[keep].astype(np.int64))
