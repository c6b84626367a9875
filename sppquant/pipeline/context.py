"""What every verb needs first: the model loaded and checked against the config, its task, its runners.

Checks run here, once, before any work: the configured input exists, the task can read
the model's outputs. Runners come from one place so the configured execution providers
apply everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import onnx

from sppquant.backends.onnxruntime import OrtRunner
from sppquant.config import Config
from sppquant.data import FeedBuilder
from sppquant.model import FLOAT_TYPES, graph_output_names, load_model
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


def open_model(cfg: Config) -> ModelContext:
    """Load (cached per file version) and check the model; choose the task (``auto`` by its outputs)."""
    path = Path(cfg.model.path)
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    model = _load(path, mtime, cfg.model.input_name)
    from sppquant.pipeline.detection import extra_feeds  # noqa: PLC0415

    task = choose_task(cfg.task, output_infos(model), str(path), configure=lambda t: _configure(cfg, t))
    feeds = extra_feeds(cfg, [i.name for i in model.graph.input])
    return ModelContext(model, path, cfg.model.input_name, tuple(graph_output_names(model)), task, feeds)


def _configure(cfg: Config, task: Task) -> Task:
    """A task with settings from its config section (detection: NMS, decoder hook)."""
    from sppquant.pipeline.detection import detection_settings  # noqa: PLC0415

    return task.configure(detection_settings(cfg)) if task.name == "detection" else task


def ort_runner(cfg: Config, model: onnx.ModelProto, extra_outputs: Sequence[str] = ()) -> OrtRunner:
    """An ONNX Runtime runner with the config's execution providers and threads."""
    return OrtRunner(model, extra_outputs=extra_outputs, options=cfg.onnxruntime)
