"""Tasks: the `TASKS` registry (classification, raw; detection next) and the `auto` choice.

``auto`` picks classification for a model whose only float output is (N, K) class
scores, else ``raw``: a model that is not a classifier is never scored by argmax.
"""

from __future__ import annotations

from collections.abc import Sequence

from sppquant.registry import Registry
from sppquant.tasks.base import Column, Metrics, OutputInfo, Task
from sppquant.tasks.classification import ClassificationTask
from sppquant.tasks.raw import RawTask

TASKS: Registry[Task] = Registry("task")
TASKS.register("classification", ClassificationTask())
TASKS.register("raw", RawTask())
TASK_CHOICES = ("auto", *TASKS.names())


def choose_task(name: str, outputs: Sequence[OutputInfo], source: str) -> Task:
    """The configured task (checked against the model's outputs), or the ``auto`` choice."""
    if name == "auto":
        floats = [o for o in outputs if o.is_float]
        single = len(outputs) == 1 and len(floats) == 1
        name = "classification" if single and len(floats[0].shape) == 2 and floats[0].shape[1] != 1 else "raw"
    task = TASKS.get(name)
    task.check_outputs(outputs, source)
    return task


__all__ = ["TASKS", "TASK_CHOICES", "Column", "Metrics", "OutputInfo", "Task", "choose_task"]
