"""Timing helpers shared by the GPU benchmarks (CUDA-graph replay, rotated inputs, copy ceiling)."""

from __future__ import annotations

import statistics

import torch


def l2_bytes() -> int:
    props = torch.cuda.get_device_properties(0)
    return int(getattr(props, "L2_cache_size", 50 * 2**20) or 50 * 2**20)


def time_graph(fn, k: int, replays: int = 30, warmup: int = 3) -> float:
    """Median microseconds per call of fn() captured k times in one CUDA graph (launch gaps out)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(k):
            fn()
    for _ in range(2):
        g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000.0 / k)
    del g
    return statistics.median(times)


def time_eager(fn, k: int, replays: int = 20) -> float:
    """Median microseconds per call when issued back to back from Python (host-bound for tiny work)."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(k):
            fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1000.0 / k)
    return statistics.median(times)


def copy_bandwidth() -> float:
    """Device-to-device copy of 256 MiB (as in earlier rounds; a graph of 1 GiB memcpy nodes ran at
    only 2.8 TB/s): GB/s counting bytes read + written."""
    n = 1 << 28
    src = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    us = time_graph(lambda: dst.copy_(src), k=10, replays=20)
    return 2 * n / (us * 1e-6) / 1e9


class Rotation:
    """Views of one pool holding enough copies of an input to exceed `span` bytes (4x L2 by
    default), handed out round robin so a graph of k calls never re-reads a cached input."""

    def __init__(self, make, numel: int, esize: int, span: int, max_copies: int = 2048):
        self.count = max(1, min(max_copies, -(-span // max(1, numel * esize))))
        self.pool = make(self.count * numel)
        self.views = [self.pool[i * numel:(i + 1) * numel] for i in range(self.count)]
        self.i = 0

    def next(self) -> torch.Tensor:
        v = self.views[self.i % self.count]
        self.i += 1
        return v

    def calls(self, in_bytes: int, min_calls: int = 20, big: int = 64 * 2**20) -> int:
        """Graph length: a multiple of the copies, at least `min_calls` (fewer for big inputs)."""
        want = max(self.count, 5 if in_bytes > 8 * big else (10 if in_bytes > big else min_calls))
        return -(-want // self.count) * self.count
