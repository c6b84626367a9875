"""Launch chosen SPP / RoI SPP cases once each, for ncu (run_gpu.sh ncu).

Usage: python profile_spp.py LIB.so CASE...   CASE = spp:N,C,H,W:levels:dtype  or  roi:NAME:dtype
  e.g. spp:128,256,13,13:6-3-2-1:fp32  roi:sppnet:int8
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_roi_spp import CASES, proposals  # noqa: E402
from check_roi_spp_kernels import load as load_roi  # noqa: E402
from check_spp_kernels import DTYPES, load  # noqa: E402


def spp_case(lib, spec: str, dtype: str) -> None:
    shape_s, levels_s = spec.split(":")
    shape = tuple(int(v) for v in shape_s.split(","))
    levels = tuple(int(v) for v in levels_s.split("-"))
    code, _, tdt = DTYPES[dtype]
    x = torch.randint(-128, 128, shape, dtype=torch.int8, device="cuda") if dtype == "int8" else torch.randn(shape, device="cuda").to(tdt)
    out = torch.empty(shape[0] * shape[1] * sum(v * v for v in levels), dtype=tdt, device="cuda")
    arr = (ctypes.c_int * len(levels))(*levels)
    for _ in range(1):
        rc = lib.sppq_spp_forward(x.data_ptr(), out.data_ptr(), code, 0, *shape, arr, len(levels), 0.02, 0.02,
                                  torch.cuda.current_stream().cuda_stream)
        assert rc == 0, rc
    torch.cuda.synchronize()


def roi_case(lib, name: str, dtype: str) -> None:
    _, shape, per, levels, scale = next(c for c in CASES if c[0] == name)
    code, _, tdt = DTYPES[dtype]
    n, c, h, w = shape
    x = torch.randint(-128, 128, shape, dtype=torch.int8, device="cuda") if dtype == "int8" else torch.randn(shape, device="cuda").to(tdt)
    rois = torch.from_numpy(proposals(n, per, h, w, scale)).cuda()
    out = torch.empty(len(rois) * c * sum(v * v for v in levels), dtype=tdt, device="cuda")
    arr = (ctypes.c_int * len(levels))(*levels)
    for _ in range(1):
        rc = lib.sppq_roi_spp_forward(x.data_ptr(), rois.data_ptr(), out.data_ptr(), code, 0, n, c, h, w, len(rois), arr,
                                      len(levels), scale, 0.02, 0.02, torch.cuda.current_stream().cuda_stream)
        assert rc == 0, rc
    torch.cuda.synchronize()


def main() -> int:
    lib = load(sys.argv[1])
    roi_lib = load_roi(sys.argv[1])  # its own handle: the RoI entry point's argtypes are set there
    for spec in sys.argv[2:]:
        kind, rest = spec.split(":", 1)
        body, dtype = rest.rsplit(":", 1)
        if kind == "spp":
            spp_case(lib, body, dtype)
        else:
            roi_case(roi_lib, body, dtype)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
