"""NVIDIA ModelOpt ONNX PTQ (int8) as a peer, run in its own environment (it pins its own onnx/onnxruntime).

    /work/venv-modelopt/bin/python benchmarks/realmodels/modelopt_peer.py --onnx M.onnx --calib C.npy \
        --method entropy --out Q.onnx

Reads the same preprocessed calibration tensors the other tools use (saved by tune_auto.py as .npy),
calls ``modelopt.onnx.quantization.quantize(quantize_mode="int8", calibration_method=...)`` on the CPU
with FP32 between the Q/DQ pairs (as ORT quantize_static and the sppquant rows of this benchmark) and
prints one ``RESULT {json}`` line: calibration wall time and peak RSS. Imports nothing of sppquant.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--calib", required=True, help=".npy of preprocessed calibration tensors (N, C, H, W)")
    ap.add_argument("--method", choices=["entropy", "max"], required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from modelopt.onnx.quantization import quantize

    calib = np.load(args.calib)
    t0 = time.perf_counter()
    quantize(args.onnx, quantize_mode="int8", calibration_data=calib, calibration_method=args.method,
             calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=args.out, log_level="WARNING")
    res = {"calib_s": time.perf_counter() - t0, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
