"""FP32 inference on image files through the shared data pipeline and preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sppquant.backends.onnxruntime import OrtRunner, load_model
from sppquant.config import Config
from sppquant.data import ImageSet, iter_batches


@dataclass(frozen=True)
class Prediction:
    path: str
    label: int  # top-1 class index
    scores: list[float]  # softmax probabilities, one per class
    top_k: list[tuple[int, float]]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(
    cfg: Config,
    images: Sequence[str | Path],
    top_k: int = 1,
    size: tuple[int, int] | None = None,
    progress: bool = False,
    engine: str | Path | None = None,
) -> list[Prediction]:
    """Classify ``images`` with the FP32 model at ``size`` (default: the first input size).

    Explicit files are never skipped silently: an unreadable one is an error. With
    ``engine``, the TensorRT engine runs instead of the ONNX model (ONNX Runtime).
    """
    size = size or cfg.input.sizes[0]
    if engine is not None:  # a TensorRT engine: same preprocessing and batching, same outputs
        from sppquant.backends.tensorrt.runner import TrtRunner

        runner = TrtRunner(engine, cfg.build.plugin_library)
    else:
        model = load_model(cfg.model.path, cfg.model.input_name)
        runner = OrtRunner(model)
    output = runner.model_outputs[0]
    image_set = ImageSet(tuple(Path(p) for p in images))
    results: list[Prediction] = []
    try:
        for batch in iter_batches(image_set, cfg.preprocess, [size], cfg.report.batch_size,
                                  bad_files="error", workers=cfg.calibration.workers, progress=progress,
                                  desc="predict"):
            logits = runner.run({cfg.model.input_name: batch.inputs[0]}, [output])[output]
            probs = softmax(logits.reshape(logits.shape[0], -1))
            for path, p in zip(batch.paths, probs):
                order = np.argsort(-p, kind="stable")[:top_k]
                results.append(Prediction(str(path), int(order[0]), [float(v) for v in p],
                                          [(int(k), float(p[k])) for k in order]))
    finally:
        if engine is not None:
            runner.close()  # free device memory deterministically
    return results
