"""Tasks: the `TASKS` registry (classification, raw, detection) and the `auto` choice.

``auto`` picks classification for a model whose only float output is (N, K) class
scores, else ``raw``: a model that is not a classifier is never scored by argmax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sppquant.registry import Registry
from sppquant.tasks.base import Column, Metrics, OutputInfo, Task
from sppquant.tasks.classification import ClassificationTask
from sppquant.tasks.detection import DetectionTask
from sppquant.tasks.raw import RawTask

TASKS: Registry[Task] = Registry("task")
TASKS.register("classification", ClassificationTask())
TASKS.register("raw", RawTask())
TASKS.register("detection", DetectionTask())
TASK_CHOICES = ("auto", *TASKS.names())


def choose_task(name: str, outputs: Sequence[OutputInfo], source: str,
                configure: Callable[[Task], Task] | None = None) -> Task:
    """The configured task (``configure``: its config settings applied, then checked against the model's outputs)."""
    if name == "auto":
        floats = [o for o in outputs if o.is_float]
        single = len(outputs) == 1 and len(floats) == 1
        name = "classification" if single and len(floats[0].shape) == 2 and floats[0].shape[1] != 1 else "raw"
    task = TASKS.get(name)
    task = configure(task) if configure is not None else task
    task.check_outputs(outputs, source)
    return task


__all__ = ["TASKS", "TASK_CHOICES", "Column", "Metrics", "OutputInfo", "Task", "choose_task"]
