"""Importing TensorRT, bridging its logger to ``logging``, and loading the SPP plugin.

Every TensorRT-facing module goes through `import_tensorrt` so a missing install, a
wrong major version or missing native libraries become one `BackendUnavailable` line
(exit code 2) instead of an ImportError traceback.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

from sppquant.backends import TENSORRT_INSTALL_HINT
from sppquant.errors import BackendUnavailable

log = logging.getLogger("sppquant.tensorrt")

PYCUDA_INSTALL_HINT = "install pycuda on a machine with an NVIDIA GPU and its driver: pip install 'sppquant[gpu]'"


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module (10.x), or BackendUnavailable saying what is missing."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, OSError from missing libnvinfer.so.10, ...
        raise BackendUnavailable(f"TensorRT is not usable ({type(exc).__name__}: {exc}); {TENSORRT_INSTALL_HINT}") from None
    version = str(getattr(trt, "__version__", "0"))
    if version.split(".")[0] != "10":
        raise BackendUnavailable(f"found TensorRT {version}, the TensorRT backend needs 10.x; {TENSORRT_INSTALL_HINT}")
    return trt


def trt_version(trt: ModuleType) -> str:
    """``major.minor.patch`` of the running TensorRT (``10.16.1.11`` -> ``10.16.1``)."""
    return ".".join(str(trt.__version__).split(".")[:3])


_LOGGER: Any = None


def trt_logger(trt: ModuleType) -> Any:
    """One process-wide ``trt.ILogger`` forwarding to the ``sppquant.tensorrt`` logger.

    TensorRT wants a single logger per process; INFO and VERBOSE go to DEBUG because
    TensorRT's INFO output is build chatter, not user information.
    """
    global _LOGGER
    if _LOGGER is not None:
        return _LOGGER
    sev = trt.ILogger.Severity
    levels = {sev.INTERNAL_ERROR: logging.CRITICAL, sev.ERROR: logging.ERROR, sev.WARNING: logging.WARNING,
              sev.INFO: logging.DEBUG, sev.VERBOSE: logging.DEBUG}

    class _Bridge(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            log.log(levels.get(severity, logging.INFO), "%s", msg)

    _LOGGER = _Bridge()
    return _LOGGER


_STD_PLUGINS: set[int] = set()  # id() of the tensorrt modules whose standard plugins were initialised


def init_standard_plugins(trt: ModuleType, logger: Any) -> bool:
    """Register TensorRT's own plugins (libnvinfer_plugin) once per process, like trtexec and Polygraphy.

    The ONNX parser imports some standard ops through them (``RoiAlign`` -> ``ROIAlign_TRT``,
    ``ScatterElements``, ...), looked up in the plugin registry, where they only are after
    ``initLibNvInferPlugins``; without it such a model fails to parse with "plugin not found".
    Engines that contain one need them at deserialization too. Returns what TensorRT returned.
    """
    if id(trt) in _STD_PLUGINS:
        return True
    ok = bool(trt.init_libnvinfer_plugins(logger, ""))
    _STD_PLUGINS.add(id(trt))
    if not ok:
        log.debug("trt.init_libnvinfer_plugins returned False: TensorRT's standard plugins are not registered")
    return ok


def create(trt: ModuleType, factory: Any, *args: Any) -> Any:
    """Call a TensorRT factory (Builder, Runtime, OnnxParser); a NULL result -> BackendUnavailable.

    The bindings raise ``TypeError: ... returned nullptr`` when the native library
    cannot create the object: no GPU, no driver, or libraries that are stubs.
    """
    try:
        obj = factory(*args)
    except TypeError as exc:
        raise BackendUnavailable(
            f"TensorRT {trt.__version__} could not create a {getattr(factory, '__name__', factory)} ({exc}): "
            f"no usable NVIDIA GPU/driver or incomplete TensorRT libraries; {TENSORRT_INSTALL_HINT}") from None
    if obj is None:
        raise BackendUnavailable(f"TensorRT returned no {getattr(factory, '__name__', factory)}; {TENSORRT_INSTALL_HINT}")
    return obj


def load_plugin(library: Path | None = None) -> Path:
    """Load ``libsppquant_plugins.so`` (registers every custom op's plugin creator) before parsing.

    Delegates to `sppquant.ops.plugin_library`, the one place that knows how to locate (and,
    when no ``build.plugin_library`` is configured, build) the library. TensorRT must
    already be imported so the library can register its creators.
    """
    from sppquant.ops import plugin_library as plugin  # noqa: PLC0415 - needs ctypes/CUDA only when used

    lib = plugin.load_plugin(library, build=library is None)
    path = Path(lib._name)
    if not plugin.plugin_registered(lib):
        log.warning("%s loaded but its plugins (%s) are not registered with TensorRT; the ONNX parser will not "
                    "find the custom-op nodes", path, plugin.plugin_names())
    return path


def gpu_name() -> str:
    """The name of CUDA device 0 via pycuda, or ``unknown`` (only used for records)."""
    try:
        import pycuda.driver as cuda  # noqa: PLC0415

        cuda.init()
        return str(cuda.Device(0).name())
    except Exception as exc:  # pycuda missing or no device: the record says so
        log.debug("GPU name unavailable: %s", exc)
        return "unknown"
