"""The task protocol: how raw model outputs become predictions and metrics.

A task decodes one batch of outputs into per-image predictions (`predict`), and makes
metric accumulators that compare a precision's outputs with FP32's (and with targets
where the data has them). Accumulators merge exactly, so shards evaluated elsewhere
combine into the result one process would get. Reports render the task's `columns`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sppquant.preprocess import Geometry


@dataclass(frozen=True)
class Column:
    """One metric column of the report: JSON key, header, format (``pct``, ``db``, ``f6``, ``g``)."""

    key: str
    header: str
    fmt: str
    needs_targets: bool = False


class Metrics(Protocol):
    def update(self, ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray],
               targets: Sequence[Any] | None) -> None: ...

    def merge(self, other: Metrics) -> Metrics: ...

    def result(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class OutputInfo:
    """A model output as the task sees it: name, declared shape (ints or None), float or not."""

    name: str
    shape: tuple[int | None, ...]
    is_float: bool


class Task(Protocol):
    name: str
    description: str
    primary: str  # the metric key `tune` and warnings watch, e.g. "top1" or "agreement"

    def check_outputs(self, outputs: Sequence[OutputInfo], source: str) -> None:
        """Refuse (ModelError, one line) a model whose outputs this task cannot read."""

    def decode(self, outputs: Mapping[str, np.ndarray], geometry: Sequence[Geometry],
               top_k: int = 1) -> list[dict[str, Any]]:
        """One JSON-ready prediction per image (``top_k``: how many candidates a task lists)."""

    def format_prediction(self, prediction: Mapping[str, Any]) -> str:
        """One short text line for a prediction."""

    def new_metrics(self, outputs: Sequence[str], labelled: bool) -> Metrics: ...

    def columns(self, labelled: bool) -> list[Column]: ...
