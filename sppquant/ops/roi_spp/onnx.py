"""ONNX helpers for the RoI SPP node, and the rewrite that lets ONNX Runtime run it exactly.

The node is ``sppquant::RoiSpatialPyramidPooling`` (inputs ``features`` NCHW and
``rois`` (R, 5) rows ``[batch_index, x1, y1, x2, y2]`` in network-input pixels; output
``(R, C * sum(n*n))``, level-major, then channel, then bin row-major). Regions and bins
follow Fast R-CNN / Caffe RoI pooling as ONNX ``MaxRoiPool`` specifies, with the bin
edges computed exactly in integers:

- corners ``x1' = round(x1 * spatial_scale)`` (float32 product, half away from zero);
  ``roi_w = max(x2' - x1' + 1, 1)``, ``roi_h`` likewise;
- per level ``n``, bin ``i`` of an axis of region length ``h`` spans
  ``[floor(i*h/n), ceil((i+1)*h/n))`` offset by the region start, clipped to the map;
  an empty bin gives 0;
- an invalid RoI (batch index not a number in ``[0, N)``, or a corner not finite) gives
  a row of zeros; a valid batch index is truncated (``sppquant.ops.roi_spp.reference``).

Why not ``MaxRoiPool(pooled_shape=[n, n])`` per level: ONNX Runtime computes the bin
edges in float32 (``floor(i * (h/n))``, ``ceil((i+1) * (h/n))``), which differs from the
integer rule whenever a bin edge is an exact integer that float rounding misses (never
for levels 1-6 and region lengths up to 1024, but level 7 with h = 57 gives the last
bin ``[48, 58)`` instead of ``[48, 57)``: see ``float_bin_mismatches``). It also
initialises maxima to -FLT_MAX (a bin of -inf gives -3.4e38) and ignores a NaN unless
it is the bin's last element. The rewrite therefore computes every bin's integer box
itself (int64 Mul/Div, so R stays dynamic) and asks ``MaxRoiPool`` only for 1x1 pools
of those exact boxes (where its float arithmetic is exact: edges are integers below
2^24), pooling a flag channel beside every feature channel to restore -inf and NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper

ROI_SPP_OP_TYPE = "RoiSpatialPyramidPooling"
ROI_SPP_DOMAIN = "sppquant"
ROI_SPP_PLUGIN_VERSION = "1"
POOLINGS = ("max",)
MIN_OPSET = 13  # Unsqueeze/Slice/Split with tensor inputs
# Bin edges are clipped to [-1, size + 1] before MaxRoiPool sees them as float32 (exact
# below 2^24); scaled corners are clipped to +-2^30 before the int64 cast.
_CORNER_LIMIT = float(2**30)


def _validate(levels: Sequence[int], spatial_scale: float, pooling: str) -> tuple[tuple[int, ...], float, str]:
    lv = tuple(int(n) for n in levels)
    if not lv or any(n <= 0 for n in lv) or any(int(n) != n for n in levels):
        raise ValueError(f"levels must be a non-empty list of positive integers, got {list(levels)}")
    scale = float(spatial_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"spatial_scale must be a positive finite number, got {spatial_scale}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return lv, scale, pooling


def make_roi_spp_node(
    features: str,
    rois: str,
    output: str,
    levels: Sequence[int],
    spatial_scale: float,
    pooling: str = "max",
    name: str | None = None,
) -> onnx.NodeProto:
    """The plugin node (TensorRT maps it to the plugin of the same name, version and namespace)."""
    lv, scale, pooling = _validate(levels, spatial_scale, pooling)
    return helper.make_node(
        ROI_SPP_OP_TYPE,
        [features, rois],
        [output],
        name=name or f"{output}_roi_spp",
        domain=ROI_SPP_DOMAIN,
        levels=list(lv),
        spatial_scale=scale,
        pooling=pooling,
        plugin_version=ROI_SPP_PLUGIN_VERSION,
        plugin_namespace=ROI_SPP_DOMAIN,  # older 10.x parsers ignore the domain
    )


def is_roi_spp_node(node: onnx.NodeProto) -> bool:
    return node.op_type == ROI_SPP_OP_TYPE and node.domain == ROI_SPP_DOMAIN


def roi_spp_node_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """``{"levels", "spatial_scale", "pooling"}`` of a RoI SPP node, validated (ValueError names the node)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    for key in ("levels", "spatial_scale"):
        if key not in attrs:
            raise ValueError(f"RoI SPP node {node.name!r} has no {key!r} attribute")
    pooling = attrs.get("pooling", b"max")
    pooling = pooling.decode() if isinstance(pooling, bytes) else str(pooling)
    if len(node.input) != 2 or len(node.output) != 1:
        raise ValueError(f"RoI SPP node {node.name!r} needs inputs (features, rois) and one output")
    try:
        lv, scale, pooling = _validate(attrs["levels"], attrs["spatial_scale"], pooling)
    except ValueError as exc:
        raise ValueError(f"RoI SPP node {node.name!r}: {exc}") from None
    return {"levels": lv, "spatial_scale": scale, "pooling": pooling}


def roi_spp_output_width(channels: int, levels: Sequence[int]) -> int:
    return int(channels) * sum(int(n) * int(n) for n in levels)


def float_bin_mismatches(levels: Sequence[int], max_length: int) -> list[tuple[int, int, int, str]]:
    """``(n, h, i, edge)`` where MaxRoiPool's float32 bin edge differs from the exact integer one.

    Emulates ONNX Runtime's arithmetic (``bin = float(h) / float(n)``; start
    ``floor(float(i) * bin)``, end ``ceil(float(i+1) * bin)``, all float32) for region
    lengths ``1..max_length``. Documents why the rewrite does not pool whole levels.
    """
    out = []
    for n in levels:
        for h in range(1, max_length + 1):
            size = np.float32(h) / np.float32(n)
            for i in range(n):
                if int(np.floor(np.float32(i) * size)) != (i * h) // n:
                    out.append((n, h, i, "start"))
                if int(np.ceil(np.float32(i + 1) * size)) != -((-(i + 1) * h) // n):
                    out.append((n, h, i, "end"))
    return out


# --------------------------------------------------------------------------- ORT rewrite


class _Emitter:
    """Collects the standard-op nodes that replace one node; names stay unique."""

    def __init__(self, prefix: str, opset: int) -> None:
        self.prefix, self.opset = prefix, opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}/{hint}_{self._n}"

    def const(self, hint: str, values: Sequence[float], dtype: int = onnx.TensorProto.INT64,
              dims: Sequence[int] | None = None) -> str:
        name = self.name(hint)
        self.inits.append(helper.make_tensor(name, dtype, list(dims) if dims is not None else [len(values)],
                                             list(values)))
        return name

    def scalar(self, hint: str, value: float, dtype: int = onnx.TensorProto.INT64) -> str:
        return self.const(hint, [value], dtype, dims=[])

    def op(self, op_type: str, inputs: Sequence[str], hint: str, **attrs: object) -> str:
        out = self.name(hint)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", [x, self.const("axes", axes)], "unsqueeze")

    def column(self, rois: str, k: int) -> str:
        """Column ``k`` of the (R, 5) rois as an (R, 1) tensor."""
        return self.op("Slice", [rois, self.const("c0", [k]), self.const("c1", [k + 1]), self.const("ax1", [1])],
                       f"col{k}")


def _round_half_away(em: _Emitter, v: str) -> str:
    """float32 -> int64 rounding half away from zero (ONNX Round is half to even)."""
    lim = em.scalar("limit", _CORNER_LIMIT, onnx.TensorProto.FLOAT)
    v = em.op("Min", [em.op("Max", [v, em.op("Neg", [lim], "neg_limit")], "clip_lo"), lim], "clip_hi")
    fl = em.op("Floor", [v], "floor")
    frac = em.op("Sub", [v, fl], "frac")  # exact for float32 below 2^24
    half = em.scalar("half", 0.5, onnx.TensorProto.FLOAT)
    up = em.op("Or", [em.op("Greater", [frac, half], "gt_half"),
                      em.op("And", [em.op("Equal", [frac, half], "eq_half"),
                                    em.op("GreaterOrEqual", [v, em.scalar("zero", 0.0, onnx.TensorProto.FLOAT)],
                                          "nonneg")], "tie_up")], "round_up")
    rounded = em.op("Add", [fl, em.op("Cast", [up], "up_f", to=onnx.TensorProto.FLOAT)], "rounded")
    return em.op("Cast", [rounded], "rounded_i", to=onnx.TensorProto.INT64)


def _axis_bins(em: _Emitter, start: str, end: str, size: str, n: int) -> tuple[str, str]:
    """(R, 1) int64 corners -> (R, n) exact bin starts and ends, clipped to [-1, size + 1]."""
    one = em.scalar("one", 1)
    length = em.op("Max", [em.op("Add", [em.op("Sub", [end, start], "extent"), one], "len_raw"), one], "len")
    nn = em.scalar("n", n)
    i = em.const("i", list(range(n)), dims=[1, n])
    i1 = em.const("i1", list(range(1, n + 1)), dims=[1, n])
    lo = em.op("Add", [start, em.op("Div", [em.op("Mul", [i, length], "i_len"), nn], "floor_div")], "bin_lo")
    ceil_num = em.op("Add", [em.op("Mul", [i1, length], "i1_len"), em.scalar("n_minus_1", n - 1)], "ceil_num")
    hi = em.op("Add", [start, em.op("Div", [ceil_num, nn], "ceil_div")], "bin_hi")
    lo_lim, hi_lim = em.scalar("minus1", -1), em.op("Add", [size, one], "size_plus1")
    clip = [em.op("Min", [em.op("Max", [x, lo_lim], "clip_lo"), hi_lim], "clip_hi") for x in (lo, hi)]
    return clip[0], clip[1]


def _bin_rois(em: _Emitter, rois: str, features_shape: str, levels: Sequence[int], scale: float) -> str:
    """(R, 5) rois -> (R * B, 5) float32 rows ``[b, x0, y0, x1 - 1, y1 - 1]``, one per bin, level-major."""
    sc = em.scalar("spatial_scale", scale, onnx.TensorProto.FLOAT)
    corners = [_round_half_away(em, em.op("Mul", [em.column(rois, k), sc], f"scaled{k}")) for k in (1, 2, 3, 4)]
    h = em.op("Gather", [features_shape, em.scalar("h_index", 2)], "h")
    w = em.op("Gather", [features_shape, em.scalar("w_index", 3)], "w")
    r = em.op("Gather", [em.op("Shape", [rois], "rois_shape"), em.const("r_index", [0])], "r")
    batch = em.column(rois, 0)
    cols: list[list[str]] = [[], [], [], [], []]
    one = em.scalar("one", 1)
    for n in levels:
        ys, ye = _axis_bins(em, corners[1], corners[3], h, n)
        xs, xe = _axis_bins(em, corners[0], corners[2], w, n)
        grid = em.op("Concat", [r, em.const("nn", [n, n])], "grid_shape", axis=0)
        flat = em.op("Concat", [r, em.const("nsq", [n * n])], "flat_shape", axis=0)

        def spread(t: str, axis: int, grid: str = grid, flat: str = flat) -> str:
            full = em.op("Expand", [em.unsqueeze(t, [axis]), grid], "expand")  # (R, n, n), row-major bins
            return em.op("Cast", [em.op("Reshape", [full, flat], "flat")], "as_float", to=onnx.TensorProto.FLOAT)

        cols[0].append(em.op("Expand", [batch, flat], "batch"))
        cols[1].append(spread(xs, 1))
        cols[2].append(spread(ys, 2))
        cols[3].append(spread(em.op("Sub", [xe, one], "x_last"), 1))
        cols[4].append(spread(em.op("Sub", [ye, one], "y_last"), 2))
    stacked = [em.unsqueeze(c[0] if len(c) == 1 else em.op("Concat", c, "levels", axis=1), [2]) for c in cols]
    return em.op("Reshape", [em.op("Concat", stacked, "bin_rois3", axis=2), em.const("rows5", [-1, 5])], "bin_rois")


def _valid_rois(em: _Emitter, rois: str, features_shape: str) -> str:
    """(R, 1) bool: batch index a number in [0, N) and all four corners finite (else the row is 0)."""
    f32 = onnx.TensorProto.FLOAT
    batch = em.column(rois, 0)
    n = em.op("Cast", [em.op("Gather", [features_shape, em.const("n_index", [0])], "n")], "n_f", to=f32)
    ok = em.op("And", [em.op("GreaterOrEqual", [batch, em.scalar("zero_b", 0.0, f32)], "b_ge0"),
                       em.op("Less", [batch, n], "b_lt_n")], "batch_ok")  # False for NaN and +-inf
    for k in (1, 2, 3, 4):
        v = em.column(rois, k)
        bad = em.op("Or", [em.op("IsNaN", [v], "nan"), em.op("IsInf", [v], "inf")], "nonfinite")
        ok = em.op("And", [ok, em.op("Not", [bad], "finite")], "roi_ok")
    return ok


def _pool_with_flags(em: _Emitter, features: str, bins: str, r: str, c: str, total: int) -> str:
    """(R, B, C) bin maxima with -inf and NaN restored: ``MaxRoiPool`` over features + a flag channel each."""
    f32 = onnx.TensorProto.FLOAT
    flag = em.op("Add", [em.op("Cast", [em.op("Greater", [features, em.scalar("neg_inf", -np.inf, f32)], "gt_ninf")],
                               "finite_or_pinf", to=f32),
                         em.op("Mul", [em.op("Cast", [em.op("IsNaN", [features], "isnan")], "nan_f", to=f32),
                                       em.scalar("two", 2.0, f32)], "nan2")], "flag0")
    flag = em.op("Add", [flag, em.scalar("one_f", 1.0, f32)], "flag")
    both = em.op("Concat", [features, flag], "with_flags", axis=1)
    pooled = em.op("MaxRoiPool", [both, bins], "pooled", pooled_shape=[1, 1], spatial_scale=1.0)
    rbc = em.op("Concat", [r, em.const("bins", [total, 2]), c], "rb2c_shape", axis=0)
    pooled = em.op("Reshape", [pooled, rbc], "rb2c")  # (R, B, 2, C)
    value = em.op("Squeeze", [em.op("Slice", [pooled, em.const("s0", [0]), em.const("s1", [1]), em.const("a2", [2])],
                                    "value4"), em.const("a2", [2])], "value")
    pflag = em.op("Squeeze", [em.op("Slice", [pooled, em.const("s1", [1]), em.const("s2", [2]), em.const("a2", [2])],
                                    "flag4"), em.const("a2", [2])], "pooled_flag")
    value = em.op("Where", [em.op("Equal", [pflag, em.scalar("one_f", 1.0, f32)], "all_ninf"),
                            em.scalar("ninf", -np.inf, f32), value], "with_ninf")
    return em.op("Where", [em.op("Greater", [pflag, em.scalar("two_f", 2.0, f32)], "has_nan"),
                           em.scalar("nan", np.nan, f32), value], "with_nan")


def roi_spp_as_standard_ops(node: onnx.NodeProto, opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Standard ops (opset >= 13) computing the node exactly; the output keeps its name, R and N, C, H, W stay dynamic.

    ``MaxRoiPool`` pools each exact integer bin as a 1x1 region of ``features`` and of a
    flag map (``1 + [x > -inf] + 2*isnan(x)``) beside it; the pooled flag is 0 for an
    empty bin (value 0, as MaxRoiPool returns), 1 when every element is -inf, 3 when a
    NaN is present. Equal to the reference as floats (the sign of a zero maximum of a bin
    holding both +0 and -0 is unspecified). Scaled corners are clamped to +-2^30. An invalid
    RoI (batch index not in [0, N), or a corner not finite) gives a row of zeros. An ``If``
    runs the flag channels only when the features hold a NaN or a -inf (then MaxRoiPool's
    own result is exact: empty bins give 0, and every element exceeds its -FLT_MAX start).
    """
    if opset < MIN_OPSET:
        raise ValueError(f"RoI SPP rewrite needs ONNX opset >= {MIN_OPSET}, model has {opset}")
    attrs = roi_spp_node_attributes(node)
    levels = attrs["levels"]
    features, rois = node.input[0], node.input[1]
    out = final = node.output[0]
    em = _Emitter(f"{out}__roi_spp", opset)
    if opset >= 15:  # computed in FP32 whatever the I/O type (FP16 features in FP16 / mixed models), as the plugin does
        features = em.op("Cast", [features], "features_fp32", to=onnx.TensorProto.FLOAT)
        rois = em.op("Cast", [rois], "rois_fp32", to=onnx.TensorProto.FLOAT)
        out = f"{final}__roi_spp/out_fp32"
    fshape = em.op("Shape", [features], "features_shape")
    valid = _valid_rois(em, rois, fshape)
    safe = em.op("Where", [valid, rois, em.scalar("zero_roi", 0.0, onnx.TensorProto.FLOAT)], "safe_rois")
    bins = _bin_rois(em, safe, fshape, levels, attrs["spatial_scale"])
    f32 = onnx.TensorProto.FLOAT
    r = em.op("Gather", [em.op("Shape", [rois], "rois_shape"), em.const("r_index", [0])], "r")
    c = em.op("Gather", [fshape, em.const("c_index", [1])], "c")
    total = sum(n * n for n in levels)
    # The flag channels double MaxRoiPool's work (most of the model's time in ONNX Runtime): only
    # features holding a NaN or a -inf need them, so an If picks the plain pool otherwise.
    special = em.op("Greater", [em.op("ReduceMax", [em.op("Cast", [em.op("Or", [
        em.op("IsNaN", [features], "any_nan"), em.op("IsInf", [features], "any_ninf", detect_positive=0)],
        "nan_or_ninf")], "special_f", to=f32)], "any_special", keepdims=0), em.scalar("zero_s", 0.0, f32)], "special")
    flagged = _Emitter(f"{em.prefix}/flagged", em.opset)
    plain = _Emitter(f"{em.prefix}/plain", em.opset)
    rbc = plain.op("Concat", [r, plain.const("bins", [total]), c], "rbc_shape", axis=0)
    plain_value = plain.op("Reshape", [plain.op("MaxRoiPool", [features, bins], "pooled", pooled_shape=[1, 1],
                                                spatial_scale=1.0), rbc], "value")
    branches = {name: helper.make_graph(e.nodes, name, [], [helper.make_tensor_value_info(v, f32, None)])
                for name, e, v in (("flagged", flagged, _pool_with_flags(flagged, features, bins, r, c, total)),
                                   ("plain", plain, plain_value))}
    em.inits += flagged.inits + plain.inits
    value = em.op("If", [special], "value", then_branch=branches["flagged"], else_branch=branches["plain"])
    value = em.op("Where", [em.unsqueeze(valid, [2]), value, em.scalar("zero_f", 0.0, f32)], "valid_rows")
    flats, offset = [], 0
    for n in levels:
        part = em.op("Slice", [value, em.const("b0", [offset]), em.const("b1", [offset + n * n]),
                               em.const("a1", [1])], f"level{n}_bins")
        flats.append(em.op("Flatten", [em.op("Transpose", [part], "rcb", perm=[0, 2, 1])], f"level{n}", axis=1))
        offset += n * n
    em.nodes.append(helper.make_node("Concat", flats, [out], name=f"{final}__roi_spp/concat", axis=1)
                    if len(flats) > 1 else helper.make_node("Identity", flats, [out], name=f"{final}__roi_spp/identity"))
    if out != final:  # back to the features' own type (a no-op copy for FP32)
        em.nodes.append(helper.make_node("CastLike", [out, node.input[0]], [final], name=f"{final}__roi_spp/cast_back"))
    return em.nodes, em.inits


def rewrite_roi_spp_for_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every RoI SPP node replaced by `roi_spp_as_standard_ops`.

    Stop-gap until the op registry calls the rewrite; other custom nodes are left alone.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    opset = next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), 0)
    new_nodes: list[onnx.NodeProto] = []
    for node in out.graph.node:
        if is_roi_spp_node(node):
            nodes, inits = roi_spp_as_standard_ops(node, opset)
            new_nodes.extend(nodes)
            out.graph.initializer.extend(inits)
        else:
            new_nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(new_nodes)
    if not any(n.domain == ROI_SPP_DOMAIN for n in out.graph.node):
        keep = [imp for imp in out.opset_import if imp.domain != ROI_SPP_DOMAIN]
        del out.opset_import[:]
        out.opset_import.extend(keep)
    return out
