"""Custom ops: one `OpSpec` per op in the `OPS` registry, and what every layer asks of them.

TensorRT runs a custom op through our plugin library; ONNX Runtime runs it after
`rewrite_for_onnxruntime` replaces it with standard ops. Nothing outside this package
tests op types: it calls `find_op(node)` and reads the spec.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import onnx

from sppquant.ops.opset import default_opset, upgrade_opset
from sppquant.ops.plugin_io import dequantize_plugin_io
from sppquant.ops.roi_spp.spec import ROI_SPP
from sppquant.ops.spec import OpSpec, PluginInfo, PluginQdq
from sppquant.ops.spp.spec import SPP
from sppquant.registry import Registry

log = logging.getLogger(__name__)

OPS: Registry[OpSpec] = Registry("custom op")
OPS.register(SPP.key, SPP)
OPS.register(ROI_SPP.key, ROI_SPP)


def find_op(node: onnx.NodeProto) -> OpSpec | None:
    """The spec of a custom-op node, or None for a standard ONNX node."""
    for spec in OPS.values():
        if spec.matches(node):
            return spec
    return None


def custom_nodes(model: onnx.ModelProto) -> Iterator[tuple[onnx.NodeProto, OpSpec]]:
    for node in model.graph.node:
        spec = find_op(node)
        if spec is not None:
            yield node, spec


def custom_domains() -> set[str]:
    return {spec.domain for spec in OPS.values()}


def required_opset(model: onnx.ModelProto) -> int:
    """The lowest default-domain opset the model's custom ops' rewrites need (1 without custom ops)."""
    return max((spec.min_opset for _, spec in custom_nodes(model)), default=1)


def rewrite_for_onnxruntime(model: onnx.ModelProto,
                             select: Callable[[onnx.NodeProto], bool] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` with every custom-op node replaced by standard ops ONNX Runtime runs.

    Only nodes of registered ops are touched (and of those, only the ones ``select`` accepts);
    a model without custom ops comes back as an unchanged copy whatever its opset. Outputs
    keep their names; helper tensors are named ``<output>__<op>/...``.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    found = [(n, spec) for n, spec in custom_nodes(out) if select is None or select(n)]
    if not found:
        return out
    # Q -> plugin -> DQ (INT8 I/O for TensorRT) -> Q -> DQ -> float op -> Q -> DQ: exact, see plugin_io.
    out = dequantize_plugin_io(out, lambda node: find_op(node) is not None and (select is None or select(node)))
    need = max(spec.min_opset for _, spec in found)
    kinds = ", ".join(sorted({spec.op_type for _, spec in found}))
    out = upgrade_opset(out, need, f"the ONNX Runtime rewrite of {kinds}")
    opset = default_opset(out)
    graph = out.graph
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        spec = find_op(node)
        if spec is None or (select is not None and not select(node)):
            new_nodes.append(node)
            continue
        nodes, inits = spec.rewrite(node, opset)
        new_nodes.extend(nodes)
        graph.initializer.extend(inits)
    del graph.node[:]
    graph.node.extend(new_nodes)
    domains = custom_domains()
    keep = [imp for imp in out.opset_import if imp.domain not in domains or any(n.domain == imp.domain
                                                                              for n in graph.node)]
    del out.opset_import[:]
    out.opset_import.extend(keep)
    return out


__all__ = ["OPS", "OpSpec", "PluginInfo", "PluginQdq", "custom_nodes", "default_opset", "find_op",
           "required_opset", "rewrite_for_onnxruntime", "upgrade_opset"]
