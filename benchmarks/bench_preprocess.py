"""Preprocessing throughput: one thread vs the data pipeline's bounded thread pool.

Two image sets: the demo's calibration PNGs (small) and 200 synthetic 640x480 JPEGs
(camera-sized, where decoding dominates). Both go through `sppquant.data.iter_batches`
(decode + letterbox + normalize + CHW + batching) at the demo's two input sizes.
Usage (repository root): python benchmarks/bench_preprocess.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from sppquant.config import load_config  # noqa: E402
from sppquant.data import ImageSet, iter_batches, list_images  # noqa: E402
from sppquant.preprocess import load_image, preprocess_image  # noqa: E402


def single_thread(images: ImageSet, cfg) -> int:
    """The baseline: decode and preprocess in the calling thread, no pool."""
    for path in images.paths:
        image = load_image(path)
        for size in cfg.input.sizes:
            preprocess_image(image, cfg.preprocess, size)
    return len(images)


def pooled(images: ImageSet, cfg, workers: int) -> int:
    return sum(b.inputs[0].shape[0] for b in iter_batches(images, cfg.preprocess, cfg.input.sizes, 32,
                                                          workers=workers, progress=False))


def throughput(run, repeats: int = 3) -> float:
    best, n = float("inf"), 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = run()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    cfg = load_config(REPO / "configs" / "sppnet_digits.yaml")
    demo = ImageSet(tuple(list_images(cfg.calibration.images)))
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        for i in range(200):
            cv2.imwrite(os.path.join(tmp, f"{i:03d}.jpg"), np.roll(base, i, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 90])
        big = ImageSet(tuple(list_images(tmp)))
        print(f"cpus: {os.cpu_count()}, sizes per image: {cfg.input.sizes}")
        print("| image set | images | 1 thread img/s | pool (2 workers) img/s | speedup |\n|---|---|---|---|---|")
        for name, s in [("demo PNGs (20-64 px)", demo), ("640x480 JPEG", big)]:
            one = throughput(lambda s=s: single_thread(s, cfg))
            pool = throughput(lambda s=s: pooled(s, cfg, 2))
            print(f"| {name} | {len(s)} | {one:.0f} | {pool:.0f} | {pool / one:.2f}x |")


if __name__ == "__main__":
    main()
