"""Any model, any outputs: per-output cosine, SQNR and error statistics against FP32, no class scores.

The right task for models that are not classifiers (detectors' probability maps, OCR
sequence outputs, embeddings): their outputs are compared element-wise, never argmaxed.
Integer outputs are compared for exact equality.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sppquant.preprocess import Geometry
from sppquant.tasks.base import Column, OutputInfo
from sppquant.tasks.metrics import OutputAccumulator


class RawMetrics:
    """One `OutputAccumulator` per float output (pooled into the summary), exact-match counts for others."""

    def __init__(self, outputs: Sequence[str]) -> None:
        self.names = list(outputs)
        self.per_output: dict[str, OutputAccumulator] = {n: OutputAccumulator() for n in self.names}
        self.equal: dict[str, list[int]] = {}  # integer outputs: [equal elements, elements]
        self.images = 0

    def update(self, ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray],
               targets: Sequence[Any] | None) -> None:
        self.images += len(next(iter(out.values())))
        for n in self.names:
            r, y = np.asarray(ref[n]), np.asarray(out[n])
            if r.dtype.kind == "f":
                self.per_output[n].add(r.reshape(len(r), -1), y.reshape(len(y), -1))
            else:
                eq = self.equal.setdefault(n, [0, 0])
                eq[0] += int(np.sum(r == y))
                eq[1] += int(r.size)

    def merge(self, other: RawMetrics) -> RawMetrics:
        out = RawMetrics(self.names)
        out.per_output = {n: self.per_output[n].merge(other.per_output[n]) for n in self.names}
        for n in set(self.equal) | set(other.equal):
            a, b = self.equal.get(n, [0, 0]), other.equal.get(n, [0, 0])
            out.equal[n] = [a[0] + b[0], a[1] + b[1]]
        out.images = self.images + other.images
        return out

    def result(self) -> dict[str, Any]:
        floats = [n for n in self.names if n not in self.equal]
        pooled = OutputAccumulator()
        for n in floats:
            pooled = pooled.merge(self.per_output[n])
        res: dict[str, Any] = {"images": self.images, **pooled.result()}
        res["cosine"] = (sum(self.per_output[n].result()["cosine"] for n in floats) / len(floats)
                         if floats else math.nan)
        res["outputs"] = {n: self.per_output[n].result() for n in floats}
        res["outputs"].update({n: {"exact_match": e[0] / e[1] if e[1] else math.nan} for n, e in self.equal.items()})
        return res


class RawTask:
    name = "raw"
    description = "any outputs: per-output cosine, SQNR and error statistics against FP32"
    primary = "sqnr_db"

    def check_outputs(self, outputs: Sequence[OutputInfo], source: str) -> None:
        return None

    def decode(self, outputs: Mapping[str, np.ndarray], geometry: Sequence[Geometry],
               top_k: int = 1) -> list[dict[str, Any]]:
        n = len(next(iter(outputs.values())))
        preds: list[dict[str, Any]] = []
        for i in range(n):
            summary = {}
            for name, arr in outputs.items():
                a = np.asarray(arr[i])
                stats = {"shape": list(a.shape)}
                if a.size and a.dtype.kind in "fiu":
                    stats.update(min=float(a.min()), max=float(a.max()), mean=float(a.mean()))
                summary[name] = stats
            preds.append({"outputs": summary})
        return preds

    def format_prediction(self, prediction: Mapping[str, Any]) -> str:
        parts = []
        for name, s in prediction["outputs"].items():
            rng = f" [{s['min']:.4g}, {s['max']:.4g}] mean {s['mean']:.4g}" if "mean" in s else ""
            parts.append(f"{name} {'x'.join(map(str, s['shape']))}{rng}")
        return "; ".join(parts)

    def new_metrics(self, outputs: Sequence[str], labelled: bool) -> RawMetrics:
        return RawMetrics(outputs)

    def columns(self, labelled: bool) -> list[Column]:
        return [Column("cosine", "cosine", "f6"), Column("sqnr_db", "SQNR (dB)", "db"),
                Column("max_abs_err", "max abs err", "g"), Column("mean_abs_err", "mean abs err", "g"),
                Column("p99_abs_err", "p99 abs err", "g")]
