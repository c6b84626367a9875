"""`sppquant predict`: FP32 inference on image files, decoded by the model's task.

Same preprocessing and batching as calibration; the runner is ONNX Runtime's (with the
config's providers) or, with ``engine``, a TensorRT engine: both honour one contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sppquant.atomic import atomic_write_bytes
from sppquant.backends.base import Runner
from sppquant.config import MAX_SIDE, Config
from sppquant.data import ImageSet, iter_batches
from sppquant.errors import UserError
from sppquant.pipeline.context import open_model, ort_runner


@dataclass(frozen=True)
class Prediction:
    path: str
    task: str
    result: dict[str, Any]  # the task's decoded prediction, JSON-ready
    text: str  # the task's one-line rendering

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, **self.result}

    # Classification fields, kept for callers of the classifier-only API.
    @property
    def label(self) -> int:
        return self.result["label"]

    @property
    def scores(self) -> list[float]:
        return self.result["scores"]

    @property
    def top_k(self) -> list[tuple[int, float]]:
        return [(int(k), float(p)) for k, p in self.result["top_k"]]


def predict(
    cfg: Config,
    images: Sequence[str | Path],
    top_k: int = 1,
    size: tuple[int, int] | None = None,
    progress: bool = False,
    engine: str | Path | None = None,
) -> list[Prediction]:
    """Run the FP32 model (or ``engine``) on ``images`` at ``size`` (default: the first input size).

    Explicit files are never skipped silently: an unreadable one is an error.
    """
    size = size or cfg.input.sizes[0]
    if min(size) <= 0 or max(size) > MAX_SIDE:
        raise UserError(f"--size: expected H and W in 1..{MAX_SIDE}, got {list(size)}")
    ctx = open_model(cfg)
    runner: Runner
    if engine is not None:
        from sppquant.backends.tensorrt.runner import TrtRunner  # noqa: PLC0415 - optional backend

        runner = TrtRunner(engine, cfg.build.plugin_library)
    else:
        runner = ort_runner(cfg, ctx.model)
    outputs = list(runner.model_outputs)
    image_set = ImageSet(tuple(Path(p) for p in images))
    results: list[Prediction] = []
    with runner:
        for batch in iter_batches(image_set, cfg.preprocess, [size], cfg.report.batch_size, bad_files="error",
                                  workers=cfg.calibration.workers, progress=progress, desc="predict",
                                  extra_feeds=ctx.extra_feeds):
            out = runner.run(batch.feeds(0, cfg.model.input_name), outputs)
            out = {**out, **(batch.extra[0] if batch.extra else {})}  # detection decodes against its rois
            for path, pred in zip(batch.paths, ctx.task.decode(out, batch.geometry[0], top_k=top_k)):
                results.append(Prediction(str(path), ctx.task.name, pred, ctx.task.format_prediction(pred)))
    return results


def draw_predictions(results: Sequence[Prediction], out_dir: str | Path, min_score: float = 0.0) -> list[Path]:
    """``--draw DIR``: each image with its detections, as ``DIR/<stem>.png`` (names made unique)."""
    from sppquant.preprocess import load_image  # noqa: PLC0415
    from sppquant.tasks.detection_draw import draw_detections, encode_png  # noqa: PLC0415 - OpenCV drawing

    out = Path(out_dir)
    written: list[Path] = []
    used: set[str] = set()
    for r in results:
        stem = Path(r.path).stem
        name = next(f"{stem}{sfx}.png" for sfx in ("", *(f"_{i}" for i in range(1, len(results) + 1)))
                    if f"{stem}{sfx}.png" not in used)
        used.add(name)
        atomic_write_bytes(out / name, encode_png(draw_detections(load_image(r.path), r.result, min_score)))
        written.append(out / name)
    return written


def check_draw(task_name: str, out_dir: str | Path) -> Path:
    """``--draw`` only for detection, into a folder that is (or can be) a directory: checked before work."""
    if task_name != "detection":
        raise UserError(f"--draw: the model's task is {task_name!r}; only detection predictions have boxes to draw")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--draw: {out} exists and is not a directory")
    return out
