"""Per-tensor histograms fed with activations, batch by batch, from any backend.

Each batch updates the histograms and is dropped, so peak memory does not grow with the
number of images (`ThreadedFeed`: the batch being computed, plus the one being binned if it
is under a memory bound). Collectors merge exactly (`merge`), so shards computed in other
processes combine into the histograms one process would have built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

import numpy as np

from sppquant.calibration.channel_means import ChannelMeans
from sppquant.calibration.derive import Derivation, derive
from sppquant.calibration.histogram import Histogram
from sppquant.errors import DataError

log = logging.getLogger(__name__)
MAX_FEED_THREADS = 8  # past this, the GIL-held parts of binning (Python per chunk, bincount's range scan) dominate


def feed_threads(workers: int, busy: int) -> int:
    """Histogram threads: at least ``workers``, more where the machine has cores that the ``busy``
    inference threads leave idle (binning is most of a pass; ONNX Runtime's own MinMax calibrator
    uses every core)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, workers, min(MAX_FEED_THREADS, cores - busy))


def default_overlap_bytes() -> int:
    """A batch's activations kept alive beside the next one's, at most: 1/8 of physical memory, at least 1 GiB."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX
        ram = 0
    return max(1 << 30, ram // 8)


class ActivationCollector:
    """Per-tensor histograms fed by ``observe(name, array)``; knows nothing about backends.

    ``derived``: tensors whose histograms follow exactly from others' (`derive.derivations`): they are
    only counted while observed, and filled by `finish`, which must run once all batches are in.
    ``mean_axes``: tensors (layer inputs) whose per-channel means are kept too (`ChannelMeans`).
    """

    def __init__(self, names: Sequence[str], derived: Mapping[str, Derivation] | None = None,
                 mean_axes: Mapping[str, int] | None = None) -> None:
        self.names = list(names)
        self.channel_means = ChannelMeans(mean_axes or {})
        self.histograms: dict[str, Histogram] = {n: Histogram() for n in self.names}
        self.derived = {n: d for n, d in (derived or {}).items() if n in self.histograms}
        self._seen = dict.fromkeys(self.derived, 0)  # values observed per derived tensor
        self.batches = 0
        self.images = 0

    def observe(self, name: str, values: np.ndarray) -> None:
        hist = self.histograms.get(name)
        if hist is None:
            return
        self.channel_means.update(name, values)
        if name in self._seen:
            self._seen[name] += int(np.size(values))
            return
        try:
            hist.update(values)
        except ValueError as exc:  # +/-inf: the model overflows on this input, no finite range exists
            raise DataError(f"tensor {name!r}: {exc}") from None

    def observe_all(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name, values in arrays.items():
            self.observe(name, values)

    def finish(self) -> None:
        """Fill the derived tensors' histograms from their sources' (exact; see `derive`)."""
        if self.derived:
            derive(self.histograms, self.derived, self._seen)
            self.derived, self._seen = {}, {}

    def count_batch(self, images: int) -> None:
        self.batches += 1
        self.images += images

    def merge(self, other: ActivationCollector) -> ActivationCollector:
        """A collector equal to one fed both collectors' data (exact)."""
        out = ActivationCollector(self.names)
        for name in self.names:
            out.histograms[name] = self.histograms[name].merge(other.histograms[name])
        out.channel_means = self.channel_means.merge(other.channel_means)
        out.batches, out.images = self.batches + other.batches, self.images + other.images
        return out

    def warn_nan(self) -> None:
        nan_tensors = [n for n, h in self.histograms.items() if h.nan_count]
        if nan_tensors:
            log.warning("NaN values were skipped in %d tensor(s): %s", len(nan_tensors), ", ".join(nan_tensors[:10]))


class ThreadedFeed:
    """Feeds a collector from ``threads`` worker threads while the caller computes the next batch.

    Why: binning is most of a calibration pass, and numpy releases the GIL in its per-chunk
    work (as ONNX Runtime does while it runs), so tensors are binned in parallel and overlap
    the next forward pass. At most one batch is in flight (`submit` first waits for the
    previous one), and only one of at most ``overlap_bytes`` (default: 1/8 of physical memory,
    at least 1 GiB): a larger batch is binned before `submit` returns. Peak memory is thus one
    batch's activations plus at most ``overlap_bytes``, whatever the number of images.
    Each tensor is binned by one task at a time, in submission order; histograms do not
    depend on that order anyway. A task's error (`DataError`) is raised by the next
    `submit`, `wait` or the end of the ``with`` block.
    """

    def __init__(self, collector: ActivationCollector, threads: int = 1, overlap_bytes: int | None = None) -> None:
        self.collector = collector
        self.overlap_bytes = default_overlap_bytes() if overlap_bytes is None else overlap_bytes
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="sppquant-hist")
        self._pending: list[Future[None]] = []

    def submit(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Queue one batch's tensors (largest first, for balance) after the previous batch is done."""
        self.wait()
        wanted = [(n, a) for n, a in arrays.items() if n in self.collector.histograms]
        wanted.sort(key=lambda item: -item[1].size)
        self._pending = [self._pool.submit(self.collector.observe, n, a) for n, a in wanted]
        if sum(a.nbytes for _, a in wanted) > self.overlap_bytes:
            self.wait()  # too large to keep beside the next batch: bin it now (still on all threads)

    def wait(self) -> None:
        """Block until the submitted batch is binned; re-raise the first task error."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self) -> ThreadedFeed:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
