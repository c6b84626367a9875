"""Histograms that follow exactly from other tensors' histograms, so their tensors need no binning pass.

Why: binning is most of a calibration pass, and some outputs hold no value that their inputs do not
hold (as a multiset): data-movement ops, Concat, and zero Pad. Their histograms are merges of their
inputs' histograms, and merging power-of-two histograms is exact (`Histogram.merge`), so the result
is equal (``==``: counts, range, max, count, NaN count) to binning the output itself.

Rules, decided from the graph alone (anything else is binned as usual):

- Identity, Reshape, Flatten, Squeeze, Unsqueeze, Transpose: the input's histogram.
- Concat: the merge of its inputs' histograms.
- Pad, mode ``constant``, pad value 0 (absent, or a constant equal to 0) and every pad >= 0 (a
  constant, or computed from constants only, as torch exports TF-SAME padding: evaluated once
  with ONNX's reference evaluator): the input's histogram plus one zero per added element. The zeros are counted from the
  output sizes seen (``seen`` minus the input's values), so no shape inference is trusted.

Each derived tensor's sizes are checked at the end: its values seen must equal what the rule gives
(for Pad, at least the input's), else the graph did not do what the rule assumes and the run stops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from sppquant.calibration.histogram import Histogram

SAME_VALUES = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})


@dataclass(frozen=True)
class Derivation:
    """``op``'s output histogram from the histograms of ``sources`` (tensor names)."""

    op: str
    sources: tuple[str, ...]


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                out[node.output[0]] = numpy_helper.to_array(value.t)
    return out


def _folded(model: onnx.ModelProto, name: str, consts: dict[str, np.ndarray],
            producers: Mapping[str, onnx.NodeProto]) -> np.ndarray | None:
    """``name``'s value when it is computed from constants only (e.g. a torch export's Pad amounts:
    Constant -> Reshape -> Slice -> Cast ...), by ONNX's reference evaluator; else None."""
    if name in consts:
        return consts[name]
    needed: list[onnx.NodeProto] = []
    todo, seen = [name], set()
    while todo:
        t = todo.pop()
        if t in seen or t in consts or not t:
            continue
        seen.add(t)
        node = producers.get(t)
        if node is None or len(needed) > 64:  # a graph input, or not a small constant chain
            return None
        needed.append(node)
        todo.extend(node.input)
    try:
        from onnx.reference import ReferenceEvaluator  # noqa: PLC0415

        inits = [numpy_helper.from_array(v, k) for k, v in consts.items() if any(k in n.input for n in needed)]
        graph = onnx.helper.make_graph(needed[::-1], "folded", [], [onnx.helper.make_tensor_value_info(name, 0, None)],
                                       inits)
        value = np.asarray(ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=model.opset_import))
                           .run(None, {})[0])
    except Exception:  # noqa: BLE001 - whatever the evaluator cannot do, the tensor is simply binned
        return None
    consts[name] = value
    return value


def _zero_pad(model: onnx.ModelProto, node: onnx.NodeProto, consts: dict[str, np.ndarray],
              producers: Mapping[str, onnx.NodeProto]) -> bool:
    """Constant mode, pad value 0, every pad a non-negative constant."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    mode = attrs.get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return False
    if "pads" in attrs:  # opset < 11: pads and value are attributes
        pads, value = np.asarray(attrs["pads"]), np.asarray(attrs.get("value", 0.0))
    else:
        pads = _folded(model, node.input[1], consts, producers) if len(node.input) > 1 else None
        value = (_folded(model, node.input[2], consts, producers) if len(node.input) > 2 and node.input[2]
                 else np.asarray(0.0))
        if pads is None or value is None:
            return False
    return bool(pads.size and (pads >= 0).all() and value.size <= 1 and (value == 0).all())


def derivations(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, Derivation]:
    """The tensors of ``names`` whose histograms follow from others of ``names`` (see the module doc)."""
    wanted = set(names)
    consts = _constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, Derivation] = {}
    for node in model.graph.node:
        if len(node.output) != 1 or node.output[0] not in wanted or not node.input:
            continue
        if node.op_type in SAME_VALUES or (node.op_type == "Pad" and _zero_pad(model, node, consts, producers)):
            sources: tuple[str, ...] = (node.input[0],)
        elif node.op_type == "Concat":
            sources = tuple(node.input)
        else:
            continue
        if sources and all(s in wanted and s != node.output[0] for s in sources):
            out[node.output[0]] = Derivation(node.op_type, sources)
    return out


def _total(h: Histogram) -> int:
    return h.count + h.nan_count


def derive(histograms: dict[str, Histogram], rules: Mapping[str, Derivation], seen: Mapping[str, int]) -> None:
    """Fill ``histograms`` of the derived tensors (in place), sources first; ``seen``: values observed per tensor."""
    done: set[str] = set()

    def resolve(name: str, path: tuple[str, ...] = ()) -> Histogram:
        if name not in rules or name in done:
            return histograms[name]
        if name in path:
            raise RuntimeError(f"histogram derivation cycle through {name!r}")
        rule = rules[name]
        parts = [resolve(s, path + (name,)) for s in rule.sources]
        h = Histogram()
        for p in parts:
            h = h.merge(p)
        extra = seen.get(name, 0) - _total(h)
        if extra < 0 or (extra and rule.op != "Pad"):
            raise RuntimeError(f"tensor {name!r} ({rule.op}): {seen.get(name, 0)} values seen, its inputs held "
                               f"{_total(h)}; the derivation rule does not hold for this graph")
        h.add_zeros(extra)  # the Pad's zeros
        histograms[name] = h
        done.add(name)
        return h

    for name in rules:
        resolve(name)
