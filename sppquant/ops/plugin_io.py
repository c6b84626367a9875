"""ONNX Runtime only: give a plugin that TensorRT runs with INT8 I/O float tensors again.

The export writes ``Q -> plugin -> DQ`` because that is how TensorRT hands a plugin INT8
tensors. ONNX Runtime runs the plugin as standard float ops (after the op's rewrite, e.g.
``sppquant.ops.rewrite_for_onnxruntime``), so before that rewrite this module turns
the pattern into ``Q -> DQ -> plugin -> Q -> DQ``:

- the new DQ uses the input Q's scale and zero point, the new Q the output DQ's, so the
  values the plugin sees and the INT8 values after it are the ones TensorRT's plugin gets
  and must produce;
- the new DQ/Q compute in float32 (scales copied to float32 when the export stored FP16
  scales), so the plugin's standard-op form runs in float32 as the CUDA kernel accumulates;
- max commutes with a monotonic dequantize, ``max(s*q) = s*max(q)``, so with equal input
  and output scales the re-quantize is exact and the result equals the INT8 plugin's copy
  bit for bit. With unequal scales the new Q computes ``rint((s_in*q) / s_out)``; the CUDA
  kernel computes ``rint(q * (s_in / s_out))``: both saturate to [-128, 127] and round
  half to even, and they can differ by one step only where float32 rounding moves a value
  across a .5 boundary (``tests/test_plugin_io.py`` counts those cases).

The DQ inserted before a plugin is named ``<quantized tensor>_dequantized`` (made unique),
which ``QdqInfo.activations`` relies on to name that value for the report.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sppquant.ops.names import Names

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


def is_plugin_node(node: onnx.NodeProto) -> bool:
    """A node TensorRT maps to a plugin: any op outside the standard ONNX / ONNX Runtime domains."""
    return node.domain not in STANDARD_DOMAINS


def _float32_input(name: str, inits: dict[str, onnx.TensorProto], graph: onnx.GraphProto, names: Names) -> str:
    """``name`` itself when it is a float32 initializer, else a float32 copy of it."""
    init = inits.get(name)
    if init is None or init.data_type == TensorProto.FLOAT:
        return name
    copy = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), names.new(f"{name}_fp32"))
    graph.initializer.append(copy)
    inits[copy.name] = copy
    return copy.name


def _axis_attrs(node: onnx.NodeProto) -> dict[str, int]:
    return {a.name: a.i for a in node.attribute if a.name == "axis"}


def dequantize_plugin_io(model: onnx.ModelProto,
                         is_plugin: Callable[[onnx.NodeProto], bool] = is_plugin_node) -> onnx.ModelProto:
    """A copy of ``model`` where each ``Q -> plugin -> DQ`` is ``Q -> DQ -> plugin -> Q -> DQ`` (see module doc).

    Plugins whose inputs do not come from a QuantizeLinear are left alone, so applying
    this twice changes nothing the second time.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names = Names(graph)
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    body: list[onnx.NodeProto] = []
    for node in graph.node:
        q_inputs = [i for i, name in enumerate(node.input)
                    if name and getattr(producer.get(name), "op_type", None) == "QuantizeLinear"]
        if not is_plugin(node) or not q_inputs:
            body.append(node)
            continue
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i in q_inputs:
            q = producer[node.input[i]]
            scale, zero = _float32_input(q.input[1], inits, graph, names), q.input[2] if len(q.input) > 2 else ""
            dq_out = names.new(f"{q.input[0]}_dequantized")
            body.append(helper.make_node("DequantizeLinear", [node.input[i], scale, zero][: 3 if zero else 2], [dq_out],
                                         name=names.new(f"{dq_out}_for_ort"), **_axis_attrs(q)))
            new.input[i] = dq_out
        tail: list[onnx.NodeProto] = []
        for j, name in enumerate(node.output):
            readers = consumers.get(name, [])
            if not readers or any(r.op_type != "DequantizeLinear" for r in readers) or name in {
                    o.name for o in graph.output}:
                continue  # the plugin's output is float already
            dq = readers[0]
            scale, zero = _float32_input(dq.input[1], inits, graph, names), dq.input[2] if len(dq.input) > 2 else ""
            float_out = names.new(f"{name}_float")
            new.output[j] = float_out
            tail.append(helper.make_node("QuantizeLinear", [float_out, scale, zero][: 3 if zero else 2], [name],
                                         name=names.new(f"{name}_requantize_for_ort"), **_axis_attrs(dq)))
        body += [new, *tail]
    del graph.node[:]
    graph.node.extend(body)
    return out
