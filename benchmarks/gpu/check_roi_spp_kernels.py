"""Check the CUDA RoI SPP kernel against the NumPy reference (sppquant/ops/roi_spp/reference.py).

Runs on the GPU machine: calls ``sppq_roi_spp_forward`` through ctypes on torch device memory.
Every case draws fresh random features (never zeros; ties, NaN/inf for floats) and RoIs mixing
boxes inside, partly and fully outside the map, degenerate boxes (x2 < x1), corners landing on
.5 after scaling, batch indices > 0, invalid rows (batch -1, >= N, NaN, a non-finite corner);
R = 0 now and then. Every output is computed twice over two poison patterns (0xFF, 0x11 bytes),
so an element the kernel leaves unwritten cannot match both times. Max is compared bit for bit
(NaN where the reference has NaN); INT8 with equal or different scales (the reference's
``requantize``). The reference's channel loop is vectorised here for speed (``fast_reference``),
checked equal to ``roi_spp_reference`` on the first cases of every run.

Usage: python check_roi_spp_kernels.py LIB.so [--cases 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import ctypes
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sppquant.ops.roi_spp.reference import (  # noqa: E402
    bin_range,
    requantize,
    roi_batch_index,
    roi_region,
    roi_spp_output_width,
    roi_spp_reference,
)

DTYPES = {"fp32": (0, np.float32, torch.float32), "fp16": (1, np.float16, torch.float16), "int8": (2, np.int8, torch.int8)}
LEVEL_SETS = [(6, 3, 2, 1), (4, 2, 1), (1, 2, 4), (5, 3, 1), (8, 4, 2, 1), (1,), (7,), (3, 2), (13, 6, 1), (2, 2)]
SCALES = [1.0, 0.5, 0.25, 0.125, 0.0625, 0.3, 1 / 3]


def load(lib_path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(lib_path, mode=ctypes.RTLD_GLOBAL)
    lib.sppq_roi_spp_forward.restype = ctypes.c_int
    lib.sppq_roi_spp_forward.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_void_p,
    ]
    lib.sppq_error_string.restype = ctypes.c_char_p
    lib.sppq_error_string.argtypes = [ctypes.c_int]
    return lib


def forward(lib, feat: torch.Tensor, rois: torch.Tensor, out: torch.Tensor, code: int, shape, r: int, levels,
            scale: float, in_scale: float = 1.0, out_scale: float = 1.0) -> int:
    arr = (ctypes.c_int * len(levels))(*levels)
    n, c, h, w = shape
    return lib.sppq_roi_spp_forward(feat.data_ptr(), rois.data_ptr() if r else None, out.data_ptr() if r else None,
                                    code, 0, n, c, h, w, r, arr, len(levels), scale, in_scale, out_scale,
                                    torch.cuda.current_stream().cuda_stream)


def fast_reference(f: np.ndarray, rois: np.ndarray, levels, scale: float) -> np.ndarray:
    """roi_spp_reference with the channel loop vectorised (same helper functions, same rules)."""
    n_img, c, h, w = f.shape
    out = np.zeros((len(rois), roi_spp_output_width(c, levels)), dtype=f.dtype)
    for r, roi in enumerate(rois):
        b = roi_batch_index(roi, n_img)
        if b is None:
            continue
        xs, ys, rw, rh = roi_region(roi, scale)
        col = 0
        for n in levels:
            vals = np.zeros((c, n, n), dtype=f.dtype)
            for by in range(n):
                y0, y1 = bin_range(ys, rh, n, by, h)
                for bx in range(n):
                    x0, x1 = bin_range(xs, rw, n, bx, w)
                    if y0 < y1 and x0 < x1:
                        vals[:, by, bx] = f[b, :, y0:y1, x0:x1].max(axis=(1, 2))
            out[r, col:col + c * n * n] = vals.reshape(-1)
            col += c * n * n
    return out


def random_rois(rng: np.random.Generator, r: int, n_img: int, h: int, w: int, scale: float) -> np.ndarray:
    stride = 1.0 / scale
    rois = np.empty((r, 5), np.float32)
    rois[:, 0] = rng.integers(0, n_img, r)
    sx, sy = w * stride, h * stride
    x1 = rng.uniform(-0.4 * sx, 1.1 * sx, r)
    y1 = rng.uniform(-0.4 * sy, 1.1 * sy, r)
    rois[:, 1], rois[:, 2] = x1, y1
    rois[:, 3] = x1 + rng.uniform(-0.15, 1.0, r) * sx
    rois[:, 4] = y1 + rng.uniform(-0.15, 1.0, r) * sy
    k = rng.random(r)
    whole = k < 0.15  # whole-map boxes
    rois[whole, 1:] = [0, 0, sx - 1, sy - 1]
    half = (k >= 0.15) & (k < 0.3)  # corners on .5 after scaling
    rois[half, 1:] = (rng.integers(-3, max(h, w) + 3, (int(half.sum()), 4)) + 0.5) * stride
    rois[(k >= 0.3) & (k < 0.34), 0] = -1
    rois[(k >= 0.34) & (k < 0.37), 0] = n_img
    rois[(k >= 0.37) & (k < 0.39), 0] = np.nan
    rois[(k >= 0.39) & (k < 0.41), 3] = np.inf
    rois[(k >= 0.41) & (k < 0.43), 0] += 0.7  # fractional batch index: truncated
    return rois


def random_case(rng: np.random.Generator, i: int):
    kind = i % 8
    levels = LEVEL_SETS[rng.integers(len(LEVEL_SETS))] if rng.random() < 0.8 else \
        tuple(int(v) for v in rng.integers(1, 10, size=rng.integers(1, 5)))
    if kind == 0:
        h, w = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    elif kind == 1:
        h, w = 43, 43
    elif kind == 2:
        h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
    else:
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    n = int(rng.integers(1, 5))
    c = int(rng.integers(200, 600)) if kind == 3 else int(rng.integers(1, 48))
    r = 0 if i % 97 == 13 else int(rng.integers(1, 24 if kind == 3 else 120))
    scale = float(SCALES[rng.integers(len(SCALES))])
    return (n, c, h, w), r, levels, scale


def random_features(rng: np.random.Generator, dtype: str, shape) -> np.ndarray:
    size = int(np.prod(shape))
    if dtype == "int8":
        hi = int(rng.choice([2, 8, 128]))
        return rng.integers(-128 if hi == 128 else -hi, hi, size=size).astype(np.int8).reshape(shape)
    x = rng.standard_normal(size) * float(rng.choice([0.5, 4.0, 100.0]))
    if rng.random() < 0.4:
        x = np.round(x * 4) / 4
    x = x.astype(np.float32 if dtype == "fp32" else np.float16)
    if rng.random() < 0.3:
        x[rng.integers(0, size, size=max(1, size // 300))] = np.nan
        x[rng.integers(0, size, size=max(1, size // 300))] = np.inf
        x[rng.integers(0, size, size=max(1, size // 300))] = -np.inf
    return x.reshape(shape)


def compare(got: np.ndarray, ref: np.ndarray, dtype: str) -> str | None:
    if got.shape != ref.shape:
        return f"shape {got.shape} != {ref.shape}"
    if dtype == "int8":
        bad = got != ref
    else:
        gn, rn = np.isnan(got), np.isnan(ref)
        ui = np.uint16 if dtype == "fp16" else np.uint32
        bad = (gn != rn) | (~gn & ~rn & (got.view(ui) != ref.view(ui)))
        bad &= ~((got == 0) & (ref == 0))  # either sign of zero
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        return f"{int(bad.sum())} of {bad.size} differ; first at {np.unravel_index(i, bad.shape)}: " \
               f"got {got.reshape(-1)[i]} want {ref.reshape(-1)[i]}"
    return None


def run_case(lib, rng, dtype: str, shape, r: int, levels, scale: float, offset: int, verify_reference: bool) -> str | None:
    code, npdt, tdt = DTYPES[dtype]
    f = random_features(rng, dtype, shape)
    rois = random_rois(rng, r, shape[0], shape[2], shape[3], scale)
    in_scale = out_scale = float(rng.uniform(0.001, 0.1))
    if dtype == "int8" and rng.random() < 0.5:
        out_scale = float(np.float32(in_scale * rng.uniform(0.3, 3.0)))
    ref = fast_reference(f, rois, levels, scale)
    if verify_reference:
        slow = roi_spp_reference(f, rois, levels, scale)
        if compare(ref, slow, dtype) is not None:
            return "fast_reference differs from roi_spp_reference"
    if dtype == "int8":
        ref = requantize(ref, in_scale, out_scale)
    flat = torch.empty(f.size + offset, dtype=tdt, device="cuda")
    flat[offset:] = torch.from_numpy(f.reshape(-1)).to("cuda")
    feat = flat[offset:]
    rois_d = torch.from_numpy(rois).to("cuda")
    width = roi_spp_output_width(shape[1], levels)
    for poison in (0xFF, 0x11):
        out = torch.empty(max(1, r * width), dtype=tdt, device="cuda")
        out.view(torch.uint8).fill_(poison)
        rc = forward(lib, feat, rois_d, out, code, shape, r, levels, scale, in_scale, out_scale)
        if rc != 0:
            return f"status {rc}: {lib.sppq_error_string(rc).decode()}"
        torch.cuda.synchronize()
        got = out[: r * width].cpu().numpy().view(npdt).reshape(r, width)
        err = compare(got, ref, dtype)
        if err:
            return f"poison 0x{poison:02x}: {err}"
    return None


def bad_arguments(lib) -> list[str]:
    x = torch.ones(64, device="cuda")
    fails = []

    def call(levels=(1,), dtype=0, pooling=0, shape=(1, 1, 4, 4), r=1, scale=1.0, ins=1.0, outs=1.0, fp=True):
        arr = (ctypes.c_int * max(1, len(levels)))(*levels)
        p = x.data_ptr() if fp else None
        return lib.sppq_roi_spp_forward(p, x.data_ptr(), x.data_ptr(), dtype, pooling, *shape, r, arr, len(levels),
                                        scale, ins, outs, None)

    cases = {
        "null features": (call(fp=False), 1), "dtype 3": (call(dtype=3), 2), "avg": (call(pooling=1), 3),
        "H=0": (call(shape=(1, 1, 0, 4)), 4), "R=-1": (call(r=-1), 4), "no levels": (call(levels=()), 5),
        "level 65": (call(levels=(65,)), 5), "scale 0": (call(scale=0.0), 9), "scale nan": (call(scale=math.nan), 9),
        "int8 scale 0": (call(dtype=2, ins=0.0), 6), "R=0 null buffers": (call(r=0, fp=False), 0),
    }
    for name, (rc, want) in cases.items():
        if rc != want:
            fails.append(f"bad arguments '{name}': status {rc}, want {want}")
    torch.cuda.synchronize()
    return fails


def large_cases(lib, rng) -> list[str]:
    """Wide maps (shared-memory opt-in), many channels, full-size SPP-net and Faster R-CNN shapes."""
    fails = []
    for dtype, shape, r, levels, scale in [
        ("fp32", (1, 3, 20, 1500), 40, (6, 3, 2, 1), 1.0),
        ("fp16", (2, 2, 200, 300), 30, (13, 6, 1), 0.5),
        ("fp32", (1, 256, 43, 43), 200, (6, 3, 2, 1), 1 / 16),
        ("int8", (8, 512, 50, 50), 100, (6, 3, 2, 1), 1 / 16),
        ("fp16", (3, 96, 37, 53), 150, (5, 3, 1), 1 / 8),
    ]:
        err = run_case(lib, rng, dtype, shape, r, levels, scale, 0, False)
        if err:
            fails.append(f"{dtype} {shape} R={r} levels={levels}: {err}")
    return fails


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    lib = load(args.lib)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    failures = bad_arguments(lib)
    failures += large_cases(lib, rng)
    counts = {}
    for dtype in DTYPES:
        ok = 0
        for i in range(args.cases):
            shape, r, levels, scale = random_case(rng, i)
            offset = int(rng.integers(0, 4)) if i % 7 == 0 else 0
            err = run_case(lib, rng, dtype, shape, r, levels, scale, offset, verify_reference=i < 20)
            if err is None:
                ok += 1
            else:
                failures.append(f"{dtype} shape={shape} R={r} levels={levels} scale={scale} offset={offset}: {err}")
        counts[dtype] = ok
    for f in failures[:30]:
        print("FAIL", f)
    print(f"checked in {time.time() - t0:.1f} s")
    print("| dtype | cases passed | of | (2 poison patterns each) |")
    print("|---|---|---|---|")
    for dtype, ok in counts.items():
        print(f"| {dtype} | {ok} | {args.cases} | |")
    print("RESULT:", "PASS" if not failures else f"FAIL ({len(failures)} failures)")
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
