"""One model whose per-tensor quantizers are switched by feeds: sensitivity in bounded memory.

Per-layer sensitivity asks "what happens at the output when only tensor i is quantized",
for every tensor. One ONNX Runtime session per tensor costs memory linear in the number
of tensors (13.8 GB for a 66-tensor classifier, killed at 20 GB for a 331-tensor
detector). Here every tensor gets ``Where(flag_i, DQ(Q(x_i)), x_i)`` with ``flag_i`` a
boolean scalar graph input: one session serves every tensor, and each run switches one
quantizer on by its feed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sppquant.ops.names import Names

FLAG_SUFFIX = "__quantize"


def switchable_model(model: onnx.ModelProto, scales: Mapping[str, float],
                     names: Sequence[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A copy of ``model`` with a switchable Q/DQ on each of ``names``; returns ``{tensor: flag input}``.

    Consumers of each named tensor read the switched value. Graph outputs cannot be
    switched (quantizing an output alone changes it by exactly its own rounding error:
    callers compute that directly).
    """
    outputs = {o.name for o in model.graph.output}
    if outputs & set(names):
        raise ValueError(f"graph outputs cannot be switched: {sorted(outputs & set(names))}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    used = Names(g)
    flags: dict[str, str] = {}
    switched: dict[str, str] = {}
    head: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    produced = {o for n in g.node for o in n.output}
    pairs: dict[str, list[onnx.NodeProto]] = {}
    for name in dict.fromkeys(names):
        flag = used.new(f"{name}{FLAG_SUFFIX}")
        s, z = used.new(f"{name}_sw_scale"), used.new(f"{name}_sw_zero")
        q, dq, sw = used.new(f"{name}_sw_q"), used.new(f"{name}_sw_dq"), used.new(f"{name}_switched")
        new_inits += [numpy_helper.from_array(np.float32(scales[name]), s), numpy_helper.from_array(np.int8(0), z)]
        nodes = [helper.make_node("QuantizeLinear", [name, s, z], [q], name=used.new(f"{name}_sw_Q")),
                 helper.make_node("DequantizeLinear", [q, s, z], [dq], name=used.new(f"{name}_sw_DQ")),
                 helper.make_node("Where", [flag, dq, name], [sw], name=used.new(f"{name}_sw_Where"))]
        g.input.append(helper.make_tensor_value_info(flag, TensorProto.BOOL, []))
        flags[name], switched[name] = flag, sw
        if name in produced:
            pairs[name] = nodes
        else:
            head += nodes
    body: list[onnx.NodeProto] = []
    for node in g.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i, inp in enumerate(new.input):
            if inp in switched:
                new.input[i] = switched[inp]
        body.append(new)
        for o in node.output:
            body += pairs.get(o, [])
    del g.node[:]
    g.node.extend(head + body)
    g.initializer.extend(new_inits)
    return out, flags


def switch_feeds(flags: Mapping[str, str], on: str | None) -> dict[str, np.ndarray]:
    """Feeds that turn on only ``on``'s quantizer (None: all off)."""
    return {flag: np.array(name == on) for name, flag in flags.items()}
