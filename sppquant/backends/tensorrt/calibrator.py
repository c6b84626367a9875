"""``IInt8EntropyCalibrator2`` / ``IInt8MinMaxCalibrator`` subclasses over any feeder and table policy.

The callbacks delegate to a `Feeder` (feed dicts -> device buffers allocated once; the
pipeline's `BatchFeeder` feeds the shared data pipeline, a test can feed anything) and a
`TablePolicy` (which table to serve, how to store what TensorRT calibrated; the
pipeline's `TableCache` checks provenance and writes table + provenance atomically).
TensorRT swallows exceptions raised inside these callbacks (it logs and carries on,
or fails the build with a generic message), so every callback stores its exception
with its traceback and returns a neutral value; `raise_pending` re-raises the first
one after the build, with the original traceback.

The classes are created on first use because their bases live in the ``tensorrt``
module, which is optional.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# TensorRT table header algorithm -> the calibrator base class that reads/writes it. A table
# is only amax values: any rule's table is served under one of these headers.
HEADER_CALIBRATORS = {"EntropyCalibration2": "IInt8EntropyCalibrator2", "MinMaxCalibration": "IInt8MinMaxCalibrator"}


class Feeder(Protocol):
    """Device pointers for TensorRT's ``get_batch``, one batch at a time."""

    shape: tuple[int, ...]
    images: Any
    bad: Any
    images_used: int

    def next_batch(self, names: list[str]) -> list[int] | None: ...

    def close(self) -> None: ...


class TablePolicy(Protocol):
    """What ``read_calibration_cache`` serves and what ``write_calibration_cache`` does."""

    path: Any
    images: Any
    bad: Any
    images_used: int
    calibration_shape: tuple[int, ...] | None

    def read(self) -> bytes | None: ...

    def write(self, data: bytes) -> Any: ...


class CalibratorMixin:
    """The behaviour shared by both calibrator classes (TensorRT base comes second in the MRO)."""

    feeder: Feeder
    cache: TablePolicy
    errors: list[BaseException]

    def _setup(self, feeder: Feeder, cache: TablePolicy) -> None:
        self.feeder, self.cache, self.errors = feeder, cache, []
        self.cache.images = feeder.images
        self.cache.bad = feeder.bad
        self.cache.calibration_shape = feeder.shape

    def _guard(self, what: str, fn: Callable[[], T], fallback: T) -> T:
        try:
            return fn()
        except BaseException as exc:  # noqa: BLE001 - TensorRT would swallow it; kept and re-raised later
            log.error("calibrator %s failed: %s: %s (re-raised after the build)", what, type(exc).__name__, exc)
            self.errors.append(exc)
            return fallback

    # ---- TensorRT callbacks -------------------------------------------------------
    def get_batch_size(self) -> int:
        return int(self.feeder.shape[0])

    def get_batch(self, names: Sequence[str]) -> list[int] | None:
        if self.errors:  # stop feeding after a failure: TensorRT ends calibration on None
            return None
        return self._guard("get_batch", lambda: self.feeder.next_batch(list(names)), None)

    def read_calibration_cache(self) -> bytes | None:
        return self._guard("read_calibration_cache", self.cache.read, None)

    def write_calibration_cache(self, cache: Any) -> None:
        if self.errors:
            # get_batch answered None after a failure, so TensorRT took that for the end of the data and
            # computed scales from the batches before it. Writing them would leave a table whose
            # provenance check_table accepts, and the next build would silently reuse it.
            log.error("not writing the calibration table %s: calibration stopped early after an error "
                      "(re-raised after the build)", self.cache.path)
            return

        def write() -> None:
            self.cache.images_used = self.feeder.images_used
            self.cache.write(bytes(cache))

        self._guard("write_calibration_cache", write, None)

    # ---- after the build ----------------------------------------------------------
    def raise_pending(self) -> None:
        """Re-raise the first exception a callback stored (original traceback kept)."""
        if not self.errors:
            return
        for extra in self.errors[1:]:
            log.error("further calibrator error: %s: %s", type(extra).__name__, extra)
        exc = self.errors[0]
        self.errors = []
        raise exc.with_traceback(exc.__traceback__)

    def close(self) -> None:
        """Free the device buffers and stop the image loaders (idempotent)."""
        self.feeder.close()

    def __enter__(self) -> CalibratorMixin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=4)
def calibrator_classes(trt: ModuleType) -> dict[str, type]:
    """``{base class name: subclass}`` for the running ``tensorrt`` module."""
    classes: dict[str, type] = {}
    for base_name in ("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"):
        base = getattr(trt, base_name)

        def __init__(self: Any, feeder: Feeder, cache: TablePolicy, _base: type = base) -> None:
            with warnings.catch_warnings():  # deprecated since 10.1, supported through 10.x (DESIGN.md §2)
                warnings.simplefilter("ignore", DeprecationWarning)
                _base.__init__(self)  # required by the bindings before any callback runs
            CalibratorMixin._setup(self, feeder, cache)

        classes[base_name] = type(f"Sppquant{base_name[5:]}", (CalibratorMixin, base),
                                  {"__init__": __init__, "__doc__": f"sppquant calibrator on trt.{base_name}."})
    return classes


def make_calibrator(trt: ModuleType, base_name: str, feeder: Feeder, cache: TablePolicy) -> CalibratorMixin:
    """A calibrator of the class TensorRT expects for the table header (see `HEADER_CALIBRATORS`)."""
    return calibrator_classes(trt)[base_name](feeder, cache)
