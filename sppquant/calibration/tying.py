"""Scale tying: layers that cannot widen a range share one amax with their input.

Max pooling picks input values, a custom op whose spec says so (SPP with max pooling)
picks input values, and pure data movement (Reshape, Flatten, Squeeze, Unsqueeze,
Transpose, Identity) keeps them: their output range never exceeds their input's. One amax for
the input and its tied outputs means INT8 needs no requantization there (the CUDA SPP kernel
then copies int8 values through); the group takes its largest member's amax (`apply_ties`).
"""

from __future__ import annotations

import onnx

from sppquant.ops import find_op

RANGE_PRESERVING_OPS = frozenset({"MaxPool", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity"})


def tie_sources(model: onnx.ModelProto) -> dict[str, str]:
    """``{output tensor: tensor whose amax it takes}``, chains resolved to their root."""
    direct: dict[str, str] = {}
    for node in model.graph.node:
        if not node.input or not node.output:
            continue
        if node.op_type in RANGE_PRESERVING_OPS and node.domain in ("", "ai.onnx"):
            direct[node.output[0]] = node.input[0]
        elif (spec := find_op(node)) is not None:
            source = spec.ties_output_to_input(spec.node_attributes(node))
            if source is not None:
                direct[node.output[0]] = node.input[source]
    resolved = {}
    for out, src in direct.items():
        seen = {out}
        while src in direct and src not in seen:  # follow pool -> flatten -> ... chains
            seen.add(src)
            src = direct[src]
        resolved[out] = src
    return resolved


def apply_ties(amax: dict[str, float], ties: dict[str, str]) -> dict[str, str]:
    """One amax per tied group (a root and the outputs tied to it), in place; returns the ties applied.

    The group takes the LARGEST of its members' amax. A max-pooled output holds its input's largest
    values, so a clipping rule (percentile, mse, entropy) computed on the input alone clips the pooled
    features, the very values the next layer reads; the output's own histogram sees that tail. Under
    minmax the root's amax is already the largest (a range-preserving output never exceeds its input).
    """
    groups: dict[str, list[str]] = {}
    for out, src in ties.items():
        if out in amax and src in amax:
            groups.setdefault(src, []).append(out)
    applied = {}
    for src, outs in groups.items():
        top = max(amax[n] for n in (src, *outs))
        for n in (src, *outs):
            amax[n] = top
        applied.update({o: src for o in outs})
    return applied
