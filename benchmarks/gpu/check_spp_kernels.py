"""Check the CUDA SPP kernels against the NumPy reference (sppquant/ops/spp/reference.py).

Runs on the GPU machine: calls ``sppq_spp_forward`` of the kernel library through ctypes on
torch device memory. Every case draws fresh random data (never zeros), some with ties, NaNs
and infinities; every output is computed twice, over two different poison patterns (0xFF and
0x11 bytes), so an element the kernel leaves unwritten cannot match the reference both times.

Max pooling must match exactly (bitwise, NaN where the reference has NaN) for float32, float16
and int8; int8 requantization follows the float32 arithmetic documented in spp_kernels.h
(``rint(float32(q) * (float32(in_scale) / float32(out_scale)))``, clamped). Avg pooling is
compared with tolerances (float32 accumulation against the float64 reference).

Usage: python check_spp_kernels.py LIB.so [--cases 1000] [--seed 0] [--fixed | --rows] [--require-kernel K]
"""

from __future__ import annotations

import argparse
import ctypes
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sppquant.ops.spp.reference import spp_reference  # noqa: E402

DTYPES = {"fp32": (0, np.float32, torch.float32), "fp16": (1, np.float16, torch.float16), "int8": (2, np.int8, torch.int8)}
LEVEL_SETS = [(1, 2, 4), (6, 3, 2, 1), (1,), (5, 3), (4, 2, 1), (3, 2, 1), (13, 6, 1), (2,), (8, 4, 2, 1)]


def load(lib_path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(lib_path, mode=ctypes.RTLD_GLOBAL)
    lib.sppq_spp_forward.restype = ctypes.c_int
    lib.sppq_spp_forward.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
        ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_float, ctypes.c_float, ctypes.c_void_p,
    ]
    lib.sppq_error_string.restype = ctypes.c_char_p
    lib.sppq_error_string.argtypes = [ctypes.c_int]
    lib.sppq_spp_output_width.restype = ctypes.c_longlong
    lib.sppq_spp_output_width.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    return lib


def forward(lib: ctypes.CDLL, x: torch.Tensor, out: torch.Tensor, dtype_code: int, pooling: int,
            shape: tuple[int, int, int, int], levels: tuple[int, ...], in_scale: float = 1.0,
            out_scale: float = 1.0) -> int:
    arr = (ctypes.c_int * len(levels))(*levels)
    n, c, h, w = shape
    return lib.sppq_spp_forward(x.data_ptr(), out.data_ptr(), dtype_code, pooling, n, c, h, w, arr, len(levels),
                                in_scale, out_scale, torch.cuda.current_stream().cuda_stream)


def random_case(rng: np.random.Generator, i: int) -> tuple[tuple[int, int, int, int], tuple[int, ...]]:
    kind = i % 10
    if kind < 5 or rng.random() < 0.5:
        levels = LEVEL_SETS[rng.integers(len(LEVEL_SETS))]
    else:
        levels = tuple(int(v) for v in rng.integers(1, 14, size=rng.integers(1, 6)))
    if kind == 0:    # tiny maps, smaller than the levels
        h, w = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    elif kind == 1:  # 1x1
        h = w = 1
    elif kind == 2:  # SPP-net style
        h = w = 13
    elif kind == 3:  # large channel count
        h, w = int(rng.integers(1, 20)), int(rng.integers(1, 20))
    else:
        h, w = int(rng.integers(1, 80)), int(rng.integers(1, 80))
    if kind == 3:
        n, c = int(rng.integers(1, 3)), int(rng.integers(512, 2049))
    elif kind == 4:
        n, c = int(rng.integers(1, 65)), int(rng.integers(1, 33))
    else:
        n, c = int(rng.integers(1, 9)), int(rng.integers(1, 65))
    if rng.random() < 0.1:
        c = 1
    # keep the NumPy reference quick
    while n * c * h * w > 1_500_000 and n > 1:
        n = max(1, n // 2)
    while n * c * h * w > 1_500_000 and c > 1:
        c = max(1, c // 2)
    return (n, c, h, w), levels


def fixed_shapes() -> list[tuple[int, int, tuple[int, ...]]]:
    """(H, W, levels) of the fixed kernel's instantiations, read from cuda/spp/spp_fixed.h."""
    text = (Path(__file__).resolve().parents[2] / "cuda" / "spp" / "spp_fixed.h").read_text()
    out = []
    for m in re.finditer(r"X\((\d+), (\d+), (\d+), (\d+), (\d+), (\d+)\)", text):
        v = [int(g) for g in m.groups()]
        out.append((v[0], v[1], tuple(x for x in v[2:] if x > 0)))
    return out


def fixed_case(rng: np.random.Generator, shapes: list) -> tuple[tuple[int, int, int, int], tuple[int, ...]]:
    """A shape the fixed kernel is instantiated for, random N and C (partial groups, groups across images)."""
    h, w, levels = shapes[int(rng.integers(len(shapes)))]
    n = int(rng.integers(1, 9))
    c = int(rng.choice([int(rng.integers(1, 97)), int(rng.integers(97, 2049)), 32 * int(rng.integers(1, 33))]))
    while n * c * h * w > 1_500_000 and c > 1:
        c = max(1, c // 2)
    return (n, c, h, w), levels


def rows_case(rng: np.random.Generator, i: int, dtype: str) -> tuple[tuple[int, int, int, int], tuple[int, ...], int]:
    """A map whose row fits one warp (the rows kernel, spp_rows.cu): W = V * k (k <= 32 lanes), any H and levels
    (overlapping bins, levels larger than the map), random N and C (warps of G planes across images).
    Returns (shape, levels, element offset); an offset (unaligned rows) only with W <= 32 (V = 1 fits)."""
    levels = LEVEL_SETS[rng.integers(len(LEVEL_SETS))] if rng.random() < 0.6 else \
        tuple(int(v) for v in rng.integers(1, 14, size=rng.integers(1, 6)))
    es = {"fp32": 4, "fp16": 2, "int8": 1}[dtype]
    offset = int(rng.integers(1, 4)) if i % 7 == 0 else 0
    vmax = 1 if offset else 16 // es
    v = int(rng.choice([x for x in (1, 2, 4, 8, 16) if x <= vmax]))
    w = v * int(rng.integers(1, 33))
    while w > 255:
        w //= 2
    h = int(rng.choice([int(rng.integers(1, 9)), int(rng.integers(9, 70)), int(rng.choice([20, 40, 64]))]))
    if i % 5 == 0:
        h = w = int(rng.choice([20, 40, 64])) if not offset else int(rng.choice([20, 24, 32]))
    n = int(rng.integers(1, 9))
    c = int(rng.choice([int(rng.integers(1, 40)), int(rng.integers(40, 700))]))
    while n * c * h * w > 1_500_000 and c > 1:
        c = max(1, c // 2)
    while n * c * h * w > 1_500_000 and n > 1:
        n = max(1, n // 2)
    return (n, c, h, w), levels, offset


def random_data(rng: np.random.Generator, dtype: str, shape: tuple[int, ...], special: bool) -> np.ndarray:
    size = int(np.prod(shape))
    if dtype == "int8":
        hi = int(rng.choice([2, 8, 128]))  # narrow ranges give many ties
        x = rng.integers(-128 if hi == 128 else -hi, hi, size=size, dtype=np.int64)
        return x.astype(np.int8).reshape(shape)
    x = rng.standard_normal(size) * float(rng.choice([0.5, 4.0, 100.0]))
    if rng.random() < 0.4:
        x = np.round(x * 4) / 4  # ties
    x = x.astype(np.float32 if dtype == "fp32" else np.float16)
    if special:
        idx = rng.integers(0, size, size=max(1, size // 200))
        x[idx] = np.nan
        if rng.random() < 0.5:
            x[rng.integers(0, size, size=max(1, size // 300))] = np.inf
            x[rng.integers(0, size, size=max(1, size // 300))] = -np.inf
    return x.reshape(shape)


def requant_ref(q: np.ndarray, in_scale: float, out_scale: float) -> np.ndarray:
    """float32 arithmetic identical to the kernel: rint(float32(q) * (in/out)) clamped."""
    if np.float32(in_scale).tobytes() == np.float32(out_scale).tobytes():
        ratio = np.float32(1.0)
    else:
        ratio = np.float32(in_scale) / np.float32(out_scale)
    y = np.rint(q.astype(np.float32) * ratio)
    return np.clip(y, -128, 127).astype(np.int8)


def expected(x: np.ndarray, dtype: str, pooling: str, levels: tuple[int, ...], in_scale: float,
             out_scale: float) -> np.ndarray:
    ref = spp_reference(x, levels, pooling)
    if dtype == "int8":
        if pooling == "max":
            if np.float32(in_scale).tobytes() == np.float32(out_scale).tobytes():
                return ref
            return requant_ref(ref, in_scale, out_scale)
        return requant_ref(ref.astype(np.float32), in_scale, out_scale)
    if pooling == "avg":
        return ref.astype(np.float32 if dtype == "fp32" else np.float16)
    return ref


def compare(got: np.ndarray, ref: np.ndarray, dtype: str, pooling: str) -> str | None:
    if got.shape != ref.shape:
        return f"shape {got.shape} != {ref.shape}"
    if pooling == "max":
        if dtype == "int8":
            bad = got != ref
        else:
            gn, rn = np.isnan(got), np.isnan(ref)
            bad = (gn != rn) | (~gn & ~rn & (got.view(np.uint16 if dtype == "fp16" else np.uint32)
                                             != ref.view(np.uint16 if dtype == "fp16" else np.uint32)))
            # +0.0 and -0.0 compare equal in np.max order-dependently; accept either sign of zero
            bad &= ~((got == 0) & (ref == 0))
    elif dtype == "int8":
        bad = np.abs(got.astype(np.int32) - ref.astype(np.int32)) > 1
    else:
        g, r = got.astype(np.float64), ref.astype(np.float64)
        gn, rn = np.isnan(g), np.isnan(r)
        tol = (1e-5 if dtype == "fp32" else 2e-3) * np.abs(r) + (1e-5 if dtype == "fp32" else 1e-3)
        with np.errstate(invalid="ignore"):
            close = (g == r) | (np.abs(g - r) <= tol)
        bad = (gn != rn) | (~gn & ~rn & ~close)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        return f"{int(bad.sum())} of {bad.size} differ; first at {i}: got {got.reshape(-1)[i]} want {ref.reshape(-1)[i]}"
    return None


def run_case(lib: ctypes.CDLL, rng: np.random.Generator, dtype: str, pooling: str,
             shape: tuple[int, int, int, int], levels: tuple[int, ...], special: bool, offset: int) -> str | None:
    code, npdt, tdt = DTYPES[dtype]
    x = random_data(rng, dtype, shape, special)
    if dtype == "int8" and rng.random() < 0.5:
        in_scale = float(rng.uniform(0.001, 0.1))
        out_scale = float(np.float32(in_scale * rng.uniform(0.3, 3.0)))
    else:
        in_scale = out_scale = float(rng.uniform(0.001, 0.1))
    ref = expected(x, dtype, pooling, levels, in_scale, out_scale)
    # an input that starts `offset` elements into its allocation exercises unaligned rows
    flat = torch.empty(x.size + offset, dtype=tdt, device="cuda")
    flat[offset:] = torch.from_numpy(x.reshape(-1)).to("cuda")
    xin = flat[offset:]
    n = shape[0]
    width = ref.shape[1]
    for poison in (0xFF, 0x11):
        out = torch.empty(n * width, dtype=tdt, device="cuda")
        out.view(torch.uint8).fill_(poison)
        rc = forward(lib, xin, out, code, 0 if pooling == "max" else 1, shape, levels, in_scale, out_scale)
        if rc != 0:
            return f"status {rc}: {lib.sppq_error_string(rc).decode()}"
        torch.cuda.synchronize()
        got = out.cpu().numpy().view(npdt).reshape(n, width)
        err = compare(got, ref, dtype, pooling)
        if err:
            return f"poison 0x{poison:02x}: {err}"
    return None


def bad_arguments(lib: ctypes.CDLL) -> list[str]:
    """Invalid calls must return the documented error code, never crash."""
    x = torch.ones(64, device="cuda")
    o = torch.empty(64, device="cuda")
    fails = []

    def call(levels, dtype=0, pooling=0, shape=(1, 1, 4, 4), ins=1.0, outs=1.0, xp=None, op=None, nlev=None):
        arr = (ctypes.c_int * max(1, len(levels)))(*levels) if levels is not None else None
        return lib.sppq_spp_forward(x.data_ptr() if xp is None else xp, o.data_ptr() if op is None else op,
                                    dtype, pooling, *shape, arr, len(levels or []) if nlev is None else nlev,
                                    ins, outs, None)

    cases = {
        "null input": (call([1], xp=0), 1), "null output": (call([1], op=0), 1), "null levels": (call(None, nlev=1), 1),
        "dtype 3": (call([1], dtype=3), 2), "pooling 2": (call([1], pooling=2), 3),
        "H=0": (call([1], shape=(1, 1, 0, 4)), 4), "N=-1": (call([1], shape=(-1, 1, 4, 4)), 4),
        "W=70000": (call([1], shape=(1, 1, 1, 70000)), 4),
        "no levels": (call([], nlev=0), 5), "level 0": (call([0]), 5), "level 65": (call([65]), 5),
        "17 levels": (call([1] * 17), 5), "sum 129": (call([64, 64, 1]), 5),
        "int8 scale 0": (call([1], dtype=2, ins=0.0), 6), "int8 scale nan": (call([1], dtype=2, outs=math.nan), 6),
        "int8 scale -1": (call([1], dtype=2, ins=-1.0), 6),
    }
    for name, (rc, want) in cases.items():
        if rc != want:
            fails.append(f"bad arguments '{name}': status {rc}, want {want}")
    torch.cuda.synchronize()
    return fails


def special_cases(lib: ctypes.CDLL, rng: np.random.Generator) -> list[str]:
    """Shapes that take the W-chunked path or the large-shared-memory path."""
    fails = []
    for dtype, pooling, shape, levels in [
        ("fp32", "max", (1, 2, 300, 2000), (6, 3, 2, 1)),
        ("fp16", "max", (2, 3, 40, 3001), (13, 6, 2, 1)),
        ("int8", "max", (1, 2, 7, 5000), (4, 2, 1)),
        ("fp32", "avg", (1, 2, 50, 4000), (6, 3, 2, 1)),
        ("fp32", "max", (1, 1, 1, 65535), (3, 1)),
        ("fp32", "max", (1, 2, 200, 200), (64, 32, 16, 8, 4, 2, 1)),
        ("fp16", "max", (1, 1, 97, 101), (64, 63, 1)),
    ]:
        err = run_case(lib, rng, dtype, pooling, shape, levels, special=True, offset=0)
        if err and not err.startswith("status 7"):
            fails.append(f"{dtype} {pooling} {shape} levels={levels}: {err}")
        elif err:
            print(f"  note: {shape} levels={levels} -> unsupported (status 7), as allowed")
    return fails


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixed", action="store_true",
                    help="max pooling on the fixed kernel's shapes only (cuda/spp/spp_fixed.h), random N and C")
    ap.add_argument("--rows", action="store_true",
                    help="max pooling on maps whose row fits one warp (rows kernel), random N and C; cases whose "
                         "kernel choice is not --require-kernel are drawn again (at most 50 times)")
    ap.add_argument("--require-kernel", type=int, default=-1,
                    help="fail a case whose kernel choice (sppq_spp_kernel_choice) is not this")
    args = ap.parse_args()
    lib = load(args.lib)
    lib.sppq_spp_kernel_choice.argtypes = [ctypes.c_int] * 6 + [ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    fixed = fixed_shapes() if args.fixed else []
    if args.fixed and not fixed:
        print("FAIL no shapes found in cuda/spp/spp_fixed.h")
        return 2
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    arg_fails = bad_arguments(lib)
    special_fails = special_cases(lib, rng)
    failures: list[str] = arg_fails + special_fails
    counts: dict[str, list[int]] = {}
    for dtype in DTYPES:
        ok = total = 0
        for i in range(args.cases):
            row_offset = None
            if args.rows:
                for _ in range(50):
                    shape, levels, row_offset = rows_case(rng, i, dtype)
                    arr = (ctypes.c_int * len(levels))(*levels)
                    if args.require_kernel < 0 or lib.sppq_spp_kernel_choice(
                            DTYPES[dtype][0], 0, *shape, arr, len(levels)) == args.require_kernel:
                        break
            else:
                shape, levels = fixed_case(rng, fixed) if fixed else random_case(rng, i)
            pooling = "avg" if i % 4 == 3 and not (fixed or args.rows) else "max"
            if args.require_kernel >= 0:
                arr = (ctypes.c_int * len(levels))(*levels)
                kind = lib.sppq_spp_kernel_choice(DTYPES[dtype][0], 0 if pooling == "max" else 1, *shape, arr, len(levels))
                if kind != args.require_kernel:
                    failures.append(f"{dtype} {pooling} shape={shape} levels={levels}: kernel {kind}, "
                                    f"want {args.require_kernel}")
                    continue
            special = dtype != "int8" and i % 5 == 1
            offset = row_offset if row_offset is not None else (int(rng.integers(0, 4)) if i % 7 == 0 else 0)
            err = run_case(lib, rng, dtype, pooling, shape, levels, special, offset)
            total += 1
            if err is None:
                ok += 1
            else:
                failures.append(f"{dtype} {pooling} shape={shape} levels={levels} offset={offset}: {err}")
        counts[dtype] = [ok, total]
    for f in failures[:30]:
        print("FAIL", f)
    print(f"checked in {time.time() - t0:.1f} s")
    print("| dtype | cases passed | of | (max 3/4, avg 1/4; 2 poison patterns each) |")
    print("|---|---|---|---|")
    for dtype, (ok, total) in counts.items():
        print(f"| {dtype} | {ok} | {total} | |")
    print(f"bad-argument checks: {'ok' if not arg_fails else 'FAILED'}; "
          f"chunked / large-grid shapes: {'ok' if not special_fails else 'FAILED'}")
    print("RESULT:", "PASS" if not failures else f"FAIL ({len(failures)} failures)")
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
