"""The precision plan `sppquant tune` writes and `export-qdq`, `build` and `report --plan` apply.

A plan names the activations kept out of INT8 (``kept_high_precision``) for one table (``table``,
``algorithm``). How each backend applies it:

- ONNX / TensorRT 11 (`export-qdq --plan`): no Q/DQ on those tensors; their readers run in FP16.
- TensorRT 10 (`build --plan`): the table is served without those tensors (nor ranges derived from
  them), so TensorRT keeps every layer reading or producing them out of INT8, and those layers get a
  precision constraint (FP16 when ``build.int8_allow_fp16``, else FP32) under
  ``BuilderFlag.PREFER_PRECISION_CONSTRAINTS`` (see `sppquant.pipeline.trt_build`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sppquant.atomic import atomic_write_text
from sppquant.errors import UserError

PLAN_FORMAT = "sppquant.precision-plan/1"


@dataclass
class PrecisionPlan:
    model: str
    table: str
    algorithm: str
    metric: str
    max_drop: float
    fp32: float  # the metric in FP32 on the tune split
    kept_high_precision: list[str]
    curve: list[list[float]]  # [k, metric] per evaluation on the tune split, in the order evaluated
    quantized_tensors: int
    tune_images: int
    holdout_images: int
    holdout_fp32: float
    holdout_int8: float
    met: bool  # the budget holds on the held-out split
    format: str = PLAN_FORMAT
    notes: list[str] = field(default_factory=list)
    # how the plan was found (absent in plans written before the greedy search; read as these defaults)
    search: str = "ranked-bisection"  # "greedy": pipeline.tune_search; "ranked-bisection": top-k of a ranking
    evaluations: int = 0  # task-metric evaluations on the tune split, plus the one held-out check
    proxy_runs: int = 0  # proxy (output noise) runs of the search, each on report.layer_images images

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


def read_plan(path: str | Path) -> PrecisionPlan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"not a {PLAN_FORMAT} file")
        return PrecisionPlan(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: not a usable precision plan ({exc})") from None


def plan_table_path(plan: PrecisionPlan, plan_path: str | Path) -> Path:
    """The plan's table: as recorded, else relative to the plan file's folder."""
    table = Path(plan.table)
    return table if table.is_absolute() or table.exists() else Path(plan_path).parent / table
