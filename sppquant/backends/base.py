"""The one contract every backend's runner honours (Polygraphy's BaseRunner, without the ceremony).

Callers (calibration, predict, report, tune) hold a `Runner` and never ask which backend
it is: feeds are a dict of every model input, outputs a dict of the requested names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class Runner:
    """Base class: subclasses set the names and implement `run` (and `close` if they hold resources)."""

    input_names: list[str]
    output_names: list[str]  # every output `run` can return (extra outputs included)
    model_outputs: list[str]  # the model's own graph outputs
    backend: str = ""
    device: str = ""  # what runs it, for reports: "CPUExecutionProvider", "NVIDIA H200", ...

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources now (idempotent); the default holds none."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
