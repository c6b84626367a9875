"""``sppquant init``: a commented starter config from what the ONNX model says about itself.

A new user's first config should hold the detectable facts (input name, channels, fixed
sizes, custom ops) and say plainly which choices only they can make (mean/std, colour
order, resize mode): a wrong guess there silently ruins calibration.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sppquant.atomic import atomic_write_text, check_writable
from sppquant.calibration.algorithms import DEFAULT_ALGORITHM
from sppquant.config import Config, apply_overrides, config_from_dict, load_config
from sppquant.errors import ConfigError, UserError
from sppquant.model import FLOAT_TYPES, input_shapes, load_model
from sppquant.ops import custom_nodes

log = logging.getLogger(__name__)

DEFAULT_SIZE = 224  # only for dynamic H/W, and marked as a guess


@dataclass(frozen=True)
class ModelFacts:
    """What the model file tells us about its image input."""

    input_name: str
    other_inputs: tuple[str, ...]
    channels: int | None  # None: the channel dim is dynamic
    size: tuple[int, int] | None  # None: H or W is dynamic
    opset: int
    custom_ops: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class InitResult:
    path: Path
    facts: ModelFacts
    config: Config
    undetected: tuple[str, ...]


def model_facts(path: Path) -> ModelFacts:
    """Read the inputs (the image input: the first 4-D float one), opset and custom ops."""
    model = load_model(path)
    shapes = input_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    images = [n for n, dims in shapes.items() if len(dims) == 4 and types.get(n) in FLOAT_TYPES]
    if not images:
        found = ", ".join(f"{n} {dims}" for n, dims in shapes.items()) or "none"
        raise UserError(f"{path}: no 4-D float (NCHW image) input; the inputs are: {found}")
    name, dims = images[0], shapes[images[0]]
    channels = dims[1] if isinstance(dims[1], int) and dims[1] > 0 else None
    size = (dims[2], dims[3]) if all(isinstance(d, int) and d > 0 for d in dims[2:]) else None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    ops = tuple(sorted({f"{node.domain}::{node.op_type}" for node, _ in custom_nodes(model)}))
    return ModelFacts(name, tuple(n for n in shapes if n != name), channels, size, opset, ops)


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def starter_yaml(facts: ModelFacts, model: Path, images: Path | None, config_path: Path) -> tuple[str, list[str]]:
    """The config text and the keys it could not detect (each marked ``# CHECK`` in the text)."""
    base = config_path.parent
    undetected = ["preprocess.mean", "preprocess.std", "preprocess.color", "preprocess.resize"]
    channels = facts.channels if facts.channels in (1, 3) else 3
    if facts.channels not in (1, 3):
        undetected.append("model.channels")
    size = facts.size or (DEFAULT_SIZE, DEFAULT_SIZE)
    if facts.size is None:
        undetected.append("input.sizes")
    mean, std, color = ("[0.0]", "[1.0]", "gray") if channels == 1 else ("[0.0, 0.0, 0.0]", "[1.0, 1.0, 1.0]", "rgb")
    others = f"  # other inputs: {', '.join(facts.other_inputs)}" if facts.other_inputs else ""
    lines = [
        f"# sppquant starter config for {model.name} (written by `sppquant init`).",
        f"# Detected: input {facts.input_name!r}, opset {facts.opset}, "
        f"custom ops: {', '.join(facts.custom_ops) or 'none'}.",
        "# Lines marked CHECK could not be read from the model: set them to your training preprocessing.",
        "model:",
        f"  path: {_rel(model, base)}",
        f"  input_name: {facts.input_name}{others}",
        f"  channels: {channels}" + ("" if facts.channels in (1, 3) else "  # CHECK: channel dim is dynamic"),
        "input:",
        f"  sizes: [[{size[0]}, {size[1]}]]" + ("  # fixed in the model" if facts.size else
                                              "  # CHECK: H/W are dynamic; list the sizes you deploy"),
        "preprocess:",
        f"  color: {color}  # CHECK: channel order the model was trained with (rgb, bgr, gray)",
        "  resize: letterbox  # CHECK: letterbox, stretch, fixed_height or long_side",
        f"  mean: {mean}  # CHECK: on 0..1 pixels, e.g. ImageNet [0.485, 0.456, 0.406]",
        f"  std: {std}  # CHECK: e.g. ImageNet [0.229, 0.224, 0.225]",
        "calibration:",
        "  images: " + (_rel(images, base) if images else "null  # CHECK: a folder of representative images"),
        f"  algorithm: {DEFAULT_ALGORITHM}  # entropy2 = TensorRT's own KL rule (clipped real models hard: README)",
        f"  output: {model.stem}.cache",
    ]
    if facts.custom_ops:
        lines += ["build:", "  plugin_library: null  # TensorRT engines need the sppquant plugin library "
                            "(SPPQUANT_PLUGIN_LIB or `sppquant build-plugin`)"]
    return "\n".join(lines) + "\n", undetected


def config_for_model(model: str | Path, images: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """The config `init` would write, built in memory (``calibrate MODEL.onnx --images DIR``); paths resolve
    against the current folder. The undetected keys keep their defaults, with one warning naming them."""
    import yaml  # noqa: PLC0415

    model = Path(model)
    if images is not None and not Path(images).is_dir():
        raise UserError(f"{images}: image folder not found (--images)")
    facts = model_facts(model)
    text, undetected = starter_yaml(facts, model, Path(images) if images else None, Path.cwd() / "in-memory.yaml")
    data = apply_overrides(yaml.safe_load(text), overrides, f"{model.name} (in-memory config)")
    set_keys = {o.partition("=")[0].strip() for o in overrides}
    unset = [k for k in undetected if k not in set_keys]
    if unset:
        log.warning("no config: %s use defaults that may not match your training (%s); set them with --set or "
                    "write a config with `sppquant init`", ", ".join(unset), "mean 0, std 1, rgb, letterbox")
    return config_from_dict(data, f"{model.name} (in-memory config)", Path.cwd())


def init_config(model: str | Path, output: str | Path, images: str | Path | None = None) -> InitResult:
    """Write the starter config for ``model`` to ``output``; never overwrites, validated before it is written."""
    model, output = Path(model), Path(output)
    if output.exists():
        raise UserError(f"{output}: exists; refusing to overwrite (choose another -o)")
    check_writable(output, "-o")
    if images is not None and not Path(images).is_dir():
        raise UserError(f"{images}: image folder not found (--images)")
    facts = model_facts(model)
    text, undetected = starter_yaml(facts, model, Path(images) if images else None, output)
    probe = output.with_name(f".{output.name}.init-check")
    try:
        atomic_write_text(probe, text)
        config = load_config(probe)
    except ConfigError as exc:  # a bug in the template, not the user's fault; still one line
        raise UserError(f"{output}: the generated config does not validate: {exc}") from None
    finally:
        probe.unlink(missing_ok=True)
    atomic_write_text(output, text)
    return InitResult(output, facts, config, tuple(undetected))


__all__ = ["InitResult", "ModelFacts", "init_config", "model_facts", "starter_yaml"]
