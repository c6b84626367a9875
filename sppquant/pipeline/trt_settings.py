"""Config -> TensorRT build settings, as pure functions (testable without a Builder).

Optimization profile (one per engine), for the input ``model.input_name`` (NCHW):

- N: min 1, opt and max ``build.max_batch``;
- H, W: ``input.dynamic`` min/max when given, else the smallest/largest of
  ``input.sizes``; opt is ``input.sizes[0]`` (the primary size, `predict`'s default);
- a dimension the ONNX model fixes stays fixed (and must agree with the config).

Calibration profile: TensorRT calibrates at exactly ONE shape (it overwrites a
calibration profile's min/max with its opt). We use ``(calibration.batch_size, C,
*input.sizes[0])``: the primary deployment size, at the calibration batch size that
the data pipeline produces. Calibrating several sizes is what the ONNX Runtime backend
does (all of ``input.sizes`` go into one histogram per tensor); its table is reused
here unchanged, so use ``sppquant calibrate --backend onnxruntime`` when more than one
size matters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sppquant.backends import PRECISIONS
from sppquant.backends.tensorrt.builder import DUMMY_RANGE, ProfileShapes  # noqa: F401 - re-exported
from sppquant.backends.tensorrt.calibrator import HEADER_CALIBRATORS
from sppquant.calibration.algorithms import get_algorithm
from sppquant.config import Config
from sppquant.errors import ModelError, UserError
from sppquant.preprocess import output_size_range

# TensorRT table header algorithm -> the calibrator base class that reads/writes it.
CALIBRATOR_BASES = HEADER_CALIBRATORS


@dataclass(frozen=True)
class BuildPlan:
    """Everything one engine build needs from the config, decided before TensorRT runs."""

    precision: str
    flags: tuple[str, ...]  # BuilderFlag member names
    engine_path: Path
    record_path: Path
    workspace_bytes: int
    dummy_scales: bool


def parse_precisions(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"fp32,int8"`` -> ``("fp32", "int8")``, in the order given, duplicates removed."""
    items = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text)]
    items = [p for p in items if p]
    bad = [p for p in items if p not in PRECISIONS]
    if bad or not items:
        raise UserError(f"--precision: expected a comma-separated subset of {','.join(PRECISIONS)}, got {text!r}")
    return tuple(dict.fromkeys(items))


def _bounds(cfg: Config) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """H/W bounds: ``input.dynamic`` when given, else every tensor the preprocessing can produce."""
    sizes = cfg.input.sizes
    lo, hi = output_size_range(cfg.preprocess, sizes)
    if cfg.input.dynamic is not None:
        dlo, dhi = tuple(cfg.input.dynamic.min), tuple(cfg.input.dynamic.max)
        if dlo[0] > lo[0] or dlo[1] > lo[1] or dhi[0] < hi[0] or dhi[1] < hi[1]:
            raise UserError(f"input.dynamic {list(dlo)}..{list(dhi)} does not cover the tensor sizes the "
                            f"preprocessing produces ({list(lo)}..{list(hi)})")
        lo, hi = dlo, dhi
    opt = output_size_range(cfg.preprocess, sizes[:1])[1]  # the primary size's largest tensor
    return lo, opt, hi  # type: ignore[return-value]


def profile_shapes(cfg: Config, network_shape: Sequence[int] | None = None) -> ProfileShapes:
    """min/opt/max NCHW for the engine's optimization profile (see module docstring)."""
    lo, opt, hi = _bounds(cfg)
    c = cfg.model.channels
    shapes = [[1, c, lo[0], lo[1]], [cfg.build.max_batch, c, opt[0], opt[1]], [cfg.build.max_batch, c, hi[0], hi[1]]]
    if network_shape is not None:
        if len(network_shape) != 4:
            raise ModelError(f"{cfg.model.path}: input {cfg.model.input_name!r} has shape {list(network_shape)}, "
                             "expected 4-D NCHW")
        for axis, dim in enumerate(network_shape):
            if dim >= 0:  # fixed by the model
                wanted = {s[axis] for s in shapes} - {dim}
                if axis in (2, 3) and wanted:
                    raise ModelError(f"{cfg.model.path}: input dimension {'NCHW'[axis]} is fixed to {dim} but the "
                                     f"config needs {sorted(wanted | {dim})}; export the model with dynamic H/W")
                if axis == 1 and dim != c:
                    raise ModelError(f"{cfg.model.path}: input has {dim} channels, model.channels is {c}")
                for s in shapes:
                    s[axis] = dim
    return ProfileShapes(*(tuple(s) for s in shapes))


def calibration_shape(cfg: Config, network_shape: Sequence[int] | None = None) -> tuple[int, int, int, int]:
    """The ONE shape TensorRT calibrates at: ``(calibration.batch_size, C, *input.sizes[0])``."""
    if cfg.preprocess.dynamic:
        raise UserError(f"TensorRT calibrates at one fixed shape, but preprocess.pad_to: {cfg.preprocess.pad_to} "
                        "gives each image its own size: calibrate with --backend onnxruntime (the table is the same "
                        "format and every shape is histogrammed)")
    h, w = cfg.input.sizes[0]
    n = cfg.calibration.batch_size
    if network_shape is not None and len(network_shape) == 4 and network_shape[0] >= 0:
        if network_shape[0] != n:
            raise ModelError(f"{cfg.model.path}: the model fixes the batch to {network_shape[0]} but "
                             f"calibration.batch_size is {n}; set calibration.batch_size: {network_shape[0]}")
    return (n, cfg.model.channels, h, w)


def region_inputs(cfg: Config) -> dict[str, int]:
    """Inputs fed besides the image: a detector's regions ``(R, 5)`` -> the most rows one image brings."""
    det = cfg.detection
    return {det.rois_input: det.max_regions} if det.proposals is not None else {}


def extra_profiles(cfg: Config, calibration: bool = False) -> dict[str, ProfileShapes]:
    """Profiles of the region inputs: R from 1 to ``max_batch x max_regions`` (opt: the max).

    For calibration TensorRT needs ONE shape: ``calibration.batch_size x max_regions`` rows,
    which `BatchFeeder` fills by repeating a batch's own regions (see `pad_regions`).
    """
    out = {}
    for name, per_image in region_inputs(cfg).items():
        if calibration:
            r = (cfg.calibration.batch_size * per_image, 5)
            out[name] = ProfileShapes(r, r, r)
        else:
            out[name] = ProfileShapes((1, 5), (cfg.build.max_batch * per_image, 5),
                                      (cfg.build.max_batch * per_image, 5))
    return out


def builder_flags(precision: str, int8_allow_fp16: bool) -> tuple[str, ...]:
    """BuilderFlag names for a precision: FP32 none, FP16 ``FP16``, INT8 ``INT8`` (+``FP16`` if allowed)."""
    if precision == "fp32":
        return ()
    if precision == "fp16":
        return ("FP16",)
    if precision == "int8":
        return ("INT8", "FP16") if int8_allow_fp16 else ("INT8",)
    raise UserError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


def workspace_bytes(cfg: Config) -> int:
    """``build.workspace_mb`` as the byte limit of MemoryPoolType.WORKSPACE."""
    return int(cfg.build.workspace_mb) << 20


def engine_stem(model_path: Path, precision: str, dummy_scales: bool) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_path.stem)
    return f"{stem}_{precision}-dummy-scales" if dummy_scales and precision == "int8" else f"{stem}_{precision}"


def plan_builds(cfg: Config, precisions: Sequence[str], output_dir: Path, int8_dummy_scales: bool) -> list[BuildPlan]:
    """One BuildPlan per precision; dummy scales only affect (and rename) the INT8 engine."""
    plans = []
    for precision in parse_precisions(precisions):
        dummy = int8_dummy_scales and precision == "int8"
        stem = engine_stem(cfg.model.path, precision, dummy)
        engine = output_dir / f"{stem}.engine"
        plans.append(BuildPlan(precision, builder_flags(precision, cfg.build.int8_allow_fp16), engine,
                               engine.with_name(engine.name + ".json"), workspace_bytes(cfg), dummy))
    return plans


def timing_cache_path(cfg: Config, output_dir: Path) -> Path:
    """``build.timing_cache`` or ``<output_dir>/timing.cache``: reused by every build."""
    return cfg.build.timing_cache or output_dir / "timing.cache"


def calibrator_base(algorithm: str) -> tuple[str, str]:
    """``(trt base class name, table header algorithm)`` for a config algorithm.

    Percentile tables carry the EntropyCalibration2 header, so they are served through
    the entropy calibrator (which then never calibrates by itself).
    """
    header = get_algorithm(algorithm).trt_header
    return CALIBRATOR_BASES[header], header
