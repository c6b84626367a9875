"""Per-tensor histograms fed with activations, batch by batch, from any backend.

Only the current batch's activations are alive at any time: each batch updates the
histograms and is dropped, so peak memory does not grow with the number of images.
Collectors merge exactly (`merge`), so shards computed in other processes combine into
the histograms one process would have built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from sppquant.calibration.histogram import Histogram
from sppquant.errors import DataError

log = logging.getLogger(__name__)


class ActivationCollector:
    """Per-tensor histograms fed by ``observe(name, array)``; knows nothing about backends."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.histograms: dict[str, Histogram] = {n: Histogram() for n in self.names}
        self.batches = 0
        self.images = 0

    def observe(self, name: str, values: np.ndarray) -> None:
        hist = self.histograms.get(name)
        if hist is None:
            return
        try:
            hist.update(values)
        except ValueError as exc:  # +/-inf: the model overflows on this input, no finite range exists
            raise DataError(f"tensor {name!r}: {exc}") from None

    def observe_all(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name, values in arrays.items():
            self.observe(name, values)

    def count_batch(self, images: int) -> None:
        self.batches += 1
        self.images += images

    def merge(self, other: ActivationCollector) -> ActivationCollector:
        """A collector equal to one fed both collectors' data (exact)."""
        out = ActivationCollector(self.names)
        for name in self.names:
            out.histograms[name] = self.histograms[name].merge(other.histograms[name])
        out.batches, out.images = self.batches + other.batches, self.images + other.images
        return out

    def warn_nan(self) -> None:
        nan_tensors = [n for n, h in self.histograms.items() if h.nan_count]
        if nan_tensors:
            log.warning("NaN values were skipped in %d tensor(s): %s", len(nan_tensors), ", ".join(nan_tensors[:10]))
