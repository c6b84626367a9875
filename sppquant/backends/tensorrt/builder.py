"""TensorRT engine-building mechanisms, free of configs and images.

What the pipeline layer (`sppquant.pipeline.trt_build`) composes into `sppquant build` and
`sppquant calibrate --backend tensorrt`: parsing an ONNX model with the plugin namespace
set, optimization and calibration profiles, flags, dummy ranges, the one serialize call
(with a calibrator's pending exception re-raised) and the shared timing cache.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from sppquant.atomic import atomic_write_bytes
from sppquant.backends.tensorrt._trt import create
from sppquant.errors import ModelError, UserError

log = logging.getLogger(__name__)

# Dummy INT8 range for --int8-dummy-scales: every tensor gets [-DUMMY_RANGE, DUMMY_RANGE].
# Only for timing: accuracy of such an engine is meaningless, the record says so.
DUMMY_RANGE = 4.0


@dataclass(frozen=True)
class ProfileShapes:
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def plugin_namespace_patch(model_path: Path) -> bytes | None:
    """The model with ``plugin_namespace`` set on custom-op nodes that lack it, or None when none does.

    TensorRT's ONNX parser looks a custom op up as (op_type, ``plugin_version`` attribute or
    "1", ``plugin_namespace`` attribute or ""). Only recent 10.x parsers retry with the node's
    domain as the namespace (onnx-tensorrt's FallbackPluginImporter; the 10.1 GA importer does
    not), so on older 10.x a ``sppquant`` node without the attribute is "Plugin not found": our
    creator is registered in namespace ``sppquant``. Adding the attribute in memory works on
    every 10.x; the creator ignores it. External data is left where it is (the parser is given
    the model path).
    """
    import onnx  # noqa: PLC0415 - only for builds

    from sppquant.ops import find_op  # noqa: PLC0415

    model = onnx.load(str(model_path), load_external_data=False)
    changed = 0
    for node in model.graph.node:
        spec = find_op(node)
        if spec is not None and not any(a.name == "plugin_namespace" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute("plugin_namespace", spec.plugin.namespace))
            changed += 1
    if not changed:
        return None
    log.debug("%s: plugin_namespace set on %d custom-op node(s) for TensorRT's parser", model_path, changed)
    return model.SerializeToString()


def parse_network(trt: ModuleType, builder: Any, logger: Any, model_path: Path,
                  input_names: Sequence[str]) -> tuple[Any, Any, dict[str, Any]]:
    """``(network, parser, {input name: tensor})``; ModelError with the parser's errors on failure.

    ``input_names`` are the inputs the caller feeds: each must exist, and no other may.
    """
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = create(trt, trt.OnnxParser, network, logger)
    patched = plugin_namespace_patch(model_path)
    ok = parser.parse_from_file(str(model_path)) if patched is None else parser.parse(patched, str(model_path))
    if not ok:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{model_path}: TensorRT's ONNX parser failed: {errors or 'no details'} "
                         "(is the plugin library loaded and built for this TensorRT?)")
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    missing = [n for n in input_names if n not in inputs]
    if missing:
        raise ModelError(f"{model_path}: TensorRT network has no input {missing[0]!r} (inputs: {', '.join(inputs)})")
    extra = [n for n in inputs if n not in input_names]
    if extra:
        raise ModelError(f"{model_path}: the network has input(s) {', '.join(extra)} that nothing feeds "
                         f"(fed: {', '.join(input_names)})")
    return network, parser, inputs


def apply_flags(trt: ModuleType, config: Any, flags: Sequence[str], workspace_bytes: int) -> None:
    """Precision flags and the workspace pool limit on an ``IBuilderConfig``."""
    for name in flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)


def add_profiles(builder: Any, config: Any, shapes: Mapping[str, ProfileShapes], calibration: bool = False) -> Any:
    """One optimization (or calibration) profile covering every input in ``shapes``."""
    profile = builder.create_optimization_profile()
    for name, s in shapes.items():
        profile.set_shape(name, s.min, s.opt, s.max)
    if calibration:
        if not config.set_calibration_profile(profile):
            raise UserError(f"TensorRT rejected the calibration profile {_describe(shapes)}")
    elif config.add_optimization_profile(profile) < 0:
        raise UserError(f"TensorRT rejected the optimization profile {_describe(shapes)}")
    return profile


def _describe(shapes: Mapping[str, ProfileShapes]) -> str:
    return "; ".join(f"{n}: {s.as_dict()}" for n, s in shapes.items())


def add_profile(builder: Any, config: Any, name: str, shapes: ProfileShapes, calibration: bool = False) -> Any:
    """`add_profiles` for a single input."""
    return add_profiles(builder, config, {name: shapes}, calibration)


def set_dummy_ranges(trt: ModuleType, network: Any) -> int:
    """Give every float tensor ``[-DUMMY_RANGE, DUMMY_RANGE]`` (timing-only INT8 engines)."""
    floats, count = {trt.float32, trt.float16}, 0
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        tensors += [layer.get_output(j) for j in range(layer.num_outputs)]
    for t in tensors:
        if t.dtype in floats:
            t.dynamic_range = (-DUMMY_RANGE, DUMMY_RANGE)
            count += 1
    return count


def serialize(builder: Any, network: Any, config: Any, calibrator: Any | None, what: str) -> bytes:
    """Build and serialize; a calibrator is closed after the build and its pending exception re-raised."""
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
            calibrator.raise_pending()  # the callback's own exception beats TensorRT's generic failure
    if plan is None:
        raise UserError(f"TensorRT failed to build the {what} engine (its errors are logged above)")
    return bytes(plan)


class TimingCache:
    """One ``ITimingCache`` for all builds of a run, loaded from and saved to one file."""

    def __init__(self, path: Path) -> None:
        self.path, self.cache = path, None

    def attach(self, config: Any) -> None:
        if self.cache is None:
            data = self.path.read_bytes() if self.path.is_file() else b""
            self.cache = config.create_timing_cache(data)
            log.info("%s timing cache %s", "reusing" if data else "starting", self.path)
        if not config.set_timing_cache(self.cache, False):
            # A cache from another GPU/TensorRT is refused (``ignore_mismatch=False``). Keeping the refused
            # object would leave every build of this run without a cache and write the stale file back
            # unchanged; start an empty one instead, which this run fills and `save` writes over the file.
            log.warning("timing cache %s does not match this TensorRT/GPU; starting a new one (the file is "
                        "replaced after the build)", self.path)
            self.cache = config.create_timing_cache(b"")
            if not config.set_timing_cache(self.cache, False):
                log.warning("TensorRT refused a new timing cache; builds proceed without one")
                self.cache = None

    def save(self) -> None:
        if self.cache is not None:
            atomic_write_bytes(self.path, bytes(self.cache.serialize()))
