"""Typed configuration: YAML -> frozen dataclasses, validated with one-line errors.

Every error names the config file and the key path (``calibration.batch_size``) and
says what was expected; an unknown key suggests the closest valid one. Relative
paths resolve against the config file's folder, so a config works from any cwd.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from sppquant.backends import BACKEND_CHOICES, PRECISIONS
from sppquant.backends.onnxruntime import OrtOptions
from sppquant.calibration.algorithms import ALGORITHMS, DEFAULT_ALGORITHM, Param, algorithm_param_keys
from sppquant.errors import ConfigError
from sppquant.preprocess import COLORS, INTERPOLATIONS, PAD_POSITIONS, RESIZES, PreprocessConfig
from sppquant.tasks import TASK_CHOICES

PATH = {"path": True}  # field metadata: resolve against the config file's folder
# Field metadata for names from a registry, read at validation time (so entries registered
# later, e.g. by a plugin or a test, are accepted everywhere at once).
ALGORITHM = {"choices": ALGORITHMS.names}
BACKEND = {"choices": lambda: BACKEND_CHOICES}
PRECISION = {"choices": PRECISIONS.names}
TASK = {"choices": lambda: TASK_CHOICES}


@dataclass(frozen=True)
class ModelConfig:
    path: Path = field(metadata=PATH)
    # Default: the model's single graph input (read from the file at load time); see `_default_input_name`.
    input_name: str | None = None
    channels: int = 3


@dataclass(frozen=True)
class DynamicShape:
    """TensorRT optimization-profile bounds for H and W (N comes from batch sizes)."""

    min: tuple[int, int]
    max: tuple[int, int]


@dataclass(frozen=True)
class InputConfig:
    sizes: tuple[tuple[int, int], ...]
    dynamic: DynamicShape | None = None


@dataclass(frozen=True)
class CalibrationConfig:
    images: Path | None = field(default=None, metadata=PATH)
    list_file: Path | None = field(default=None, metadata=PATH)
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
    recursive: bool = True
    max_images: int | None = None
    shuffle: bool = False
    seed: int = 0
    batch_size: int = 16
    last_batch: Literal["keep", "drop"] = "keep"
    bad_files: Literal["skip", "error"] = "skip"
    workers: int = 2
    algorithm: str = field(default=DEFAULT_ALGORITHM, metadata=ALGORITHM)
    tie_scales: bool = True
    # INT8 layers' biases absorb the mean shift of weight rounding (quantize/bias_correction.py): Q/DQ exports,
    # report and tune, from the per-channel input means the calibration pass records
    bias_correction: bool = True
    # how INT8 weights are rounded in those same models: "gptq" (pipeline/weight_rounding.py: for the layer's output
    # error, from the FP32 layer inputs of the first weight_rounding_images calibration images) or "nearest"
    weight_rounding: Literal["nearest", "gptq"] = "gptq"
    weight_rounding_images: int = 32
    # the layers reading the network input (the image, up to the first weighted layers: model.input_side_tensors):
    # "float" keeps them out of INT8 in every model sppquant builds or judges (FP16 engines / Q/DQ base), "int8"
    # quantizes them like the rest. Symmetric INT8 of an 8-bit image is coarser than its pixel grid (and wastes
    # the sign bit on unsigned pixels); measured: EfficientNet-Lite0 +5.3 dB output SQNR (benchmarks/RESULTS.md)
    input_layer: Literal["float", "int8"] = "float"
    output: Path = field(default=Path("calibration.cache"), metadata=PATH)
    trt_version: str = "10.16.1"
    # Parameters of the registered algorithms, each under its own key (``percentile: 99.9``);
    # the keys come from `sppquant.calibration.algorithms.ALGORITHMS`, not from this class.
    params: dict[str, Any] = field(default_factory=dict, metadata={"extra_keys": algorithm_param_keys})

    def algorithm_params(self, algorithm: str | None = None) -> dict[str, Any]:
        """The parameters of ``algorithm`` (default: the configured one): configured or default values."""
        from sppquant.calibration.algorithms import resolve_params  # noqa: PLC0415

        return resolve_params(algorithm or self.algorithm, self.params)


@dataclass(frozen=True)
class BuildConfig:
    output_dir: Path = field(default=Path("engines"), metadata=PATH)
    precisions: tuple[str, ...] = field(default=("fp32", "fp16", "int8"), metadata=PRECISION)
    max_batch: int = 16
    int8_allow_fp16: bool = True
    workspace_mb: int = 1024
    timing_cache: Path | None = field(default=None, metadata=PATH)
    plugin_library: Path | None = field(default=None, metadata=PATH)


@dataclass(frozen=True)
class ReportConfig:
    images: Path | None = field(default=None, metadata=PATH)
    # "folders", "none", or a CSV path (path,label), resolved against the config file's folder
    labels: str = field(default="folders", metadata={"path_unless": ("folders", "none")})
    output_dir: Path = field(default=Path("report"), metadata=PATH)
    max_images: int | None = None
    batch_size: int = 32
    algorithms: tuple[str, ...] = field(default=(DEFAULT_ALGORITHM,), metadata=ALGORITHM)
    layer_images: int = 64  # images (x every size) the per-layer sensitivity pass uses
    bad_files: Literal["skip", "error"] = "skip"
    classes: tuple[str, ...] | None = None  # class names in output order; default: sorted folder names
    annotations: Path | None = field(default=None, metadata=PATH)  # COCO JSON ground truth (task: detection)


@dataclass(frozen=True)
class DetectionConfig:
    """``detection:``: the regions input and its proposal hook, NMS, and the decoder (``builtin`` or a hook)."""

    rois_input: str = "rois"
    proposals: str | None = None  # module:function, (C, H, W) preprocessed image -> (K, 4) boxes
    iou_threshold: float = 0.5
    score_threshold: float = 0.05
    max_detections: int = 100
    max_regions: int = 300  # proposals per image at most (the first ones; sizes the TensorRT profile)
    agreement_score: float = 0.5  # box F1 vs FP32 counts detections scoring at least this (kept boxes)
    decoder: str = "builtin"  # or module:function (proposals, outputs, canvas) -> Detections


@dataclass(frozen=True)
class ExecutorConfig:
    """Where shards of calibration and reports run (`sppquant.pipeline.executor`); results never depend on it."""

    kind: Literal["local", "ray"] = "local"
    address: str = "auto"  # ray: "auto" (a running cluster), "local" (start one here), or "ray://host:port"
    workers: int = 0  # shards: 0 = local 1, ray one per cluster CPU / cpus_per_worker
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # None: 1 with TensorRT or a GPU execution provider, else 0
    max_retries: int = 2  # attempts after the first for a shard whose worker died or raised


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    input: InputConfig
    preprocess: PreprocessConfig = PreprocessConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    build: BuildConfig = BuildConfig()
    report: ReportConfig = ReportConfig()
    onnxruntime: OrtOptions = OrtOptions()
    backend: str = field(default="auto", metadata=BACKEND)
    task: str = field(default="auto", metadata=TASK)
    detection: DetectionConfig = DetectionConfig()
    executor: ExecutorConfig = ExecutorConfig()
    source: Path | None = None  # the YAML file this came from (not a YAML key)

    def preprocess_fingerprint(self) -> str:
        return self.preprocess.fingerprint()


# --------------------------------------------------------------------------- loading


class _Ctx:
    def __init__(self, source: str, base: Path) -> None:
        self.source, self.base = source, base

    def fail(self, key: str, msg: str) -> typing.NoReturn:
        raise ConfigError(f"{self.source}: {key}: {msg}")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(value: Any, tp: Any, key: str, ctx: _Ctx, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key, ctx, meta)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            ctx.fail(key, f"expected one of {', '.join(map(str, choices))}, got {_describe(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, ctx)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            ctx.fail(key, f"expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", ctx, meta) for i, v in enumerate(value))
        if len(value) != len(args):
            ctx.fail(key, f"expected a list of {len(args)} values, got {_describe(value)}")
        return tuple(_convert(v, a, f"{key}[{i}]", ctx, meta) for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            ctx.fail(key, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            ctx.fail(key, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            ctx.fail(key, f"expected a number, got {_describe(value)}")
        if not math.isfinite(value):  # .nan / .inf parse, but mean nothing anywhere in a config
            ctx.fail(key, f"expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if "choices" in meta and (not isinstance(value, str) or value not in meta["choices"]()):
            ctx.fail(key, f"expected one of {', '.join(meta['choices']())}, got {_describe(value)}")
        if not isinstance(value, str):
            ctx.fail(key, f"expected a string, got {_describe(value)}")
        if value and value not in meta.get("path_unless", (value,)):
            return str(_convert(value, Path, key, ctx, PATH))
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            ctx.fail(key, f"expected a path string, got {_describe(value)}")
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # ~user for a user this machine does not know
            ctx.fail(key, f"cannot expand {value!r}: unknown user or no home directory")
        return p if p.is_absolute() or not meta.get("path") else Path(os.path.normpath(ctx.base / p))
    raise TypeError(f"unsupported config type {tp} at {key}")  # a bug, not user error


def _build(cls: type, data: Any, key: str, ctx: _Ctx) -> Any:
    where = key or "top level"
    if not isinstance(data, dict):
        ctx.fail(where, f"expected a mapping of keys, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    extra = next((f for f in fields.values() if "extra_keys" in f.metadata), None)
    extra_keys: dict[str, Param] = extra.metadata["extra_keys"]() if extra is not None else {}
    kwargs: dict[str, Any] = {extra.name: {}} if extra is not None else {}
    for name, value in data.items():
        path = f"{key}.{name}" if key else str(name)
        if name in extra_keys:
            kwargs[extra.name][name] = _extra_value(value, extra_keys[name], path, ctx)
            continue
        if name not in fields or fields[name] is extra:
            valid = [n for n in fields if fields[n] is not extra] + list(extra_keys)
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
            ctx.fail(path, f"unknown key{hint}")
        kwargs[name] = _convert(value, hints[name], path, ctx, fields[name].metadata)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            ctx.fail(f"{key}.{name}" if key else name, "required key is missing")
        if name in kwargs:
            continue
        if f.metadata.get("path") and isinstance(f.default, Path):
            kwargs[name] = Path(os.path.normpath(ctx.base / f.default))  # defaults resolve like written paths
        elif dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], {}, f"{key}.{name}" if key else name, ctx)
    return cls(**kwargs)


def _extra_value(value: Any, param: Param, key: str, ctx: _Ctx) -> Any:
    """A registry-declared key (an algorithm parameter): its type, then its own check."""
    converted = _convert(value, param.type, key, ctx, {})
    problem = param.check(converted)
    if problem is not None:
        ctx.fail(key, f"expected {problem}, got {_describe(value)}")
    return converted


def _check_positive_size(size: tuple[int, int], key: str, ctx: _Ctx) -> None:
    if size[0] <= 0 or size[1] <= 0:
        ctx.fail(key, f"expected positive [H, W], got {list(size)}")


def _validate(cfg: Config, ctx: _Ctx) -> None:
    if cfg.model.channels not in (1, 3):
        ctx.fail("model.channels", f"expected 1 or 3, got {cfg.model.channels}")
    if not cfg.input.sizes:
        ctx.fail("input.sizes", "expected at least one [H, W] size")
    for i, size in enumerate(cfg.input.sizes):
        _check_positive_size(size, f"input.sizes[{i}]", ctx)
    if cfg.input.dynamic is not None:
        dmin, dmax = cfg.input.dynamic.min, cfg.input.dynamic.max
        _check_positive_size(dmin, "input.dynamic.min", ctx)
        _check_positive_size(dmax, "input.dynamic.max", ctx)
        for i, size in enumerate(cfg.input.sizes):
            if not (dmin[0] <= size[0] <= dmax[0] and dmin[1] <= size[1] <= dmax[1]):
                ctx.fail(f"input.sizes[{i}]", f"{list(size)} is outside input.dynamic {list(dmin)}..{list(dmax)}")
    pp = cfg.preprocess
    for name, choices in (("color", COLORS), ("resize", RESIZES), ("pad_position", PAD_POSITIONS),
                          ("interpolation", tuple(INTERPOLATIONS))):
        if getattr(pp, name) not in choices:
            ctx.fail(f"preprocess.{name}", f"expected one of {', '.join(choices)}, got {_describe(getattr(pp, name))}")
    if pp.channels != cfg.model.channels:
        ctx.fail("preprocess.color", f"{pp.color!r} gives {pp.channels} channel(s) but model.channels is {cfg.model.channels}")
    for name in ("mean", "std"):
        vals = getattr(pp, name)
        if len(vals) != cfg.model.channels:
            ctx.fail(f"preprocess.{name}", f"expected {cfg.model.channels} values (model.channels), got {len(vals)}")
    if any(s <= 0 for s in pp.std):
        ctx.fail("preprocess.std", f"expected positive values, got {list(pp.std)}")
    cal = cfg.calibration
    if cal.batch_size <= 0:
        ctx.fail("calibration.batch_size", f"expected a positive integer, got {cal.batch_size}")
    if cal.weight_rounding_images <= 0:
        ctx.fail("calibration.weight_rounding_images", f"expected a positive integer, got {cal.weight_rounding_images}")
    if cal.workers <= 0:
        ctx.fail("calibration.workers", f"expected a positive integer, got {cal.workers}")
    if cal.max_images is not None and cal.max_images <= 0:
        ctx.fail("calibration.max_images", f"expected a positive integer, got {cal.max_images}")
    if cal.images is not None and cal.list_file is not None:
        ctx.fail("calibration.list_file", "give either calibration.images or calibration.list_file, not both")
    try:
        parts = [int(p) for p in cal.trt_version.split(".")]
        if len(parts) != 3 or parts[0] < 8:
            raise ValueError
    except ValueError:
        ctx.fail("calibration.trt_version", f"expected a TensorRT version like '10.16.1', got {cal.trt_version!r}")
    if cfg.build.max_batch <= 0:
        ctx.fail("build.max_batch", f"expected a positive integer, got {cfg.build.max_batch}")
    if cfg.build.workspace_mb <= 0:
        ctx.fail("build.workspace_mb", f"expected a positive integer, got {cfg.build.workspace_mb}")
    if cfg.report.layer_images <= 0:
        ctx.fail("report.layer_images", f"expected a positive integer, got {cfg.report.layer_images}")
    if cfg.onnxruntime.threads is not None and cfg.onnxruntime.threads <= 0:
        ctx.fail("onnxruntime.threads", f"expected a positive integer, got {cfg.onnxruntime.threads}")
    if not cfg.onnxruntime.providers:
        ctx.fail("onnxruntime.providers", "expected at least one execution provider, e.g. [CPUExecutionProvider]")
    if cfg.report.batch_size <= 0:
        ctx.fail("report.batch_size", f"expected a positive integer, got {cfg.report.batch_size}")
    if (names := cfg.report.classes) is not None and (not names or "" in names or len(set(names)) < len(names)):
        ctx.fail("report.classes", f"expected a non-empty list of distinct class names, got {_describe(list(names))}")
    _validate_ranges(cfg, ctx)


MAX_SIDE = 16384  # largest input H or W: a float32 NCHW image of 16384^2 x 3 is already 3 GiB
MIN_STD = 1e-6  # pixels are in [0, 1]: a smaller std multiplies them past float32's useful range


def _validate_ranges(cfg: Config, ctx: _Ctx) -> None:
    """Values that parse but make no sense: sizes nothing can allocate, a std that overflows, a negative seed."""
    sizes = [(f"input.sizes[{i}]", s) for i, s in enumerate(cfg.input.sizes)]
    if cfg.input.dynamic is not None:
        sizes += [("input.dynamic.min", cfg.input.dynamic.min), ("input.dynamic.max", cfg.input.dynamic.max)]
    for key, size in sizes:
        if max(size) > MAX_SIDE:
            ctx.fail(key, f"expected H and W at most {MAX_SIDE}, got {list(size)}")
    pp = cfg.preprocess
    if any(s < MIN_STD for s in pp.std):
        ctx.fail("preprocess.std", f"expected values >= {MIN_STD:g} (pixels are scaled to [0, 1]), got {list(pp.std)}")
    if any(abs(m) > 1e6 for m in pp.mean) or abs(pp.pad_value) > 1e6:
        ctx.fail("preprocess.mean", "expected mean and pad_value in full-scale units (pixels are in [0, 1]), "
                                    f"got mean {list(pp.mean)}, pad_value {pp.pad_value}")
    if cfg.calibration.seed < 0:
        ctx.fail("calibration.seed", f"expected a non-negative integer, got {cfg.calibration.seed}")


def _validate_detection(cfg: Config, ctx: _Ctx) -> None:
    det = cfg.detection
    for name in ("iou_threshold", "score_threshold", "agreement_score"):
        if not 0.0 <= getattr(det, name) <= 1.0:
            ctx.fail(f"detection.{name}", f"expected a number in [0, 1], got {getattr(det, name)}")
    for name in ("max_detections", "max_regions"):
        if getattr(det, name) <= 0:
            ctx.fail(f"detection.{name}", f"expected a positive integer, got {getattr(det, name)}")
    for name in ("proposals", "decoder"):
        value = getattr(det, name)
        if value not in (None, "builtin") and (value.count(":") != 1 or not all(value.split(":"))):
            ctx.fail(f"detection.{name}", f"expected module:function, got {value!r}")
    if det.proposals == "builtin":
        ctx.fail("detection.proposals", "expected module:function (there is no built-in proposal method)")
    if cfg.task == "detection" and len(cfg.input.sizes) > 1:
        ctx.fail("input.sizes", f"task 'detection' evaluates one input size (COCO scores each image once), "
                                f"got {len(cfg.input.sizes)}: {[list(s) for s in cfg.input.sizes]}")
    if cfg.task == "detection" and det.proposals is None:
        ctx.fail("detection.proposals", "task 'detection' needs a proposal hook, e.g. sppquant.demo.proposals:propose")


def config_from_dict(data: Any, source: str = "<config>", base: Path | None = None) -> Config:
    """Build and validate a Config from parsed YAML (also handy in tests)."""
    ctx = _Ctx(source, (base or Path.cwd()).resolve())
    cfg = _build(Config, data, "", ctx)
    if cfg.model.input_name is None:
        model = dataclasses.replace(cfg.model, input_name=_default_input_name(cfg.model.path, ctx))
        cfg = dataclasses.replace(cfg, model=model)
    _validate(cfg, ctx)
    _validate_detection(cfg, ctx)
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (the last one would silently win)."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        except TypeError:  # an unhashable key: the base constructor reports it
            break
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _default_input_name(model_path: Path, ctx: _Ctx) -> str:
    """The model's only graph input, so a single-input model needs no ``model.input_name``.

    A model file that cannot be read yet keeps the historical name ``image``: loading the
    model later reports the missing or broken file itself, with its own one-line error.
    """
    from sppquant.model import graph_input_names  # noqa: PLC0415 (onnx import only when needed)

    if not Path(model_path).is_file():
        return "image"
    try:
        import onnx  # noqa: PLC0415

        names = graph_input_names(onnx.load(str(model_path), load_external_data=False))
    except Exception:  # protobuf raises several unrelated types; load_model reports it later
        return "image"
    if len(names) != 1:
        ctx.fail("model.input_name", f"required: {model_path.name} has {len(names)} inputs "
                                     f"({', '.join(names) or 'none'}); name the one the images feed")
    return names[0]


def apply_overrides(data: Any, overrides: typing.Sequence[str], source: str) -> Any:
    """Apply ``--set key.path=value`` items to parsed YAML before validation (values parsed as YAML).

    The result goes through the same schema as the file, so a bad value fails with the key
    named; a malformed item fails here, naming the item.
    """
    if not isinstance(data, dict):
        return data  # the schema reports the wrong top level
    data = dict(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. calibration.batch_size=8")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: value is not a YAML scalar or list") from None
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{source}: {'.'.join(parts[:i + 1])}: is not a section, cannot --set {key}")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``--set`` overrides; ConfigError (one line, exit 2) for anything wrong."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}: YAML syntax error at {where}{problem}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a tag constructor failed, e.g. `!!int sixteen`
        raise ConfigError(f"{p}: YAML value error: {exc}") from None
    if data is None:
        raise ConfigError(f"{p}: config is empty, expected the sections model, input, ...")
    if overrides:
        data = apply_overrides(data, overrides, str(p))
    cfg = config_from_dict(data, str(p), p.parent)
    return dataclasses.replace(cfg, source=p.resolve())
