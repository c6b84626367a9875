"""Stream calibration batches through the FP32 model and histogram every activation.

Only the current batch's activations are alive at any time: each batch's outputs
update the per-tensor histograms and are dropped, so peak memory does not grow with
the number of images. With several input sizes each batch runs at every size and
all sizes feed the same histograms, so one table serves every size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from sppquant.backends.onnxruntime import OrtRunner
from sppquant.calibration.histogram import Histogram
from sppquant.data import Batch

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
        except ValueError as exc:  # +/-inf: no finite range exists
            raise ValueError(f"tensor {name!r}: {exc}") from None

    def observe_all(self, arrays: dict[str, np.ndarray]) -> None:
        for name, values in arrays.items():
            self.observe(name, values)


def collect_onnxruntime(
    runner: OrtRunner,
    input_name: str,
    batches: Iterable[Batch],
    names: Sequence[str],
) -> ActivationCollector:
    """Run every batch at every size through ONNX Runtime, histogramming ``names``."""
    collector = ActivationCollector(names)
    outputs = [n for n in names if n != input_name]
    for batch in batches:
        for x in batch.inputs:
            collector.observe(input_name, x)
            collector.observe_all(runner.run({input_name: x}, outputs))
        collector.batches += 1
        collector.images += batch.inputs[0].shape[0]
    nan_tensors = [n for n, h in collector.histograms.items() if h.nan_count]
    if nan_tensors:
        log.warning("NaN values were skipped in %d tensor(s): %s", len(nan_tensors), ", ".join(nan_tensors[:10]))
    return collector
