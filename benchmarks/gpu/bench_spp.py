"""Time the whole-map SPP kernels against the read floor, PyTorch eager and torch.compile.

Every timing replays a CUDA graph of k calls (launch gaps out of the numbers for every side)
with CUDA events; median over replays / k. Inputs rotate over copies spanning > 4x L2, so no
call reads an input another call left in L2.

- floor: ``x.view(N*C, H*W).amax(1)`` on the same rotated inputs: one read of the input, the
  least any SPP must do. ratio = floor time / our time (1.0 = at the floor).
- torch: per-level ``adaptive_max_pool2d`` + flatten + cat (eager). torch.compile: the same
  function compiled per shape (``dynamic=False``; Dynamo's recompile limits raised so every
  shape really compiles). PyTorch has no int8 adaptive_max_pool2d on CUDA; when the int8
  compile fails too, int8 rows compare with the fp16 path (column "path").

Modes (combinable): ``--legacy`` the fixed table of earlier rounds (+ floor, + compiled);
``--sweep`` N x C x H=W x level sets x dtypes plus odd sizes, ours and the floor;
``--compile-budget S`` torch.compile on a priority list of sweep rows until S seconds are spent.

Usage: python bench_spp.py LIB.so [--legacy] [--sweep] [--compile-budget 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import Rotation, copy_bandwidth, l2_bytes, time_eager, time_graph  # noqa: E402
from check_spp_kernels import DTYPES, load  # noqa: E402

LEGACY = [((32, 512, 64, 64), (1, 2, 4)), ((32, 512, 64, 64), (6, 3, 2, 1)), ((7, 96, 37, 53), (1, 2, 4)),
          ((7, 96, 37, 53), (6, 3, 2, 1))] + [((nb, 256, 13, 13), lv) for nb in (1, 8, 64) for lv in ((1, 2, 4), (6, 3, 2, 1))] \
    + [((128, 256, 13, 13), (6, 3, 2, 1)), ((64, 2048, 7, 7), (4, 2, 1)), ((16, 1024, 40, 40), (1, 2, 4)),
       ((32, 512, 64, 64), (8, 4, 2, 1))]
SWEEP_N, SWEEP_C, SWEEP_HW = (1, 8, 64, 128), (256, 512, 1024, 2048), (7, 13, 20, 40, 64)
ODD = [(8, 384, 37, 53), (32, 96, 37, 53), (4, 1000, 15, 9), (128, 768, 11, 11), (64, 200, 33, 33)]
LEVEL_SETS = [(1, 2, 4), (6, 3, 2, 1), (4, 2, 1), (8, 4, 2, 1), (5, 3, 1)]
KERNELS = {0: "stream", 1: "small", 2: "segment", 3: "lane", 4: "fixed", 5: "rows", -1: "?"}


def torch_spp(x: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    return torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in levels], 1)


@functools.cache
def compiled_spp(levels: tuple[int, ...]):
    for name, value in (("cache_size_limit", 1 << 20), ("recompile_limit", 1 << 20),
                        ("accumulated_cache_size_limit", 1 << 20), ("accumulated_recompile_limit", 1 << 20)):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, value)
    return torch.compile(functools.partial(torch_spp, levels=levels), dynamic=False)


class Inputs:
    """Rotated inputs of one (shape, dtype) and, for int8, fp16 twins for PyTorch's paths."""

    def __init__(self, shape, dtype: str, span: int):
        self.shape, self.dtype = shape, dtype
        self.code, _, self.tdt = DTYPES[dtype]
        self.numel = math.prod(shape)
        self.esize = torch.tensor([], dtype=self.tdt).element_size()
        self.in_bytes = self.numel * self.esize
        if dtype == "int8":
            make = lambda n: torch.randint(-128, 128, (n,), dtype=torch.int8, device="cuda")  # noqa: E731
        else:
            make = lambda n: torch.randn(n, device="cuda", dtype=torch.float32).to(self.tdt)  # noqa: E731
        self.rot = Rotation(make, self.numel, self.esize, span)
        self.span = span
        self._half: Rotation | None = None

    def half(self) -> Rotation:
        if self._half is None:
            self._half = Rotation(lambda n: torch.randn(n, device="cuda", dtype=torch.float16), self.numel, 2, self.span)
        return self._half


def time_ours(lib, inp: Inputs, levels, replays: int) -> float:
    n, c, h, w = inp.shape
    bins = sum(v * v for v in levels)
    out = torch.empty(n * c * bins, dtype=inp.tdt, device="cuda")
    arr = (ctypes.c_int * len(levels))(*levels)
    stream = torch.cuda.current_stream().cuda_stream
    rc = lib.sppq_spp_forward(inp.rot.views[0].data_ptr(), out.data_ptr(), inp.code, 0, n, c, h, w, arr, len(levels),
                              0.02, 0.02, stream)
    if rc != 0:
        raise RuntimeError(lib.sppq_error_string(rc).decode())
    fwd, rot, code = lib.sppq_spp_forward, inp.rot, inp.code

    def fn():
        fwd(rot.next().data_ptr(), out.data_ptr(), code, 0, n, c, h, w, arr, len(levels), 0.02, 0.02,
            torch.cuda.current_stream().cuda_stream)

    return time_graph(fn, rot.calls(inp.in_bytes), replays)


def time_floor(inp: Inputs, replays: int) -> float:
    n, c, h, w = inp.shape
    rot = inp.rot
    return time_graph(lambda: rot.next().view(n * c, h * w).amax(1), rot.calls(inp.in_bytes), replays)


def time_torch(inp: Inputs, levels, replays: int, compiled: bool) -> tuple[float, str]:
    """Eager or compiled PyTorch; int8 tries its own dtype first when compiled, else fp16."""
    fn_spp = compiled_spp(tuple(levels)) if compiled else functools.partial(torch_spp, levels=levels)
    rots = [(inp.rot, inp.dtype)] if inp.dtype != "int8" else ([(inp.rot, "int8")] if compiled else []) + [(inp.half(), "fp16")]
    for rot, path in rots:
        try:
            fn_spp(rot.views[0].view(inp.shape))
            torch.cuda.synchronize()
        except Exception:  # noqa: BLE001 - int8 not supported by this path
            continue
        return time_graph(lambda r=rot: fn_spp(r.next().view(inp.shape)), rot.calls(inp.in_bytes), replays), path
    raise RuntimeError("no PyTorch path ran")


def agree(lib, inp: Inputs, levels) -> bool:
    """fp32/fp16 max is exact: our output equals PyTorch's on one input."""
    n, c, h, w = inp.shape
    x = inp.rot.views[0]
    out = torch.empty(n * c * sum(v * v for v in levels), dtype=inp.tdt, device="cuda")
    arr = (ctypes.c_int * len(levels))(*levels)
    lib.sppq_spp_forward(x.data_ptr(), out.data_ptr(), inp.code, 0, n, c, h, w, arr, len(levels), 0.02, 0.02,
                         torch.cuda.current_stream().cuda_stream)
    torch.cuda.synchronize()
    return bool(torch.equal(out.view(n, -1), torch_spp(x.view(inp.shape), levels)))


def kernel_of(lib, inp: Inputs, levels) -> str:
    n, c, h, w = inp.shape
    arr = (ctypes.c_int * len(levels))(*levels)
    return KERNELS.get(lib.sppq_spp_kernel_choice(inp.code, 0, n, c, h, w, arr, len(levels)), "?")


def row(lib, inp: Inputs, levels, ours: float, floor: float | None, copy_gbs: float) -> dict:
    n, c, h, w = inp.shape
    out_bytes = n * c * sum(v * v for v in levels) * inp.esize
    gbs = (inp.in_bytes + out_bytes) / (ours * 1e-6) / 1e9
    return {"shape": "x".join(map(str, inp.shape)), "levels": ",".join(map(str, levels)), "dtype": inp.dtype,
            "kernel": kernel_of(lib, inp, levels), "in_bytes": inp.in_bytes, "ours_us": ours, "gbs": gbs,
            "pct_copy": 100.0 * gbs / copy_gbs, "floor_us": floor, "ratio": (floor / ours) if floor else None}


def run_legacy(lib, copy_gbs: float, span: int, ours_only: bool) -> list[dict]:
    rows = []
    for shape, levels in LEGACY:
        for dtype in DTYPES:
            inp = Inputs(shape, dtype, span)
            ours = time_ours(lib, inp, levels, 30)
            r = row(lib, inp, levels, ours, None if ours_only else time_floor(inp, 30), copy_gbs)
            if not ours_only:
                if dtype != "int8" and not agree(lib, inp, levels):
                    raise AssertionError(f"kernel and torch disagree on {shape} {levels} {dtype}")
                r["torch_us"], r["torch_path"] = time_torch(inp, levels, 30, compiled=False)
            rows.append(r)
            del inp
    return rows


def sweep_shapes(max_hw: int = 0, max_nc: int = 0, min_hw: int = 0) -> list[tuple[int, int, int, int]]:
    shapes = [(n, c, hw, hw) for n in SWEEP_N for c in SWEEP_C for hw in SWEEP_HW] + ODD
    return [s for s in shapes if (not max_hw or s[2] * s[3] <= max_hw) and (not max_nc or s[0] * s[1] <= max_nc)
            and s[2] * s[3] >= min_hw]


def run_sweep(lib, copy_gbs: float, span: int, budget_s: float, ours_only: bool, max_hw: int = 0,
              max_nc: int = 0, min_hw: int = 0) -> list[dict]:
    rows, t0 = [], time.time()
    for shape in sweep_shapes(max_hw, max_nc, min_hw):
        if time.time() - t0 > budget_s:
            print(f"sweep stopped at the time budget ({budget_s:.0f} s) before {shape}", flush=True)
            break
        for dtype in DTYPES:
            inp = Inputs(shape, dtype, span)
            floor = None if ours_only else time_floor(inp, 7)
            for levels in LEVEL_SETS:
                rows.append(row(lib, inp, levels, time_ours(lib, inp, levels, 7), floor, copy_gbs))
            if dtype == "fp32" and shape[0] * shape[1] <= 64 * 512 and not agree(lib, inp, LEVEL_SETS[1]):
                raise AssertionError(f"kernel and torch disagree on {shape} fp32")
            del inp
    return rows


def compile_priority() -> list[tuple[tuple[int, int, int, int], tuple[int, ...]]]:
    """Rows where compiled PyTorch was strongest or the map is small, then one per H=W at N=128."""
    first = [((64, 2048, 7, 7), (4, 2, 1)), ((128, 2048, 7, 7), (6, 3, 2, 1)), ((64, 2048, 7, 7), (6, 3, 2, 1)),
             ((128, 1024, 7, 7), (8, 4, 2, 1)), ((64, 1024, 7, 7), (5, 3, 1)), ((128, 256, 13, 13), (6, 3, 2, 1)),
             ((16, 1024, 40, 40), (1, 2, 4)), ((32, 512, 64, 64), (8, 4, 2, 1))]
    more = [((128, 2048, hw, hw), lv) for hw in (7, 13, 20) for lv in ((4, 2, 1), (6, 3, 2, 1))]
    more += [((8, 512, hw, hw), (5, 3, 1)) for hw in (7, 13, 20, 40, 64)]
    more += [((128, 1024, hw, hw), (8, 4, 2, 1)) for hw in (40, 64)] + [((1, 256, 13, 13), (1, 2, 4))]
    return list(dict.fromkeys(first + more))


def run_compile(lib, copy_gbs: float, span: int, budget_s: float) -> list[dict]:
    rows, t0 = [], time.time()
    for shape, levels in compile_priority():
        for dtype in DTYPES:
            if time.time() - t0 > budget_s:
                print(f"compile rows stopped at the time budget ({budget_s:.0f} s)", flush=True)
                return rows
            inp = Inputs(shape, dtype, span)
            tc = time.time()
            try:
                comp, path = time_torch(inp, levels, 15, compiled=True)
            except Exception as exc:  # noqa: BLE001
                print(f"compile failed for {shape} {levels} {dtype}: {exc}", flush=True)
                continue
            r = row(lib, inp, levels, time_ours(lib, inp, levels, 15), time_floor(inp, 15), copy_gbs)
            r.update(compiled_us=comp, compiled_path=path, compile_s=time.time() - tc,
                     vs_compiled=comp / r["ours_us"])
            rows.append(r)
            del inp
    return rows


def print_rows(title: str, rows: list[dict], cols: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    print("| " + " | ".join(h for h, _, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(("-" if r.get(k) is None else format(r[k], f)) for _, k, f in cols) + " |")


def summarize_sweep(rows: list[dict], l2: int) -> None:
    big = [r for r in rows if r["in_bytes"] > l2 and r["ratio"] is not None]
    small = [r for r in rows if r["in_bytes"] <= l2 and r["ratio"] is not None]
    under = sorted((r for r in big if r["ratio"] < 0.85), key=lambda r: r["ratio"])
    print(f"\nsweep: {len(rows)} rows; input > L2 ({l2 / 2**20:.0f} MiB): {len(big)} rows, "
          f"{len(big) - len(under)} at >= 85% of the floor, {len(under)} under")
    if big:
        print(f"  input > L2: ratio min {min(r['ratio'] for r in big):.2f}, median "
              f"{sorted(r['ratio'] for r in big)[len(big) // 2]:.2f}")
    if small:
        print(f"  input <= L2: {len(small)} rows, ratio min {min(r['ratio'] for r in small):.2f}, median "
              f"{sorted(r['ratio'] for r in small)[len(small) // 2]:.2f}")
    by = {(r["shape"], r["levels"], r["dtype"]): r for r in rows}
    slower = [(k, by[k]["ours_us"], by[(k[0], k[1], "fp16")]["ours_us"]) for k in by
              if k[2] == "int8" and (k[0], k[1], "fp16") in by and by[k]["ours_us"] > by[(k[0], k[1], "fp16")]["ours_us"]]
    print(f"  int8 slower than fp16: {len(slower)} rows" + (": " + "; ".join(
        f"{s} {lv} {a:.2f} vs {b:.2f} us" for (s, lv, _), a, b in slower[:12]) if slower else ""))
    cols = [("shape", "shape", "s"), ("levels", "levels", "s"), ("dtype", "dtype", "s"), ("kernel", "kernel", "s"),
            ("MB", "in_bytes", ".0f"), ("ours us", "ours_us", ".2f"), ("floor us", "floor_us", ".2f"),
            ("floor/ours", "ratio", ".2f")]
    show = [dict(r, in_bytes=r["in_bytes"] / 1e6) for r in under[:40]]
    print_rows("rows with input > L2 under 85% of the floor (worst first, at most 40)", show, cols)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--sweep-budget", type=float, default=1e9, help="seconds; the sweep stops after this")
    ap.add_argument("--compile-budget", type=float, default=0.0, help="seconds of torch.compile rows (0: none)")
    ap.add_argument("--ours-only", action="store_true", help="no floor / PyTorch (variant runs)")
    ap.add_argument("--max-hw", type=int, default=0, help="sweep only maps with H*W <= this (0: all)")
    ap.add_argument("--max-nc", type=int, default=0, help="sweep only shapes with N*C <= this (0: all)")
    ap.add_argument("--min-hw", type=int, default=0, help="sweep only maps with H*W >= this (0: all)")
    ap.add_argument("--overhead", action="store_true", help="launch overhead of the smallest case")
    ap.add_argument("--json")
    args = ap.parse_args()
    lib = load(args.lib)
    lib.sppq_empty_launch.argtypes = [ctypes.c_void_p]
    lib.sppq_spp_kernel_choice.argtypes = [ctypes.c_int] * 6 + [ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    props = torch.cuda.get_device_properties(0)
    l2 = l2_bytes()
    span = 4 * l2
    copy_gbs = copy_bandwidth()
    variant = {k: v for k, v in os.environ.items() if k.startswith("SPPQ_")}
    print(f"GPU: {props.name}, {props.multi_processor_count} SMs, L2 {l2 / 2**20:.0f} MiB; torch {torch.__version__}; "
          f"copy {copy_gbs:.0f} GB/s (read + write); knobs {variant or 'default'}", flush=True)
    result: dict = {"gpu": props.name, "copy_gbs": copy_gbs, "l2": l2, "knobs": variant}
    base_cols = [("shape", "shape", "s"), ("levels", "levels", "s"), ("dtype", "dtype", "s"), ("kernel", "kernel", "s"),
                 ("ours (us)", "ours_us", ".2f"), ("GB/s", "gbs", ".0f"), ("% of copy", "pct_copy", ".0f")]
    if args.legacy:
        rows = run_legacy(lib, copy_gbs, span, args.ours_only)
        result["legacy"] = rows
        cols = base_cols + ([] if args.ours_only else [("floor (us)", "floor_us", ".2f"), ("floor/ours", "ratio", ".2f"),
                                                       ("torch (us)", "torch_us", ".2f"), ("torch path", "torch_path", "s")])
        print_rows("fixed shapes (max pooling)", rows, cols)
    if args.compile_budget > 0:
        rows = run_compile(lib, copy_gbs, span, args.compile_budget)
        result["compiled"] = rows
        print_rows("torch.compile rows (compiled per shape, dynamic=False)", rows, base_cols + [
            ("floor/ours", "ratio", ".2f"), ("compiled (us)", "compiled_us", ".2f"), ("path", "compiled_path", "s"),
            ("compiled/ours", "vs_compiled", ".2f"), ("compile s", "compile_s", ".1f")])
    if args.sweep:
        rows = run_sweep(lib, copy_gbs, span, args.sweep_budget, args.ours_only, args.max_hw,
                         args.max_nc, args.min_hw)
        result["sweep"] = rows
        if not args.ours_only:
            summarize_sweep(rows, l2)
    if args.overhead:
        stream = lambda: torch.cuda.current_stream().cuda_stream  # noqa: E731
        x = torch.randn((1, 256, 13, 13), device="cuda")
        out = torch.empty(256 * 21, device="cuda")
        arr = (ctypes.c_int * 3)(1, 2, 4)
        small = lambda: lib.sppq_spp_forward(x.data_ptr(), out.data_ptr(), 0, 0, 1, 256, 13, 13, arr, 3, 1.0, 1.0, stream())  # noqa: E731
        result["overhead"] = {"empty_us": time_graph(lambda: lib.sppq_empty_launch(stream()), k=200),
                              "small_hot_us": time_graph(small, k=200),
                              "empty_eager_us": time_eager(lambda: lib.sppq_empty_launch(stream()), k=200),
                              "small_eager_us": time_eager(small, k=200)}
        print("\nlaunch overhead (us): " + ", ".join(f"{k} {v:.2f}" for k, v in result["overhead"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
