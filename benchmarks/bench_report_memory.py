"""Peak memory and wall time of a full `sppquant report` on a large detector-like CNN.

The model: 640x640 input, a residual backbone of Conv/Relu/Add blocks down to stride 8,
then a dense head (a per-pixel probability map, like a text detector): ~300 activation
tensors, no classifier output, so the report runs task `raw`. The report computes FP32,
FP16 and three INT8 algorithms and the per-layer sensitivity of every tensor; this
script runs it in a child process and reads the child's peak RSS.

    python benchmarks/bench_report_memory.py [--blocks 70] [--images 4] [--size 640]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger("bench_report_memory")


def residual_cnn(blocks: int, width: int = 8, seed: int = 0) -> onnx.ModelProto:
    """A stem, ``blocks`` residual blocks (3 stride-2 stages), a 1x1 sigmoid head: ~4 tensors per block."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(x: str, cin: int, cout: int, name: str, stride: int = 1, k: int = 3) -> str:
        w = (rng.standard_normal((cout, cin, k, k)) * (1.5 / np.sqrt(cin * k * k))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}.w"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], pads=[k // 2] * 4,
                                      strides=[stride, stride]))
        return name

    x = conv("image", 3, width, "stem", stride=2)
    x = _relu(nodes, x, "stem_relu")
    stages = {blocks // 3: 2, 2 * blocks // 3: 2}
    for i in range(blocks):
        stride = stages.get(i, 1)
        y = _relu(nodes, conv(x, width, width, f"b{i}_c1", stride=stride), f"b{i}_r1")
        y = conv(y, width, width, f"b{i}_c2")
        skip = x if stride == 1 else conv(x, width, width, f"b{i}_down", stride=stride, k=1)
        nodes.append(helper.make_node("Add", [y, skip], [f"b{i}_add"]))
        x = _relu(nodes, f"b{i}_add", f"b{i}_out")
    head = conv(x, width, 1, "head", k=1)
    nodes.append(helper.make_node("Sigmoid", [head], ["prob"]))
    graph = helper.make_graph(nodes, "residual_detector", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                          ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1, "h", "w"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _relu(nodes: list, x: str, name: str) -> str:
    nodes.append(helper.make_node("Relu", [x], [name]))
    return name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=70)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="sppq-bench-") as tmp:
        root = Path(tmp)
        model = residual_cnn(args.blocks)
        onnx.save(model, str(root / "det.onnx"))
        rng = np.random.default_rng(1)
        (root / "img").mkdir()
        for i in range(args.images):
            cv2.imwrite(str(root / "img" / f"{i}.jpg"), rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        cfg = {"model": {"path": "det.onnx"}, "input": {"sizes": [[args.size, args.size]]},
               "calibration": {"images": "img", "batch_size": 1, "output": "out/t.cache"},
               "report": {"images": "img", "labels": "none", "batch_size": 1, "output_dir": "out/report",
                          "algorithms": ["entropy2", "minmax", "percentile"], "layer_images": args.images}}
        (root / "c.yaml").write_text(yaml.safe_dump(cfg))
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "sppquant", "-v", "report", "--config", str(root / "c.yaml")],
                             capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if res.returncode != 0:
            log.error("report failed:\n%s", res.stderr[-6000:])
            return 1
        rep = json.loads((root / "out" / "report" / "report.json").read_text())
    row = {"tensors": len(rep["layers"]), "size": args.size, "images": args.images, "wall_s": round(seconds, 1),
           "peak_rss_mb": round(peak_mb), "precisions": sorted(rep["precisions"])}
    log.info("| tensors | input | images | wall s | peak RSS MB |\n|---|---|---|---|---|\n| %d | %dx%d | %d | %.1f | %d |",
             row["tensors"], args.size, args.size, args.images, seconds, peak_mb)
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
