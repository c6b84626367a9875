"""Backends that run the FP32 model: ONNX Runtime (everywhere) and TensorRT (NVIDIA GPUs)."""

from __future__ import annotations

import logging

from sppquant.errors import BackendUnavailable

log = logging.getLogger(__name__)

TENSORRT_INSTALL_HINT = (
    "install TensorRT 10.x and pycuda on a machine with an NVIDIA GPU: pip install 'sppquant[gpu]'"
)


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None (any import failure means 'not usable')."""
    try:
        import tensorrt  # noqa: PLC0415 - optional dependency

        return str(tensorrt.__version__)
    except Exception as exc:  # missing package, missing native libraries, ...
        log.debug("TensorRT not usable: %s", exc)
        return None


def resolve_backend(requested: str) -> str:
    """``auto`` -> ``tensorrt`` when TensorRT 10.x imports, else ``onnxruntime``."""
    if requested == "onnxruntime":
        return requested
    version = tensorrt_version()
    usable = version is not None and version.split(".")[0] == "10"
    if requested == "tensorrt":
        if not usable:
            found = f"found TensorRT {version}, need 10.x" if version else "TensorRT is not installed"
            raise BackendUnavailable(f"backend 'tensorrt' is not available: {found}; {TENSORRT_INSTALL_HINT}")
        return requested
    if requested == "auto":
        return "tensorrt" if usable else "onnxruntime"
    raise BackendUnavailable(f"unknown backend {requested!r}; expected auto, onnxruntime or tensorrt")
