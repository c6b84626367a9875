"""Calibration batches: the shared data pipeline -> device buffers allocated once.

Why a separate class: the TensorRT calibrator callbacks stay thin, and the feeding
logic (order, shapes, reuse of buffers, end of data) is testable on host memory.

Fixed batch size: TensorRT calibrates at one fixed shape (the calibration profile),
so every batch must be exactly ``batch_size`` images. The last partial batch is
therefore dropped (``last_batch: drop`` in `iter_batches`, which logs how many images
it dropped), whatever ``calibration.last_batch`` says; padding it with repeated images
would bias the histograms. The provenance record says how many images were used.

Region inputs (a detector's ``rois``, from the same feed builder as every other verb):
TensorRT calibrates them at one shape too, ``batch_size x max_regions`` rows. A batch's
regions fill that by repeating its own rows (`pad_regions`); repeated regions re-weight
the histograms of what they pool but add no value the batch did not produce, where
invalid padding rows would add a spike of zero rows to every later tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from sppquant.backends.tensorrt.memory import DeviceMemory
from sppquant.config import Config
from sppquant.data import BadFiles, Batch, FeedBuilder, ImageSet, calibration_set, iter_batches
from sppquant.errors import DataError

log = logging.getLogger(__name__)


def pad_regions(rows: np.ndarray, count: int) -> np.ndarray:
    """``rows`` (R, 5) cycled (or cut) to exactly ``count`` rows, float32, C-contiguous."""
    rows = np.asarray(rows, np.float32).reshape(-1, 5)
    if len(rows) == 0:
        raise ValueError("a calibration batch produced no regions")
    return np.ascontiguousarray(np.resize(rows, (count, 5)), np.float32)


class BatchFeeder:
    """Yields device pointers, in the order TensorRT names its inputs, one batch at a time.

    Buffers are allocated on the first batch (a reused table allocates nothing) and
    reused for every later batch; `close` frees them.
    """

    def __init__(
        self,
        cfg: Config,
        shape: tuple[int, int, int, int],
        memory: DeviceMemory,
        images: ImageSet | None = None,
        progress: bool = True,
        on_upload: Callable[[Batch, dict[str, int]], None] | None = None,
        extra_feeds: FeedBuilder | None = None,
        regions: Mapping[str, int] | None = None,
    ) -> None:
        """``regions``: region input name -> its fixed row count (``extra_feeds`` computes them)."""
        self.cfg = cfg
        self.extra_feeds = extra_feeds
        self.regions = dict(regions or {})
        if self.regions and extra_feeds is None:
            raise ValueError(f"region inputs {list(self.regions)} need a feed builder")
        self.input_name = cfg.model.input_name
        self.shape = tuple(int(d) for d in shape)
        self.memory = memory
        self.images = images if images is not None else calibration_set(cfg.calibration)
        self.progress = progress
        self.on_upload = on_upload
        self.bad = BadFiles()
        self.calls = 0  # get_batch calls
        self.batches = 0  # batches uploaded
        self.exhausted = False
        self._buffers: dict[str, int] = {}
        self._it: Iterator[Batch] | None = None
        batch = self.shape[0]
        if len(self.images) < batch:
            raise DataError(f"TensorRT calibration needs at least calibration.batch_size={batch} images, "
                            f"found {len(self.images)}")
        if cfg.calibration.last_batch == "keep" and len(self.images) % batch:
            log.info("TensorRT calibrates at a fixed batch of %d: the last %d image(s) are dropped "
                     "(calibration.last_batch 'keep' applies to the ONNX Runtime backend only)",
                     batch, len(self.images) % batch)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4  # float32

    @property
    def images_used(self) -> int:
        return self.batches * self.shape[0]

    @property
    def pointers(self) -> dict[str, int]:
        return dict(self._buffers)

    def _batches(self) -> Iterator[Batch]:
        cal = self.cfg.calibration
        return iter_batches(self.images, self.cfg.preprocess, [self.shape[2:]], self.shape[0], last_batch="drop",
                            bad_files=cal.bad_files, workers=cal.workers, bad=self.bad, progress=self.progress,
                            desc="calibrate (TensorRT)", extra_feeds=self.extra_feeds)

    def next_batch(self, names: Sequence[str]) -> list[int] | None:
        """Device pointers for ``names`` (TensorRT's order), or None at the end of the data."""
        self.calls += 1
        fed = [self.input_name, *self.regions]
        unknown = [n for n in names if n not in fed]
        if unknown:
            raise KeyError(f"calibration data exists only for input(s) {fed}, TensorRT asked for {unknown}")
        if self.exhausted:
            return None
        if self._it is None:
            self._it = self._batches()
        batch = next(self._it, None)
        if batch is None:
            self.exhausted = True
            log.info("calibration data exhausted after %d batch(es) of %d", self.batches, self.shape[0])
            return None
        host = batch.inputs[0]
        if host.shape != self.shape or host.dtype != np.float32:
            raise ValueError(f"calibration batch has shape {host.shape} {host.dtype}, expected {self.shape} float32")
        hosts = {self.input_name: host}
        hosts.update({n: pad_regions(batch.extra[0][n], r) for n, r in self.regions.items()})
        if not self._buffers:
            self._buffers = {n: self.memory.allocate(a.nbytes) for n, a in hosts.items()}
        for n, a in hosts.items():
            self.memory.upload(self._buffers[n], a)
        self.batches += 1
        if self.on_upload is not None:
            self.on_upload(batch, dict(self._buffers))
        return [self._buffers[n] for n in names]

    def close(self) -> None:
        """Stop the loader threads and free the device buffers (idempotent)."""
        if self._it is not None:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()
            self._it = None
        for ptr in self._buffers.values():
            self.memory.free(ptr)
        self._buffers.clear()
