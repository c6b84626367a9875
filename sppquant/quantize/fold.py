"""Fold weights that are computed from constants into initializers, so they can be quantized.

Exporters such as paddle2onnx write weights as ``Constant`` nodes, sometimes followed by a
``Transpose``/``Reshape``/``Cast``; the Q/DQ placement only quantizes initializers, so
without this such weights silently stay float. Only the chains that end in a weight slot
of a quantizable op are folded; everything else in the graph is left as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

# Ops that are cheap, exact and shape-only (or a plain type change): safe to evaluate at export time.
FOLDABLE = frozenset({"Constant", "Identity", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"})
CONSTANT_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], opset: int) -> list[np.ndarray]:
    """Run one node on constant inputs with ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    if node.op_type == "Constant":
        attr = next(a for a in node.attribute if a.name in CONSTANT_ATTRS)
        value = helper.get_attribute_value(attr)
        return [numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)]
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(values[n].dtype), values[n].shape)
              for n in node.input if n]
    outputs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return list(ReferenceEvaluator(model).run(None, {n: values[n] for n in node.input if n}))


def fold_weight_constants(model: onnx.ModelProto, weight_inputs: Iterable[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` where every FOLDABLE chain of constant nodes feeding ``weight_inputs`` is an initializer.

    Returns the model and the folded weight names. The folded nodes are removed; any of
    their outputs that something else still reads becomes an initializer too. Nodes are
    evaluated with ONNX's reference evaluator under the model's own opset.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    opset = next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))
    producer = {o: n for n in graph.node for o in n.output}
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    needed: set[str] = set()

    def want(name: str) -> bool:  # is ``name`` computable from constants through FOLDABLE nodes?
        if name in values or name in needed:
            return True
        node = producer.get(name)
        if node is None or node.op_type not in FOLDABLE or node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type == "Constant" and not any(a.name in CONSTANT_ATTRS for a in node.attribute):
            return False  # sparse or string constants are not weights
        if all(want(i) for i in node.input if i):
            needed.add(name)
            return True
        return False

    targets = [w for w in dict.fromkeys(weight_inputs) if w not in values and want(w)]
    if not targets:
        return out, []
    order = [n for n in graph.node if any(o in needed for o in n.output)]
    for node in order:  # graph order is topological
        for name, value in zip(node.output, _evaluate(node, values, opset)):
            values[name] = np.asarray(value)
    readers = {i for n in graph.node if not any(o in needed for o in n.output) for i in n.input}
    readers |= {o.name for o in graph.output}
    folded = [name for name in needed if name in targets or name in readers]
    graph.initializer.extend(numpy_helper.from_array(values[name], name) for name in folded)
    keep = [n for n in graph.node if not any(o in needed for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)
    log.info("folded %d constant weight(s) into initializers: %s", len(targets), ", ".join(targets[:5]))
    return out, targets
