"""Wall time of the report's main pass (FP32, FP16, INT8 on every image at every size) by executor and workers.

The demo's 360 labelled evaluation images are hard-linked into class folders until the set
holds ``--images`` images; the demo model and preprocessing; one INT8 algorithm. Each row
times `evaluate_sharded` (shards, model sessions in every worker, merge) after a warm-up
report wrote the Q/DQ model; the Ray cluster is started before timing (its start-up is
reported separately). Metrics of every row must equal the first row's (asserted).

    python benchmarks/bench_executor.py --images 5000 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

from sppquant.config import load_config
from sppquant.data import list_images
from sppquant.pipeline.executor import LocalExecutor, RayExecutor
from sppquant.pipeline.report import build_report, evaluation_set
from sppquant.pipeline.shards import EvaluationJob, evaluate_sharded

log = logging.getLogger("bench_executor")
ROOT = Path(__file__).resolve().parents[1]


def make_set(dst: Path, n: int) -> None:
    src = ROOT / "calib_data" / "digits-eval"
    files = list_images(src)
    for i in range(n):
        f = files[i % len(files)]
        out = dst / f.parent.name / f"{i // len(files):03d}_{f.name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, out)


def metrics(ev) -> dict:
    return {k: {s: m.result() for s, m in per.items()} for k, per in ev.metrics.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per session")
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_set(tmp / "eval", args.images)
        data = yaml.safe_load((ROOT / "configs" / "sppnet_digits.yaml").read_text())
        data["model"]["path"] = str(ROOT / "configs" / data["model"]["path"])
        data["calibration"]["images"] = str(ROOT / "configs" / data["calibration"]["images"])
        data["calibration"]["output"] = str(tmp / "t.cache")
        data["report"].update(images=str(tmp / "eval"), output_dir=str(tmp / "rep"), algorithms=["entropy2"],
                              layer_images=8, max_images=None)
        data["onnxruntime"] = {**data.get("onnxruntime", {}), "threads": args.threads}
        (tmp / "c.yaml").write_text(yaml.safe_dump(data))
        cfg = load_config(tmp / "c.yaml")
        small = replace(cfg, report=replace(cfg.report, max_images=64))
        build_report(small, progress=False)  # table + Q/DQ model in the report folder
        images, _ = evaluation_set(cfg)
        job = EvaluationJob(cfg, images, "onnxruntime", ("entropy2",), cfg.report.output_dir)
        rows, first = [], None
        for kind in ("local", "ray"):
            for w in [int(x) for x in args.workers.split(",")]:
                if kind == "local" and w > 1:
                    continue
                if kind == "ray":
                    import ray  # noqa: PLC0415

                    t0 = time.perf_counter()
                    ray.init(num_cpus=w, include_dashboard=False, log_to_driver=False)
                    up = time.perf_counter() - t0
                    ex = RayExecutor(replace(cfg.executor, workers=w), 0.0)
                else:
                    up, ex = 0.0, LocalExecutor(1)
                t0 = time.perf_counter()
                ev = evaluate_sharded(job, ex, progress=False)
                wall = time.perf_counter() - t0
                if kind == "ray":
                    ray.shutdown()
                first = first or metrics(ev)
                assert metrics(ev) == first, "metrics differ from the first row"
                rows.append((kind, w, ev.images, wall, up))
                log.info("%s workers=%d images=%d wall=%.1f s (cluster start %.1f s)", kind, w, ev.images, wall, up)
        print(f"\n{len(images)} images x {len(cfg.input.sizes)} sizes x 3 precisions, ORT threads {args.threads}")
        print("| executor | workers | images | wall s | images/s | cluster start s |\n|---|---|---|---|---|---|")
        for kind, w, n, wall, up in rows:
            print(f"| {kind} | {w} | {n} | {wall:.1f} | {n / wall:.0f} | {up:.1f} |")


if __name__ == "__main__":
    main()
