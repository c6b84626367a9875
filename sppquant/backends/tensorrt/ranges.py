"""Ranges for tensors TensorRT's ONNX parser creates but a reused table lacks.

The parser adds tensors of its own (a Flatten becomes a Shuffle, a Gemm gains
reshapes, ...), named ``(Unnamed Layer* 12) [Shuffle]_output`` and the like, which a
table computed on the ONNX graph cannot contain. Where the producing layer cannot
widen a range (data movement, pooling, concatenation, slicing, gathering), its output
gets its input's scale, exactly as `sppquant.calibration.tying` does on the ONNX side.
Everything else stays without a range (TensorRT then keeps it in higher precision);
those names are reported in one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

# TensorRT LayerType names whose output range never exceeds their (first / all) input range.
# SQUEEZE / UNSQUEEZE: the ONNX parser of recent 10.x reshapes with ISqueezeLayer / IUnsqueezeLayer
# (its own, unnamed tensors); names a running TensorRT lacks simply never match.
RANGE_PRESERVING_LAYERS = frozenset({"SHUFFLE", "POOLING", "IDENTITY", "SLICE", "GATHER", "CONCATENATION",
                                     "SQUEEZE", "UNSQUEEZE"})
# Outputs that never need an activation scale (weights are quantized from their values).
NO_SCALE_LAYERS = frozenset({"CONSTANT", "SHAPE"})


@dataclass(frozen=True)
class LayerInfo:
    """What range derivation needs from one network layer."""

    name: str
    type: str  # trt.LayerType member name
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    float_outputs: tuple[bool, ...]


def network_layers(trt: ModuleType, network: Any) -> list[LayerInfo]:
    """`LayerInfo` for every layer of a parsed ``trt.INetworkDefinition``, in network order."""
    floats = {trt.float32, trt.float16}
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        layers.append(LayerInfo(layer.name, layer.type.name, tuple(t.name for t in ins if t is not None),
                                tuple(t.name for t in outs), tuple(t.dtype in floats for t in outs)))
    return layers


def derive_missing(
    layers: Iterable[LayerInfo], scales: Mapping[str, float], network_inputs: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> tuple[dict[str, float], list[str]]:
    """``(derived scales, names still without a range)`` for tensors absent from ``scales``.

    ``exclude``: tensors a precision plan keeps out of INT8; they get no range, and neither does a
    range-preserving layer's output read from one (a reshape of a kept tensor is kept too). Neither
    is reported missing: being without a range is the plan.
    """
    known = dict(scales)
    excluded = set(exclude)
    derived: dict[str, float] = {}
    missing = [n for n in network_inputs if n not in known and n not in excluded]
    for layer in layers:
        for out, is_float in zip(layer.outputs, layer.float_outputs):
            if out in known or out in excluded or not is_float or layer.type in NO_SCALE_LAYERS:
                continue
            src = None
            if layer.type in RANGE_PRESERVING_LAYERS and layer.inputs:
                srcs = layer.inputs if layer.type == "CONCATENATION" else layer.inputs[:1]
                if any(s in excluded for s in srcs):
                    excluded.add(out)
                    continue
                if all(s in known for s in srcs):
                    src = max(known[s] for s in srcs)
            if src is None:
                missing.append(out)
            else:
                known[out] = derived[out] = src
    return derived, missing


def plan_exclusion(layers: Iterable[LayerInfo], keep: Iterable[str]) -> set[str]:
    """A plan's kept tensors plus what range-preserving layers (reshapes, pooling, ...) make of them, in
    network order: the tensors TensorRT gets no range for."""
    excluded = set(keep)
    for layer in layers:
        if layer.type in RANGE_PRESERVING_LAYERS and any(s in excluded for s in layer.inputs):
            excluded |= set(layer.outputs)
    return excluded


def constrain_layers(trt: ModuleType, network: Any, keep: Iterable[str], dtype: Any) -> list[str]:
    """Precision constraints of a plan: every layer reading or producing a kept tensor computes in ``dtype``
    (``layer.precision``), and its kept outputs are of ``dtype`` (``set_output_type``). Returns the layer names.

    TensorRT already keeps such layers out of INT8 because the kept tensors have no range ("Missing
    scale ... fall back to non-int8 implementation for any layer consuming or producing given tensor");
    the constraint says which float precision they get instead of leaving it to the tactic timing.
    """
    keep = set(keep)
    names = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        hit_out = [j for j, t in enumerate(outs) if t.name in keep]
        if not hit_out and not any(t is not None and t.name in keep for t in ins):
            continue
        if layer.type.name in NO_SCALE_LAYERS or not any(t.dtype in (trt.float32, trt.float16) for t in outs):
            continue  # shape/constant layers have no float precision to choose
        layer.precision = dtype
        for j in hit_out:
            layer.set_output_type(j, dtype)
        names.append(layer.name)
    return names


def report_missing(missing: list[str], table: str) -> None:
    """ONE warning with the count and every name (TensorRT keeps these above INT8)."""
    if missing:
        log.warning("%d tensor(s) of the TensorRT network have no range in %s and none can be derived from "
                    "their producer; TensorRT will run them in higher precision: %s", len(missing), table,
                    ", ".join(missing))
