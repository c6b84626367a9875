"""Where shards run: in this process (``local``) or as Ray tasks (``ray``); results come back in shard order.

A verb splits its work into shards (contiguous ranges of the image list, or groups of
tensors), hands the executor a module-level function and one argument per shard, and
merges what comes back exactly (histograms, metric accumulators). The executor never
decides anything about the results, so local and Ray runs of the same shards are
identical. Ray is optional (``pip install 'sppquant[ray]'``).

Failures: Ray retries a shard whose worker died (``max_retries``) and a shard that
raised anything but a `UserError` (``retry_exceptions``); a `UserError` (a bad image under
``bad_files: error``...) is deterministic, so it travels back as a value and is raised
once, unretried. A shard that keeps failing raises `ShardFailed` naming it; the caller
writes nothing from a partial merge.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

from sppquant.config import Config, ExecutorConfig
from sppquant.errors import BackendUnavailable, ConfigError, UserError

log = logging.getLogger(__name__)

A = TypeVar("A")
R = TypeVar("R")
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")


class ShardFailed(UserError):
    """A shard failed on every attempt: the run stops, nothing is written."""


@dataclass(frozen=True)
class Shard:
    """Items ``start..stop-1`` of a listing (images, or tensors), shard ``index`` of ``count``."""

    index: int
    count: int
    start: int
    stop: int
    what: str = "images"

    @property
    def label(self) -> str:
        return f"shard {self.index + 1}/{self.count} ({self.what} {self.start}..{self.stop - 1})"


def split(n: int, shards: int, align: int = 1, what: str = "images") -> list[Shard]:
    """``n`` items in at most ``shards`` contiguous ranges whose boundaries fall on multiples of ``align``.

    Aligned to the batch size, every shard but the last holds whole batches, so shards batch
    their images exactly as one process does (when no file is bad).
    """
    blocks = -(-n // max(1, align))
    count = max(1, min(shards, blocks))
    bounds = [min(n, (blocks * i // count) * align) for i in range(count + 1)]
    return [Shard(i, count, bounds[i], bounds[i + 1], what) for i in range(count)]


@dataclass(frozen=True)
class _Failed:
    """A deterministic `UserError` raised in a shard, carried back as a value (never retried)."""

    error: UserError


def _guarded(fn: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return fn(arg)
    except UserError as exc:
        return _Failed(exc)


class Executor(Protocol):
    name: str
    workers: int

    def map(self, fn: Callable[[A], R], args: Sequence[A], labels: Sequence[str], desc: str,
            progress: bool = True) -> list[R]: ...

    def record(self) -> dict[str, Any]: ...


class LocalExecutor:
    """Shards one after another in this process (the default: exactly what one process always did)."""

    name = "local"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers)

    def map(self, fn: Callable[[A], R], args: Sequence[A], labels: Sequence[str], desc: str,
            progress: bool = True) -> list[R]:
        return [fn(a) for a in args]

    def record(self) -> dict[str, Any]:
        return {"kind": "local", "workers": self.workers}


class RayExecutor:
    """Shards as Ray tasks: one worker per shard, ``num_gpus`` GPUs each; the driver merges in shard order."""

    name = "ray"

    def __init__(self, cfg: ExecutorConfig, gpus: float) -> None:
        try:
            import ray  # noqa: PLC0415 - optional extra
        except ImportError:
            raise BackendUnavailable("--executor ray: Ray is not installed (pip install 'sppquant[ray]')") from None
        self.ray, self.cfg, self.gpus = ray, cfg, gpus
        if not ray.is_initialized():
            self._init()
        total = ray.cluster_resources().get("CPU", 1.0)
        self.workers = cfg.workers or max(1, int(total // max(cfg.cpus_per_worker, 1e-9)))

    def _init(self) -> None:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        try:
            if self.cfg.address == "local":
                cpus = (self.cfg.workers or os.cpu_count() or 1) * self.cfg.cpus_per_worker
                self.ray.init(num_cpus=max(1, int(round(cpus))), **kwargs)
            else:
                self.ray.init(address=self.cfg.address, **kwargs)
        except ConnectionError as exc:
            raise BackendUnavailable(f"executor.address: cannot reach a Ray cluster at {self.cfg.address!r} "
                                     f"({' '.join(str(exc).split())[:160]}); use address: local to start one") from None

    def map(self, fn: Callable[[A], R], args: Sequence[A], labels: Sequence[str], desc: str,
            progress: bool = True) -> list[R]:
        remote = self.ray.remote(_guarded).options(
            num_cpus=self.cfg.cpus_per_worker, num_gpus=self.gpus, max_retries=self.cfg.max_retries,
            retry_exceptions=True)
        refs = [remote.remote(fn, a) for a in args]
        index = {r: i for i, r in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        with tqdm(total=len(refs), desc=f"{desc} (ray)", unit="shard", disable=None if progress else True) as bar:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                i = index[done[0]]
                results[i] = self._get(done[0], labels[i], pending)
                bar.update(1)
        return results

    def _get(self, ref: Any, label: str, pending: list[Any]) -> Any:
        try:
            out = self.ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - any task failure: name the shard, stop the rest
            for p in pending:
                self.ray.cancel(p, force=True)
            cause = getattr(exc, "cause", None) or exc
            msg = " ".join(f"{type(cause).__name__}: {cause}".split())[:300]
            raise ShardFailed(f"{label} failed after {self.cfg.max_retries + 1} attempt(s): {msg}") from None
        if isinstance(out, _Failed):
            for p in pending:
                self.ray.cancel(p, force=True)
            raise out.error
        return out

    def record(self) -> dict[str, Any]:
        return {"kind": "ray", "workers": self.workers, "address": self.cfg.address,
                "cpus_per_worker": self.cfg.cpus_per_worker, "gpus_per_worker": self.gpus}


def worker_gpus(cfg: Config, backend: str) -> float:
    """GPUs a worker owns: the configured number, else one for TensorRT or a GPU execution provider."""
    if cfg.executor.gpus_per_worker is not None:
        return cfg.executor.gpus_per_worker
    gpu = backend == "tensorrt" or any(p in GPU_PROVIDERS for p in cfg.onnxruntime.providers)
    return 1.0 if gpu else 0.0


def check_executor(ex: ExecutorConfig) -> None:
    """Values the YAML types cannot rule out; one line naming the key."""
    for key, value, least in (("workers", ex.workers, 0), ("cpus_per_worker", ex.cpus_per_worker, 1e-9),
                              ("gpus_per_worker", ex.gpus_per_worker or 0.0, 0), ("max_retries", ex.max_retries, 0)):
        if value < least:
            raise ConfigError(f"config: executor.{key}: expected a {'positive' if least else 'non-negative'} "
                              f"number, got {value}")


def make_executor(cfg: Config, kind: str | None = None, backend: str = "onnxruntime") -> Executor:
    """The executor ``kind`` (default: ``executor.kind``) for ``cfg``."""
    kind = kind or cfg.executor.kind
    check_executor(cfg.executor)
    if kind == "local":
        return LocalExecutor(cfg.executor.workers or 1)
    if kind == "ray":
        return RayExecutor(cfg.executor, worker_gpus(cfg, backend))
    raise UserError(f"--executor: expected local or ray, got {kind!r}")
