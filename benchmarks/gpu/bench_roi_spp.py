"""Time the RoI SPP kernel against torchvision's roi_pool per level + flatten + cat (eager and
torch.compile of that) and against the bytes the regions touch, at copy bandwidth.

Touched bytes: per valid RoI, C x (clipped window area) x element size (the window = union of its
bins, what a kernel reading each RoI's window once must load; overlapping RoIs count again),
plus the output and the RoI rows. bound = touched bytes / measured copy bandwidth; the kernel may
beat it since overlapping windows come from L2. Features rotate over copies spanning > 4x L2
(as the output of a previous layer they would be in DRAM or L2; this is the colder case).
RoIs are proposal-like: sizes log-uniform from 16 px to the image, aspect 1:2..2:1, clipped to
the image, fixed seed. torchvision has no int8 roi_pool: int8 rows compare with fp16.

Usage: python bench_roi_spp.py LIB.so [--ours-only] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench_common import Rotation, copy_bandwidth, l2_bytes, time_graph  # noqa: E402
from check_roi_spp_kernels import DTYPES, load  # noqa: E402

from sppquant.ops.roi_spp.reference import roi_batch_index, roi_region  # noqa: E402

CASES = [  # name, features, RoIs per image, levels, spatial_scale
    ("sppnet", (1, 256, 43, 43), 2000, (6, 3, 2, 1), 1 / 16),
    ("frcnn", (8, 512, 50, 50), 300, (6, 3, 2, 1), 1 / 16),
    ("frcnn", (8, 512, 50, 50), 300, (4, 2, 1), 1 / 16),
    ("odd", (3, 96, 37, 53), 171, (5, 3, 1), 1 / 8),
    ("odd", (2, 200, 31, 17), 333, (6, 3, 2, 1), 1 / 16),
]


def proposals(n_img: int, per_image: int, h: int, w: int, scale: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img_h, img_w = h / scale, w / scale
    r = n_img * per_image
    size = np.exp(rng.uniform(np.log(16.0), np.log(max(img_h, img_w)), r))
    ar = np.exp(rng.uniform(np.log(0.5), np.log(2.0), r))
    bw, bh = size * np.sqrt(ar), size / np.sqrt(ar)
    cx, cy = rng.uniform(0, img_w, r), rng.uniform(0, img_h, r)
    rois = np.empty((r, 5), np.float32)
    rois[:, 0] = np.repeat(np.arange(n_img), per_image)
    rois[:, 1] = np.clip(cx - bw / 2, 0, img_w - 1)
    rois[:, 2] = np.clip(cy - bh / 2, 0, img_h - 1)
    rois[:, 3] = np.clip(cx + bw / 2, 0, img_w - 1)
    rois[:, 4] = np.clip(cy + bh / 2, 0, img_h - 1)
    return rois


def touched_bytes(rois: np.ndarray, shape, scale: float, esize: int, out_elems: int) -> int:
    n, c, h, w = shape
    total = 0
    for roi in rois:
        if roi_batch_index(roi, n) is None:
            continue
        xs, ys, rw, rh = roi_region(roi, scale)
        wy = max(0, min(h, ys + rh) - max(0, ys))
        wx = max(0, min(w, xs + rw) - max(0, xs))
        total += c * wy * wx * esize
    return total + out_elems * esize + rois.nbytes


def tv_spp(x: torch.Tensor, rois: torch.Tensor, levels, scale: float) -> torch.Tensor:
    import torchvision  # noqa: PLC0415 - only the GPU machine has it

    return torch.cat([torchvision.ops.roi_pool(x, rois, n, scale).flatten(1) for n in levels], 1)


@functools.cache
def compiled_tv(levels: tuple[int, ...], scale: float):
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 1 << 20)
    return torch.compile(functools.partial(tv_spp, levels=levels, scale=scale), dynamic=False)


def bench(lib, name, shape, per_image, levels, scale, dtype, copy_gbs, span, ours_only) -> dict:
    code, _, tdt = DTYPES[dtype]
    n, c, h, w = shape
    rois_np = proposals(n, per_image, h, w, scale)
    r = len(rois_np)
    rois = torch.from_numpy(rois_np).cuda()
    numel, esize = math.prod(shape), torch.tensor([], dtype=tdt).element_size()
    if dtype == "int8":
        rot = Rotation(lambda k: torch.randint(-128, 128, (k,), dtype=torch.int8, device="cuda"), numel, 1, span)
    else:
        rot = Rotation(lambda k: torch.randn(k, device="cuda").to(tdt), numel, esize, span)
    width = c * sum(v * v for v in levels)
    out = torch.empty(r * width, dtype=tdt, device="cuda")
    arr = (ctypes.c_int * len(levels))(*levels)
    fwd = lib.sppq_roi_spp_forward
    rc = fwd(rot.views[0].data_ptr(), rois.data_ptr(), out.data_ptr(), code, 0, n, c, h, w, r, arr, len(levels),
             scale, 0.02, 0.02, torch.cuda.current_stream().cuda_stream)
    if rc != 0:
        raise RuntimeError(lib.sppq_error_string(rc).decode())

    def ours():
        fwd(rot.next().data_ptr(), rois.data_ptr(), out.data_ptr(), code, 0, n, c, h, w, r, arr, len(levels), scale,
            0.02, 0.02, torch.cuda.current_stream().cuda_stream)

    k = rot.calls(numel * esize, min_calls=20)
    t_ours = time_graph(ours, k, 20)
    touched = touched_bytes(rois_np, shape, scale, esize, r * width)
    bound = touched / (copy_gbs * 1e9) * 1e6
    res = {"case": name, "shape": "x".join(map(str, shape)), "R": r, "levels": ",".join(map(str, levels)),
           "dtype": dtype, "ours_us": t_ours, "touched_mb": touched / 1e6, "bound_us": bound, "pct_bound": 100 * bound / t_ours,
           "feature_mb": numel * esize / 1e6}
    if ours_only:
        return res
    trot = rot if dtype != "int8" else Rotation(lambda m: torch.randn(m, device="cuda").half(), numel, 2, span)
    x0 = trot.views[0].view(shape)
    trois = rois.to(x0.dtype)  # torchvision wants rois of the input's dtype
    for key, fn in (("torch", functools.partial(tv_spp, levels=levels, scale=scale)), ("compiled", compiled_tv(levels, scale))):
        try:
            fn(x0, trois)
            torch.cuda.synchronize()
            res[f"{key}_us"] = time_graph(lambda f=fn: f(trot.next().view(shape), trois), k, 20)
            res[f"{key}_path"] = "fp16" if dtype == "int8" else dtype
            res[f"vs_{key}"] = res[f"{key}_us"] / t_ours
        except Exception as exc:  # noqa: BLE001
            print(f"{key} failed for {name} {dtype}: {str(exc)[:200]}", flush=True)
    return res


def agreement(lib, copy_gbs) -> str:
    """fp32 sppnet case vs torchvision on the same data: fraction of equal outputs."""
    name, shape, per, levels, scale = CASES[0]
    n, c, h, w = shape
    rois_np = proposals(n, per, h, w, scale)
    x = torch.randn(shape, device="cuda")
    rois = torch.from_numpy(rois_np).cuda()
    out = torch.empty(len(rois_np) * c * sum(v * v for v in levels), device="cuda")
    arr = (ctypes.c_int * len(levels))(*levels)
    lib.sppq_roi_spp_forward(x.data_ptr(), rois.data_ptr(), out.data_ptr(), 0, 0, n, c, h, w, len(rois_np), arr,
                             len(levels), scale, 1.0, 1.0, torch.cuda.current_stream().cuda_stream)
    tv = tv_spp(x, rois, levels, scale).reshape(-1)
    torch.cuda.synchronize()
    eq = (tv == out).float().mean().item()
    return f"ours vs torchvision roi_pool on {name} fp32: {100 * eq:.4f}% of outputs equal"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--ours-only", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    lib = load(args.lib)
    span = 4 * l2_bytes()
    copy_gbs = copy_bandwidth()
    knobs = {k: v for k, v in os.environ.items() if k.startswith("SPPQ_")}
    print(f"GPU {torch.cuda.get_device_properties(0).name}; copy {copy_gbs:.0f} GB/s; knobs {knobs or 'default'}", flush=True)
    if not args.ours_only:
        print(agreement(lib, copy_gbs), flush=True)
    rows = []
    for name, shape, per, levels, scale in CASES:
        for dtype in DTYPES:
            rows.append(bench(lib, name, shape, per, levels, scale, dtype, copy_gbs, span, args.ours_only))
    cols = ["case", "shape", "R", "levels", "dtype", "ours_us", "touched_mb", "bound_us", "pct_bound"]
    if not args.ours_only:
        cols += ["torch_us", "vs_torch", "compiled_us", "vs_compiled", "torch_path"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.2f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"copy_gbs": copy_gbs, "knobs": knobs, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
