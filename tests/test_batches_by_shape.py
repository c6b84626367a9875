"""Dynamic-size preprocessing: batches group images of one tensor shape, every image exactly once."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml
from conftest import write_tiny_spp_model

from sppquant.cli import main
from sppquant.data import ImageSet, iter_batches
from sppquant.preprocess import PreprocessConfig, output_size


def _images(root: Path, shapes: list[tuple[int, int]]) -> ImageSet:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(shapes):
        p = root / f"{i:02d}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        paths.append(p)
    return ImageSet(tuple(paths), root=root)


def test_batches_hold_one_shape_and_cover_every_image(tmp_path: Path) -> None:
    cfg = PreprocessConfig(resize="fixed_height", rounding="ceil", pad_to="none")
    shapes = [(10, 20), (10, 40), (10, 21), (10, 20), (10, 40), (20, 40), (10, 20), (5, 9)]
    images = _images(tmp_path / "img", shapes)
    target = (8, 64)
    batches = list(iter_batches(images, cfg, [target], 2, progress=False, workers=1))
    seen = [i for b in batches for i in b.indices]
    assert sorted(seen) == list(range(len(shapes)))  # each image once ("keep")
    for b in batches:
        want = {output_size(cfg, shapes[i], target) for i in b.indices}
        assert len(want) == 1 and b.inputs[0].shape[2:] == next(iter(want))
        assert list(b.indices) == sorted(b.indices)  # listing order inside a batch
    # widths ceil(8*w/h): 16, 32, 17, 16, 32, 16, 16, 15 -> full batches (0, 3), (1, 4), (5, 6) in fill order
    assert [b.indices for b in batches if b.size == 2] == [(0, 3), (1, 4), (5, 6)]
    dropped = list(iter_batches(images, cfg, [target], 2, last_batch="drop", progress=False, workers=1))
    assert all(b.size == 2 for b in dropped)


def test_calibrate_with_dynamic_width(tmp_path: Path) -> None:
    tiny_model = write_tiny_spp_model(tmp_path / "tiny.onnx")
    _images(tmp_path / "img", [(12, 20), (12, 30), (12, 20), (24, 30), (12, 31)])
    cfg = {"model": {"path": str(tiny_model)}, "input": {"sizes": [[16, 48]]},
           "preprocess": {"resize": "fixed_height", "rounding": "ceil", "pad_to": "multiple", "multiple": 8},
           "calibration": {"images": "img", "batch_size": 2, "output": "out/t.cache"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["calibrate", "--config", str(tmp_path / "c.yaml")]) == 0
