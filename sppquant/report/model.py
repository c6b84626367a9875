"""The precision report as typed data: what `pipeline.report` computes, `render` draws and the CLI prints.

``Report.to_json()`` is ``report.json`` (format ``sppquant.report/1``; strict JSON: ``null``
stands for an infinite SQNR, i.e. identical outputs, or for a value that does not exist):

- ``precisions``: one entry per column, keys ``fp32``, ``fp16``, ``int8`` (the FIRST
  algorithm) and ``int8_<algo>`` for every further algorithm. Each entry has
  ``precision``, ``algorithm`` (INT8 only), the task's metrics (classification: ``top1``,
  ``top5`` when >= 5 classes, both only with labels; ``agreement``; every task: ``cosine``,
  ``sqnr_db``, ``max_abs_err``, ``mean_abs_err``, ``p99_abs_err``), ``images``,
  ``evaluations`` (images x sizes), ``latency_ms_per_image``, computed over all sizes
  pooled (each image counts once per size), and ``per_size`` with the same metrics for
  each size keyed ``"HxW"``.
- ``layers``: ranked list of ``name``, ``quantized`` (has a Q/DQ pair in the INT8 model),
  ``amax``, ``scale``, ``max_abs``, ``clipped_fraction``, ``zero_fraction``, ``local_sqnr_db``,
  ``accumulated_sqnr_db``, ``output_sqnr_db``, ``rank``; ``layers_algorithm`` and
  ``layers_images`` say what they were computed with.
- ``task``, ``columns`` (the task's metric columns), ``dataset``, ``tables``, ``fp16``,
  ``int8``, ``backend``, ``device``, ``notes``, ``plots``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sppquant.tasks import Column
from sppquant.tasks.metrics import jsonable

REPORT_FORMAT = "sppquant.report/1"


@dataclass
class PrecisionResult:
    key: str  # fp32, fp16, int8, int8_<algo>
    precision: str
    metrics: dict[str, Any]  # the task's metrics, all sizes pooled
    per_size: dict[str, dict[str, Any]]  # "HxW" -> metrics (+ latency)
    images: int
    evaluations: int
    latency_ms_per_image: float
    algorithm: str | None = None
    model: str | None = None  # the Q/DQ model file (ONNX Runtime INT8)
    engine: str | None = None  # the engine file (TensorRT)

    @property
    def label(self) -> str:
        if self.precision == "mixed":  # `report --plan`: INT8 except the plan's tensors
            return f"MIXED ({self.algorithm} plan)"
        return f"INT8 ({self.algorithm})" if self.precision == "int8" else self.key.upper()

    def to_json(self) -> dict[str, Any]:
        head: dict[str, Any] = {"precision": self.precision}
        for k in ("algorithm", "model", "engine"):
            if getattr(self, k) is not None:
                head[k] = getattr(self, k)
        return {**head, **self.metrics, "images": self.images, "evaluations": self.evaluations,
                "latency_ms_per_image": self.latency_ms_per_image, "per_size": self.per_size}


@dataclass
class LayerRow:
    name: str
    quantized: bool
    amax: float
    scale: float
    max_abs: float
    clipped_fraction: float
    zero_fraction: float
    local_sqnr_db: float
    accumulated_sqnr_db: float
    output_sqnr_db: float
    rank: int = 0


@dataclass
class TableInfo:
    path: str
    source: str
    header: str
    tensors: int
    reasons: list[str]
    tie_scales: bool | None


@dataclass
class Int8ModelInfo:
    model: str
    quantized_activations: list[str]
    quantized_weights: dict[str, int]
    ort_integer_kernels: dict[str, int]
    placement: str = ""  # what the export (and so this model) quantizes, and the float precision of the rest


@dataclass
class BackendInfo:
    name: str
    runtime: str
    provider: str
    graph_optimizations: str


@dataclass
class DeviceInfo:
    kind: str  # "cpu" or "gpu"
    name: str
    threads: int | None
    cores: int | None
    batch_size: int
    latency: str


@dataclass
class DatasetInfo:
    root: str
    labelled: bool
    labels: str
    listed: int
    evaluated: int
    bad_files: list[dict[str, str]]
    classes: int | None


@dataclass
class Fp16Info:
    ort_fp32_ops: list[str]
    ort_precision_free_fp32_ops: list[str]
    note: str


@dataclass
class Report:
    sppquant_version: str
    created: str
    config: str | None
    model: dict[str, Any]  # path, input_name, outputs
    task: str
    columns: list[Column]
    backend: BackendInfo
    device: DeviceInfo
    dataset: DatasetInfo
    sizes: list[list[int]]
    algorithms: list[str]
    tables: dict[str, TableInfo]
    precisions: dict[str, PrecisionResult]
    fp16: Fp16Info
    int8: dict[str, Int8ModelInfo]
    layers_algorithm: str
    layers_backend: str
    layers_images: int
    layers: list[LayerRow]
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    format: str = REPORT_FORMAT

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": self.format, "sppquant_version": self.sppquant_version,
                                "created": self.created}
        for name in ("config", "model", "task"):
            data[name] = getattr(self, name)
        data["columns"] = [asdict(c) for c in self.columns]
        for name in ("backend", "device", "dataset"):
            data[name] = asdict(getattr(self, name))
        data["sizes"], data["algorithms"] = self.sizes, self.algorithms
        data["tables"] = {k: asdict(v) for k, v in self.tables.items()}
        data["precisions"] = {k: v.to_json() for k, v in self.precisions.items()}
        data["fp16"] = asdict(self.fp16)
        data["int8"] = {k: asdict(v) for k, v in self.int8.items()}
        data.update(layers_algorithm=self.layers_algorithm, layers_backend=self.layers_backend,
                    layers_images=self.layers_images, layers=[asdict(r) for r in self.layers],
                    notes=self.notes, plots=self.plots, seconds=self.seconds)
        return jsonable(data)
