"""End-to-end calibration of the demo: throughput, peak RSS at 100 vs 1000 images, and
ONNX Runtime's own static-quantization calibrators (Entropy, MinMax) on the same
model, images and preprocessing.

Each measurement runs in a fresh child process so its peak RSS is its own.
Usage (repository root): python benchmarks/bench_calibration.py [--repeat-images 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "sppnet_digits.yaml"
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def _config_with(n_images: int, workdir: Path, single_size: bool = False):
    """The demo config, calibrating ``n_images`` images (the demo's set cycled via a list file).

    ``single_size``: only the first input size and full batches, which is all ONNX
    Runtime's calibrators accept (they stack every batch's outputs into one array and
    fail on batches of different shapes).
    """
    from sppquant.config import load_config
    from sppquant.data import list_images

    cfg = load_config(CONFIG)
    files = list_images(cfg.calibration.images)
    lst = workdir / f"images_{n_images}.txt"
    lst.write_text("\n".join(str(files[i % len(files)]) for i in range(n_images)) + "\n")
    cal = dataclasses.replace(cfg.calibration, images=None, list_file=lst, output=workdir / f"t{n_images}.cache",
                              last_batch="drop" if single_size else cfg.calibration.last_batch)
    sizes = cfg.input.sizes[:1] if single_size else cfg.input.sizes
    return dataclasses.replace(cfg, calibration=cal, input=dataclasses.replace(cfg.input, sizes=sizes))


def child_sppquant(n_images: int, workdir: Path, single_size: bool) -> dict:
    from sppquant.pipeline.calibrate import calibrate

    cfg = _config_with(n_images, workdir, single_size)
    t0 = time.perf_counter()
    result = calibrate(cfg, progress=False)
    return {"seconds": time.perf_counter() - t0, "images": result.images, "sizes": len(cfg.input.sizes)}



def child_ort(method: str, n_images: int, workdir: Path) -> dict:
    """onnxruntime.quantization's calibrator fed exactly the batches sppquant produces."""
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    from sppquant.data import calibration_set, iter_batches
    from sppquant.ops.spp.onnx import rewrite_for_onnxruntime

    cfg = _config_with(n_images, workdir, single_size=True)
    model_path = workdir / "rewritten.onnx"
    onnx.save(rewrite_for_onnxruntime(onnx.load(str(cfg.model.path))), str(model_path))
    cal = cfg.calibration

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            batches = iter_batches(calibration_set(cal), cfg.preprocess, cfg.input.sizes, cal.batch_size,
                                   last_batch=cal.last_batch, progress=False)
            self.feeds = ({cfg.model.input_name: x} for b in batches for x in b.inputs)

        def get_next(self):
            return next(self.feeds, None)

    t0 = time.perf_counter()
    # The ops of the original graph (plus the SPP rewrite's Concat/Flatten): calibrating
    # everything would include the rewrite's NaN-propagation helpers, which are NaN by design.
    calibrator = create_calibrator(model_path, ["Conv", "Relu", "MaxPool", "Gemm", "Concat", "Flatten"],
                                   augmented_model_path=str(workdir / f"aug_{method}.onnx"),
                                   calibrate_method=getattr(CalibrationMethod, method))
    calibrator.collect_data(Reader())
    ranges = calibrator.compute_data()
    used = n_images - n_images % cal.batch_size
    return {"seconds": time.perf_counter() - t0, "images": used, "sizes": len(cfg.input.sizes),
            "tensors": len(ranges.data) if hasattr(ranges, "data") else len(ranges)}


def run_child(kind: str, n_images: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--images", str(n_images)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING)
        with tempfile.TemporaryDirectory() as tmp:
            if args.child in ("sppquant", "sppquant-1size"):
                res = child_sppquant(args.images, Path(tmp), single_size=args.child == "sppquant-1size")
            else:
                res = child_ort(args.child, args.images, Path(tmp))
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    rows = []
    for kind, n in [("sppquant", 100), ("sppquant", 300), ("sppquant", 1000),
                    ("sppquant-1size", 100), ("sppquant-1size", 1000),
                    ("Entropy", 100), ("Entropy", 1000), ("MinMax", 100), ("MinMax", 1000)]:
        r = run_child(kind, n)
        rows.append((kind, n, r))
        print(f"{kind:14s} {n:5d} images x {r['sizes']} sizes: {r['seconds']:7.2f} s, "
              f"{r['images'] * r['sizes'] / r['seconds']:7.1f} img-runs/s, peak RSS {r['peak_rss_mb']:7.1f} MB",
              flush=True)
    print("\n| calibrator | images | sizes | wall s | image-runs/s | peak RSS MB |\n|---|---|---|---|---|---|")
    for kind, n, r in rows:
        name = f"sppquant entropy2{', first size, full batches' if kind == 'sppquant-1size' else ''}" \
            if kind.startswith("sppquant") else f"onnxruntime.quantization {kind}"
        print(f"| {name} | {n} | {r['sizes']} | {r['seconds']:.2f} | {r['images'] * r['sizes'] / r['seconds']:.1f} "
              f"| {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
