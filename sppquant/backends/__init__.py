"""Backends that run models: the `BACKENDS` and `PRECISIONS` registries and backend resolution.

A backend is named once here; config validation, CLI choices, help texts and routing read
these registries. Each backend's runner honours `sppquant.backends.base.Runner`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sppquant.errors import BackendUnavailable
from sppquant.registry import Registry

log = logging.getLogger(__name__)

TENSORRT_INSTALL_HINT = (
    "install TensorRT 10.x and pycuda on a machine with an NVIDIA GPU: pip install 'sppquant[gpu]'"
)


@dataclass(frozen=True)
class Precision:
    name: str
    description: str


PRECISIONS: Registry[Precision] = Registry("precision")
for _p in (Precision("fp32", "float32 everywhere"), Precision("fp16", "float16 activations and weights"),
           Precision("int8", "INT8 where the calibration table gives a scale, higher precision elsewhere")):
    PRECISIONS.register(_p.name, _p)


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None (any import failure means 'not usable')."""
    try:
        import tensorrt  # noqa: PLC0415 - optional dependency

        return str(tensorrt.__version__)
    except Exception as exc:  # missing package, missing native libraries, ...
        log.debug("TensorRT not usable: %s", exc)
        return None


def _tensorrt_usable() -> str | None:
    version = tensorrt_version()
    if version is not None and version.split(".")[0] == "10":
        return None
    found = f"found TensorRT {version}, need 10.x" if version else "TensorRT is not installed"
    return f"backend 'tensorrt' is not available: {found}; {TENSORRT_INSTALL_HINT}"


@dataclass(frozen=True)
class Backend:
    """A backend: whether it can run here (None, or why not), and what it offers.

    ``native_calibration``: the backend computes tables itself (TensorRT's calibrators)
    for the algorithms whose spec names one of its calibrators; every other algorithm
    is computed by sppquant from histograms.
    """

    name: str
    description: str
    unavailable: Callable[[], str | None]
    native_calibration: bool = False
    engines: bool = False  # runs serialized engines built by `sppquant build`


BACKENDS: Registry[Backend] = Registry("backend")
BACKENDS.register("onnxruntime", Backend("onnxruntime", "ONNX Runtime (CPU, or the configured providers)",
                                         lambda: None))
BACKENDS.register("tensorrt", Backend("tensorrt", "TensorRT 10.x engines with the sppquant plugins (NVIDIA GPU)",
                                      _tensorrt_usable, native_calibration=True, engines=True))
BACKEND_CHOICES = ("auto", *BACKENDS.names())  # "auto": TensorRT where usable, else ONNX Runtime


def resolve_backend(requested: str) -> str:
    """``auto`` -> the first registered backend after ONNX Runtime that is usable here, else ``onnxruntime``."""
    if requested == "auto":
        for name, spec in BACKENDS.items():
            if name != "onnxruntime" and spec.unavailable() is None:
                return name
        return "onnxruntime"
    if requested not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {requested!r}; expected one of {', '.join(BACKEND_CHOICES)}")
    why = BACKENDS.get(requested).unavailable()
    if why is not None:
        raise BackendUnavailable(why)
    return requested
