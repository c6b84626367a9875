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
    layers: Iterable[LayerInfo], scales: Mapping[str, float], network_inputs: Iterable[str] = ()
) -> tuple[dict[str, float], list[str]]:
    """``(derived scales, names still without a range)`` for tensors absent from ``scales``."""
    known = dict(scales)
    derived: dict[str, float] = {}
    missing = [n for n in network_inputs if n not in known]
    for layer in layers:
        for out, is_float in zip(layer.outputs, layer.float_outputs):
            if out in known or not is_float or layer.type in NO_SCALE_LAYERS:
                continue
            src = None
            if layer.type in RANGE_PRESERVING_LAYERS and layer.inputs:
                srcs = layer.inputs if layer.type == "CONCATENATION" else layer.inputs[:1]
                if all(s in known for s in srcs):
                    src = max(known[s] for s in srcs)
            if src is None:
                missing.append(out)
            else:
                known[out] = derived[out] = src
    return derived, missing


def report_missing(missing: list[str], table: str) -> None:
    """ONE warning with the count and every name (TensorRT keeps these above INT8)."""
    if missing:
        log.warning("%d tensor(s) of the TensorRT network have no range in %s and none can be derived from "
                    "their producer; TensorRT will run them in higher precision: %s", len(missing), table,
                    ", ".join(missing))
