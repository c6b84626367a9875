"""Shared fixtures: small synthetic images written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Eight colour PNGs of different sizes in two subfolders, plus a non-image file."""
    rng = np.random.default_rng(123)
    for i in range(8):
        sub = tmp_path / "imgs" / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(8, 40)), int(rng.integers(8, 40))
        cv2.imwrite(str(sub / f"img{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    return tmp_path / "imgs"
