"""`predict --draw`: detections drawn onto the source image (OpenCV, no matplotlib).

Boxes are the JSON's, in source pixels; one colour per label so overlapping digits of
different classes stay readable. Written as PNG (lossless: the boxes stay crisp).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

# Ten distinct BGR colours (tab10), cycled for more labels.
PALETTE = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
           (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23))


def draw_detections(image: np.ndarray, prediction: Mapping[str, Any], min_score: float = 0.0) -> np.ndarray:
    """A BGR copy of ``image`` (gray, BGR or BGRA as decoded) with every box, label and score drawn."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else np.ascontiguousarray(image[..., :3])
    out = out.astype(np.uint8, copy=True)
    thick = max(1, round(max(out.shape[:2]) / 300))
    for det in prediction["detections"]:
        if det["score"] < min_score:
            continue
        x1, y1, x2, y2 = (int(round(v)) for v in det["box"])
        color = PALETTE[int(det["label"]) % len(PALETTE)]
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), color, thick)
        cv2.putText(out, f"{det['label']} {det['score']:.2f}", (x1, max(8, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.3 * thick, color, 1, cv2.LINE_AA)
    return out


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
