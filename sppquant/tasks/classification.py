"""Classification: one (N, K) output of class scores (logits); top-1/top-5 with labels, agreement."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sppquant.errors import ModelError
from sppquant.preprocess import Geometry
from sppquant.tasks.base import Column, OutputInfo
from sppquant.tasks.metrics import OutputAccumulator, top_k


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class ClassificationMetrics:
    """Counts (top-1, top-5, agreement) and an `OutputAccumulator` over the class-score output."""

    def __init__(self, output: str, labelled: bool) -> None:
        self.output, self.labelled = output, labelled
        self.outputs = OutputAccumulator()
        self.images = self.top1 = self.top5 = self.agree = 0
        self.classes = 0

    def update(self, ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray],
               targets: Sequence[Any] | None) -> None:
        r = np.asarray(ref[self.output], dtype=np.float32).reshape(len(ref[self.output]), -1)
        y = np.asarray(out[self.output], dtype=np.float32).reshape(len(out[self.output]), -1)
        self.classes = y.shape[1]
        self.outputs.add(r, y)
        self.images += y.shape[0]
        self.agree += int(np.sum(top_k(r, 1)[:, 0] == top_k(y, 1)[:, 0]))
        if self.labelled and targets is not None:
            lab = np.asarray(targets, dtype=np.int64).reshape(-1, 1)
            self.top1 += int(np.sum(top_k(y, 1) == lab))
            self.top5 += int(np.sum((top_k(y, 5) == lab).any(axis=1)))

    def merge(self, other: ClassificationMetrics) -> ClassificationMetrics:
        out = ClassificationMetrics(self.output, self.labelled)
        out.outputs = self.outputs.merge(other.outputs)
        out.classes = max(self.classes, other.classes)
        for k in ("images", "top1", "top5", "agree"):
            setattr(out, k, getattr(self, k) + getattr(other, k))
        return out

    def result(self) -> dict[str, Any]:
        n = self.images
        res: dict[str, Any] = {"images": n}
        if self.labelled:
            res["top1"] = self.top1 / n if n else math.nan
            if self.classes >= 5:
                res["top5"] = self.top5 / n if n else math.nan
        res["agreement"] = self.agree / n if n else math.nan
        res.update(self.outputs.result())
        return res


class ClassificationTask:
    name = "classification"
    description = "one (N, K) output of class scores: top-1/top-5 with labels, top-1 agreement with FP32"
    primary = "top1"

    def check_outputs(self, outputs: Sequence[OutputInfo], source: str) -> None:
        floats = [o for o in outputs if o.is_float]
        if not floats:
            raise ModelError(f"{source}: task 'classification' needs a float output of class scores; the model "
                             "has none (use task: raw)")
        o = floats[0]
        if len(o.shape) > 2 and any(d not in (1, None) for d in o.shape[2:]):
            raise ModelError(f"{source}: task 'classification' needs an (N, K) output, {o.name!r} has shape "
                             f"{list(o.shape)} (use task: raw, or the model's own task)")

    def decode(self, outputs: Mapping[str, np.ndarray], geometry: Sequence[Geometry],
               top_k: int = 5) -> list[dict[str, Any]]:
        logits = next(iter(outputs.values()))
        probs = softmax(logits.reshape(logits.shape[0], -1))
        preds = []
        for p in probs:
            order = np.argsort(-p, kind="stable")[:max(1, top_k)]
            preds.append({"label": int(order[0]), "scores": [float(v) for v in p],
                          "top_k": [[int(k), float(p[k])] for k in order]})
        return preds

    def format_prediction(self, prediction: Mapping[str, Any]) -> str:
        tops = "  ".join(f"{k}:{p:.3f}" for k, p in prediction["top_k"])
        return f"{prediction['label']}\t{tops}"

    def new_metrics(self, outputs: Sequence[str], labelled: bool) -> ClassificationMetrics:
        return ClassificationMetrics(outputs[0], labelled)

    def columns(self, labelled: bool) -> list[Column]:
        cols = [Column("top1", "top-1", "pct", True), Column("top5", "top-5", "pct", True)] if labelled else []
        return cols + [Column("agreement", "agreement w/ FP32", "pct"), Column("cosine", "cosine", "f6"),
                       Column("sqnr_db", "SQNR (dB)", "db"), Column("max_abs_err", "max abs err", "g"),
                       Column("mean_abs_err", "mean abs err", "g"), Column("p99_abs_err", "p99 abs err", "g")]
