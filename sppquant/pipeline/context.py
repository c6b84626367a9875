"""What every verb needs first: the model loaded and checked against the config, its task, its runners.

Checks run here, once, before any work: the configured input exists, the task can read
the model's outputs. Runners come from one place so the configured execution providers
apply everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import onnx

from sppquant.backends.onnxruntime import OrtRunner
from sppquant.config import Config
from sppquant.data import BadFiles, FeedBuilder, ImageSet, iter_batches
from sppquant.errors import ModelError
from sppquant.model import FLOAT_TYPES, graph_output_names, load_model
from sppquant.preprocess import output_size_range
from sppquant.tasks import OutputInfo, Task, choose_task


@dataclass(frozen=True)
class ModelContext:
    model: onnx.ModelProto
    path: Path
    input_name: str
    outputs: tuple[str, ...]
    task: Task
    extra_feeds: FeedBuilder | None = None  # other model inputs computed from the images (detection: rois)


def output_infos(model: onnx.ModelProto) -> list[OutputInfo]:
    infos = []
    for o in model.graph.output:
        t = o.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        infos.append(OutputInfo(o.name, dims, t.elem_type in FLOAT_TYPES or t.elem_type == 0))
    return infos


@lru_cache(maxsize=4)
def _load(path: Path, mtime_ns: int, input_name: str) -> onnx.ModelProto:
    return load_model(path, input_name)


def check_image_input(model: onnx.ModelProto, cfg: Config, source: Path) -> None:
    """The config against the image input's declared type and shape, before any work (ModelError, one line)."""
    name = cfg.model.input_name
    vi = next(i for i in model.graph.input if i.name == name)
    t = vi.type.tensor_type
    if t.elem_type and t.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        kind = onnx.TensorProto.DataType.Name(t.elem_type)
        raise ModelError(f"{source}: input {name!r} is {kind}; sppquant feeds it normalized float32 images "
                         "(export the model with a float input, normalization inside or in preprocess.mean/std)")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] if t.HasField("shape") else []
    if dims and len(dims) != 4:
        raise ModelError(f"{source}: input {name!r} has shape {dims}, expected NCHW (4 dimensions)")
    if dims and dims[1] is not None and dims[1] != cfg.model.channels:
        raise ModelError(f"{source}: input {name!r} has {dims[1]} channel(s) but the config feeds "
                         f"{cfg.model.channels} (preprocess.color {cfg.preprocess.color!r}, model.channels)")
    if dims and (dims[2] is not None or dims[3] is not None):
        lo, hi = output_size_range(cfg.preprocess, cfg.input.sizes)
        for axis, (a, b) in ((2, (lo[0], hi[0])), (3, (lo[1], hi[1]))):
            if dims[axis] is not None and not (a == b == dims[axis]):
                raise ModelError(f"{source}: input {name!r} fixes {'HW'[axis - 2]} to {dims[axis]} but the config's "
                                 f"sizes and preprocessing give {a}..{b} (input.sizes, preprocess)")


def open_model(cfg: Config) -> ModelContext:
    """Load (cached per file version) and check the model; choose the task (``auto`` by its outputs)."""
    path = Path(cfg.model.path)
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    model = _load(path, mtime, cfg.model.input_name)
    check_image_input(model, cfg, path)
    from sppquant.pipeline.detection import extra_feeds  # noqa: PLC0415

    task = choose_task(cfg.task, output_infos(model), str(path), configure=lambda t: _configure(cfg, t))
    feeds = extra_feeds(cfg, [i.name for i in model.graph.input])
    return ModelContext(model, path, cfg.model.input_name, tuple(graph_output_names(model)), task, feeds)


def _configure(cfg: Config, task: Task) -> Task:
    """A task with settings from its config section (detection: NMS, decoder hook)."""
    from sppquant.pipeline.detection import detection_settings  # noqa: PLC0415

    return task.configure(detection_settings(cfg)) if task.name == "detection" else task


def ort_runner(cfg: Config, model: onnx.ModelProto, extra_outputs: Sequence[str] = (),
               spinning: bool = True) -> OrtRunner:
    """An ONNX Runtime runner with the config's execution providers and threads (``spinning``: see make_session)."""
    return OrtRunner(model, extra_outputs=extra_outputs, options=cfg.onnxruntime, spinning=spinning)


def image_feeds(cfg: Config, ctx: ModelContext, images: ImageSet, limit: int, batch_size: int,
                progress: bool = False, desc: str = "images") -> list[dict]:
    """The model feeds of the first ``limit`` of ``images`` at every configured size, in listing order
    (bad files skipped: these passes follow a calibration or evaluation that already reported them)."""
    subset = replace(images, paths=images.paths[:limit],
                     labels=images.labels[:limit] if images.labels is not None else None)
    feeds = []
    for batch in iter_batches(subset, cfg.preprocess, cfg.input.sizes, batch_size, "keep", "skip",
                              cfg.calibration.workers, bad=BadFiles(), progress=progress, desc=desc,
                              extra_feeds=ctx.extra_feeds):
        feeds += [batch.feeds(k, cfg.model.input_name) for k in range(len(cfg.input.sizes))]
    return feeds
