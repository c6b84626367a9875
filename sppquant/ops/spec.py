"""What the rest of sppquant needs to know about a custom op, in one typed record.

A custom op is an ONNX node that TensorRT runs through one of our plugins and ONNX
Runtime runs through a rewrite into standard ops. Everything op-specific that other
layers used to special-case (`is_spp_node` in seven modules) lives in its `OpSpec`:
identity (domain, type, plugin), attribute schema with the CUDA kernel's limits, output
shape, NumPy reference, ONNX Runtime rewrite, scale tying, Q/DQ and FP16 rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

# (node, opset) -> (replacement nodes, new initializers); the replacement keeps output names.
Rewrite = Callable[[onnx.NodeProto, int], tuple[list[onnx.NodeProto], list[onnx.TensorProto]]]


@dataclass(frozen=True)
class PluginInfo:
    """How TensorRT finds the plugin: creator name, version and namespace."""

    name: str
    version: str
    namespace: str


@dataclass(frozen=True)
class PluginQdq:
    """Where explicit quantization puts Q/DQ around the op.

    ``inputs``: indices of inputs that are INT8 activations (others, e.g. region
    coordinates, stay float). ``int8_io``: TensorRT runs the plugin with INT8 I/O only in
    the ``Q -> plugin -> DQ`` pattern. ``output_tied_to``: input index whose scale the
    output shares (None: the output has its own table entry).
    """

    inputs: tuple[int, ...] = (0,)
    int8_io: bool = True
    output_tied_to: int | None = 0


@dataclass(frozen=True)
class OpSpec:
    """One custom op: see the module docstring. ``attributes`` validates against the kernel's limits."""

    key: str  # registry name, e.g. "spp"
    domain: str
    op_type: str
    plugin: PluginInfo
    attributes: Callable[[onnx.NodeProto], Mapping[str, Any]]  # validated attributes (ValueError: one line)
    output_shape: Callable[[Sequence[Sequence[int | str | None]], Mapping[str, Any]], list[int | str | None]]
    reference: Callable[..., np.ndarray]  # reference(*inputs, **attributes)
    rewrite: Rewrite
    min_opset: int  # the rewrite's need; models below it are converted or refused
    ties_output_to_input: Callable[[Mapping[str, Any]], int | None]  # input index whose amax the output takes
    qdq: PluginQdq = field(default_factory=PluginQdq)
    fp16: bool = True  # the plugin has FP16 I/O
    float_inputs: tuple[int, ...] = (0,)  # inputs that carry activations (histogrammed, converted to FP16)

    def matches(self, node: onnx.NodeProto) -> bool:
        return node.op_type == self.op_type and node.domain == self.domain

    def node_attributes(self, node: onnx.NodeProto) -> Mapping[str, Any]:
        """Validated attributes; ValueError names the node and the attribute."""
        return self.attributes(node)
