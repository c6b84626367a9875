"""ONNX helpers for the SPP node, and the rewrite that lets ONNX Runtime run it.

The node our TensorRT plugin implements is ``sppquant::SpatialPyramidPooling`` with
attributes ``levels`` (ints) and ``pooling`` ("max" or "avg"). TensorRT's ONNX parser
maps an unknown op to the registered plugin of the same name; the domain is the
plugin namespace.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import helper

from sppquant.ops.spp.reference import POOLINGS, validate_levels

SPP_OP_TYPE = "SpatialPyramidPooling"
SPP_DOMAIN = "sppquant"
SPP_PLUGIN_VERSION = "1"

# The CUDA kernel's limits (cuda/spp_kernels.h): levels the plugin would refuse at
# TensorRT parse time are refused here, before any calibration or report work.
MAX_LEVELS = 16
MAX_LEVEL_BINS = 64
MAX_SUM_BINS = 128


def check_spp_levels(levels: Sequence[int]) -> tuple[int, ...]:
    """Levels the reference AND the CUDA kernel accept; ValueError (one line) otherwise."""
    out = validate_levels(levels)
    if len(out) > MAX_LEVELS or max(out) > MAX_LEVEL_BINS or sum(out) > MAX_SUM_BINS:
        raise ValueError(f"levels {list(out)} exceed the SPP kernel's limits: at most {MAX_LEVELS} levels, "
                         f"each at most {MAX_LEVEL_BINS}, summing to at most {MAX_SUM_BINS}")
    return out


def make_spp_node(
    input_name: str,
    output_name: str,
    levels: Sequence[int],
    pooling: str = "max",
    name: str | None = None,
) -> onnx.NodeProto:
    """The plugin node: input NCHW, output ``(N, C * sum(n*n))`` in Caffe layout."""
    levels = check_spp_levels(levels)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return helper.make_node(
        SPP_OP_TYPE,
        [input_name],
        [output_name],
        name=name or f"{output_name}_spp",
        domain=SPP_DOMAIN,
        levels=list(levels),
        pooling=pooling,
        plugin_version=SPP_PLUGIN_VERSION,
        # TensorRT's ONNX parser looks plugins up by op_type, plugin_version and
        # plugin_namespace; only recent 10.x parsers fall back to the node's domain.
        plugin_namespace=SPP_DOMAIN,
    )


def is_spp_node(node: onnx.NodeProto) -> bool:
    return node.op_type == SPP_OP_TYPE and node.domain == SPP_DOMAIN


def spp_node_attributes(node: onnx.NodeProto) -> tuple[tuple[int, ...], str]:
    """``(levels, pooling)`` of an SPP node, validated."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if "levels" not in attrs:
        raise ValueError(f"SPP node {node.name!r} has no 'levels' attribute")
    pooling = attrs.get("pooling", b"max")
    pooling = pooling.decode() if isinstance(pooling, bytes) else str(pooling)
    if pooling not in POOLINGS:
        raise ValueError(f"SPP node {node.name!r}: pooling must be one of {POOLINGS}, got {pooling!r}")
    try:
        levels = check_spp_levels(attrs["levels"])
    except ValueError as exc:
        raise ValueError(f"SPP node {node.name!r}: {exc}") from None
    return levels, pooling


# --------------------------------------------------------------------------- ORT rewrite


class _Emitter:
    """Collects the standard-op nodes that replace one SPP node; names stay unique."""

    def __init__(self, prefix: str, opset: int) -> None:
        self.prefix, self.opset, self.nodes, self.inits, self._n = prefix, opset, [], [], 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}/{hint}_{self._n}"

    def const(self, hint: str, values: Sequence[int]) -> str:
        name = self.name(hint)
        self.inits.append(helper.make_tensor(name, onnx.TensorProto.INT64, [len(values)], list(values)))
        return name

    def op(self, op_type: str, inputs: Sequence[str], hint: str, **attrs: object) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def _pool_axis(em: _Emitter, x: str, length: str, n: int, axis: int, reduce_op: str) -> str:
    """Pool ``x`` along ``axis`` into ``n`` adaptive bins, in exact integer arithmetic.

    Bin i is ``[floor(i*L/n), ceil((i+1)*L/n))`` with ``L`` the runtime length. ONNX
    integer Div truncates, which is floor here because every operand is >= 0.
    """
    idx = em.const("bin_index", range(n))
    idx1 = em.const("bin_index_plus1", range(1, n + 1))
    nn = em.const("bins", [n])
    nm1 = em.const("bins_minus1", [n - 1])
    starts = em.op("Div", [em.op("Mul", [idx, length], "i_times_len"), nn], "starts")
    ends = em.op("Div", [em.op("Add", [em.op("Mul", [idx1, length], "i1_times_len"), nm1], "ceil_num"), nn], "ends")
    axes = em.const("axis", [axis])
    parts = []
    for i in range(n):
        at = em.const("at", [i])
        s = em.op("Gather", [starts, at], "start", axis=0)
        e = em.op("Gather", [ends, at], "end", axis=0)
        window = em.op("Slice", [x, s, e, axes], "window")
        if em.opset >= 18:  # axes became an input of ReduceMax/ReduceMean in opset 18
            parts.append(em.op(reduce_op, [window, axes], "pooled", keepdims=1))
        else:
            parts.append(em.op(reduce_op, [window], "pooled", axes=[axis], keepdims=1))
    return parts[0] if n == 1 else em.op("Concat", parts, "bins", axis=axis)


def spp_as_standard_ops(node: onnx.NodeProto, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    levels, pooling = spp_node_attributes(node)
    x, out = node.input[0], node.output[0]
    em = _Emitter(f"{out}__spp", opset)
    reduce_op = "ReduceMax" if pooling == "max" else "ReduceMean"
    shape = em.op("Shape", [x], "shape")
    h = em.op("Gather", [shape, em.const("h_index", [2])], "h")
    w = em.op("Gather", [shape, em.const("w_index", [3])], "w")
    if pooling == "max":
        # ReduceMax skips NaN in ONNX Runtime; the reference (and the CUDA kernel)
        # propagate it, so pool a NaN mask alongside and put NaN back where it was.
        nan_mask = em.op("Cast", [em.op("IsNaN", [x], "isnan")], "nan_mask", to=onnx.TensorProto.FLOAT)
    flats = []
    for n in levels:
        grid = _pool_axis(em, _pool_axis(em, x, h, n, 2, reduce_op), w, n, 3, reduce_op)
        if pooling == "max":
            has_nan = _pool_axis(em, _pool_axis(em, nan_mask, h, n, 2, reduce_op), w, n, 3, reduce_op)
            zero = em.op("Sub", [grid, grid], "zero_or_nan")
            nan = em.op("Div", [zero, zero], "nan")  # 0/0: NaN in the input's own dtype
            grid = em.op("Where", [em.op("Cast", [has_nan], "has_nan", to=onnx.TensorProto.BOOL), nan, grid], "grid")
        flats.append(em.op("Flatten", [grid], f"level{n}", axis=1))
    em.nodes.append(helper.make_node("Concat", flats, [out], name=f"{out}__spp/concat", axis=1)
                    if len(flats) > 1 else helper.make_node("Identity", flats, [out], name=f"{out}__spp/identity"))
    return em.nodes, em.inits
