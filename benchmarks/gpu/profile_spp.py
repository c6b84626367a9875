"""Launch a few large SPP cases once each, for ncu (see run_spp_gpu.sh, SPPQ_NCU=1)."""

from __future__ import annotations

import ctypes
import sys

import torch
from check_spp_kernels import DTYPES, load

lib = load(sys.argv[1])
for dtype, levels in (("int8", (1, 2, 4)), ("fp32", (6, 3, 2, 1)), ("fp32", (1, 2, 4))):
    code, _, tdt = DTYPES[dtype]
    shape = (32, 512, 64, 64)
    x = torch.randint(-128, 128, shape, dtype=torch.int8, device="cuda") if dtype == "int8" else torch.randn(shape, device="cuda")
    out = torch.empty(32 * 512 * sum(v * v for v in levels), dtype=tdt, device="cuda")
    arr = (ctypes.c_int * len(levels))(*levels)
    rc = lib.sppq_spp_forward(x.data_ptr(), out.data_ptr(), code, 0, *shape, arr, len(levels), 0.02, 0.02,
                              torch.cuda.current_stream().cuda_stream)
    assert rc == 0, rc
    torch.cuda.synchronize()
