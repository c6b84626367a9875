"""Benchmark: vectorised EntropyCalibration2 search vs the slow per-candidate reference,
and streaming histogram throughput.

Run from the repository root:  python benchmarks/bench_threshold_search.py
The slow reference lives in tests/entropy_slow.py (the one the tests check against).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from entropy_slow import entropy_amax_slow, kl_slow  # noqa: E402

from sppquant.calibration import Histogram, entropy_amax  # noqa: E402

log = logging.getLogger("bench_threshold_search")

KINDS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "relu": lambda rng, n: np.maximum(rng.standard_normal(n), 0.0),  # half-normal + zeros
    "laplace": lambda rng, n: rng.laplace(size=n),  # long tails
    "uniform": lambda rng, n: rng.uniform(0.0, 1.0, n),  # e.g. a normalised image input
    "sparse": lambda rng, n: rng.standard_normal(n) * (rng.random(n) < 0.03),
}


def realistic_histograms(count: int, values: int, seed: int = 0) -> list[tuple[str, Histogram]]:
    rng = np.random.default_rng(seed)
    out = []
    for t in range(count):
        kind = list(KINDS)[t % len(KINDS)]
        scale = float(rng.choice([0.05, 1.0, 6.0, 40.0]))
        x = (KINDS[kind](rng, values) * scale).astype(np.float32)
        out.append((kind, Histogram().update(x)))
    return out


def timed(fn: Callable[..., object], args: tuple, repeats: int) -> tuple[float, object]:
    """Median seconds over ``repeats`` calls of ``fn(*args)``, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench_search(tensors: int, values: int, repeats: int) -> dict[str, float]:
    fast_t, slow_t, ties = [], [], 0
    for kind, h in realistic_histograms(tensors, values):
        counts, width = h.counts, h.bin_width
        tf, a_fast = timed(entropy_amax, (counts, width), repeats)
        ts, a_slow = timed(entropy_amax_slow, (counts, width), 1)
        if a_fast != a_slow:  # allowed only on a KL tie within rounding
            i_f, i_s = (round(a / width - 0.5) for a in (a_fast, a_slow))
            kf, ks = kl_slow(counts, i_f), kl_slow(counts, i_s)
            assert math.isclose(kf, ks, rel_tol=1e-9, abs_tol=1e-12), (kind, a_fast, a_slow, kf, ks)
            ties += 1
        fast_t.append(tf)
        slow_t.append(ts)
        log.debug("%-8s amax=%.6g fast=%.2f ms slow=%.0f ms", kind, a_fast, tf * 1e3, ts * 1e3)
    fast, slow = statistics.median(fast_t), statistics.median(slow_t)
    return {"fast_ms": fast * 1e3, "slow_ms": slow * 1e3, "ratio": slow / fast, "ties": ties}


def bench_histogram(values: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    out = {}
    for dtype in (np.float32, np.float16, np.float64):
        x = rng.standard_normal(values).astype(dtype)
        h = Histogram().update(x)  # range settled: steady-state streaming
        t_upd, _ = timed(h.update, (x,), repeats)
        t_new, _ = timed(lambda a: Histogram().update(a), (x,), repeats)  # includes range setup
        out[np.dtype(dtype).name] = (t_upd, t_new)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=20)
    ap.add_argument("--values", type=int, default=200_000, help="values per tensor histogram")
    ap.add_argument("--repeats", type=int, default=20, help="timed repeats of the fast paths")
    ap.add_argument("--hist-values", type=int, default=1_000_000)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")

    s = bench_search(args.tensors, args.values, args.repeats)
    log.info("EntropyCalibration2 search, %d tensors x 2048 bins (median per tensor)", args.tensors)
    log.info("| implementation | ms per tensor |")
    log.info("|---|---|")
    log.info("| slow, per candidate (tests/entropy_slow.py) | %.1f |", s["slow_ms"])
    log.info("| vectorised (entropy_amax) | %.2f |", s["fast_ms"])
    log.info(
        "speed ratio: %.0fx; thresholds identical on %d/%d tensors (rest: exact KL ties)",
        s["ratio"],
        args.tensors - s["ties"],
        args.tensors,
    )
    log.info("")
    log.info("Histogram.update, %d values per call (median of %d)", args.hist_values, args.repeats)
    log.info("| dtype | ms (range settled) | values/s | ms (fresh histogram) |")
    log.info("|---|---|---|---|")
    for name, (t_upd, t_new) in bench_histogram(args.hist_values, args.repeats).items():
        log.info("| %s | %.2f | %.3g | %.2f |", name, t_upd * 1e3, args.hist_values / t_upd, t_new * 1e3)


if __name__ == "__main__":
    main()
