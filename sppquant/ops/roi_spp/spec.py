"""The RoI SPP op's entry in the op registry (`sppquant.ops.OPS`).

Inputs ``features`` (N, C, H, W) and ``rois`` (R, 5) ``[batch, x1, y1, x2, y2]`` FP32;
output ``(R, C * sum(n*n))``. Only ``features`` is an activation: the regions stay FP32
in every precision (Q/DQ, FP16), as the plugin expects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from sppquant.ops.roi_spp.onnx import (
    MIN_OPSET,
    ROI_SPP_DOMAIN,
    ROI_SPP_OP_TYPE,
    ROI_SPP_PLUGIN_VERSION,
    roi_spp_as_standard_ops,
    roi_spp_node_attributes,
    roi_spp_output_width,
)
from sppquant.ops.spec import OpSpec, PluginInfo, PluginQdq

# The CUDA kernel's limits (same as SPP's: cuda/spp_kernels.h).
MAX_LEVELS = 16
MAX_LEVEL_BINS = 64
MAX_SUM_BINS = 128


def check_roi_levels(levels: Sequence[int]) -> tuple[int, ...]:
    """Levels the kernel accepts; ValueError (one line) otherwise."""
    lv = tuple(int(n) for n in levels)
    if len(lv) > MAX_LEVELS or max(lv) > MAX_LEVEL_BINS or sum(lv) > MAX_SUM_BINS:
        raise ValueError(f"levels {list(lv)} exceed the RoI SPP kernel's limits: at most {MAX_LEVELS} levels, "
                         f"each at most {MAX_LEVEL_BINS}, summing to at most {MAX_SUM_BINS}")
    return lv


def _attributes(node: onnx.NodeProto) -> Mapping[str, Any]:
    attrs = roi_spp_node_attributes(node)  # non-empty positive levels, finite scale > 0, max pooling
    try:
        check_roi_levels(attrs["levels"])
    except ValueError as exc:
        raise ValueError(f"RoI SPP node {node.name!r}: {exc}") from None
    return attrs


def _output_shape(inputs: Sequence[Sequence[int | str | None]], attrs: Mapping[str, Any]) -> list[int | str | None]:
    c, r = inputs[0][1], inputs[1][0]
    return [r, roi_spp_output_width(c, attrs["levels"]) if isinstance(c, int) else None]


def _reference(features: np.ndarray, rois: np.ndarray, levels: Sequence[int], spatial_scale: float,
               pooling: str = "max") -> np.ndarray:
    """The CUDA engineer's NumPy reference when present; else the exact ONNX Runtime rewrite run on one node."""
    try:
        from sppquant.ops.roi_spp.reference import roi_spp_reference  # noqa: PLC0415 - lands on main later
    except ImportError:
        return _rewrite_reference(features, rois, levels, spatial_scale)
    return roi_spp_reference(features, rois, levels, spatial_scale, pooling)


def _rewrite_reference(features: np.ndarray, rois: np.ndarray, levels: Sequence[int],
                       spatial_scale: float) -> np.ndarray:
    import onnxruntime as ort  # noqa: PLC0415 - only when the NumPy reference is absent

    from sppquant.ops.roi_spp.onnx import make_roi_spp_node  # noqa: PLC0415

    f32 = onnx.TensorProto.FLOAT
    node = make_roi_spp_node("features", "rois", "out", levels, spatial_scale)
    nodes, inits = roi_spp_as_standard_ops(node, 17)
    graph = onnx.helper.make_graph(nodes, "roi_spp_ref", [onnx.helper.make_tensor_value_info("features", f32, None),
                                                          onnx.helper.make_tensor_value_info("rois", f32, None)],
                                   [onnx.helper.make_tensor_value_info("out", f32, None)], inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["out"], {"features": np.asarray(features, np.float32), "rois": np.asarray(rois, np.float32)})[0]


ROI_SPP = OpSpec(
    key="roi_spp",
    domain=ROI_SPP_DOMAIN,
    op_type=ROI_SPP_OP_TYPE,
    plugin=PluginInfo(ROI_SPP_OP_TYPE, ROI_SPP_PLUGIN_VERSION, ROI_SPP_DOMAIN),
    attributes=_attributes,
    output_shape=_output_shape,
    reference=_reference,
    rewrite=roi_spp_as_standard_ops,
    min_opset=MIN_OPSET,
    # Max pooling picks feature values: the output range never exceeds the features'.
    ties_output_to_input=lambda attrs: 0 if attrs["pooling"] == "max" else None,
    qdq=PluginQdq(inputs=(0,), int8_io=True, output_tied_to=0),  # rois stay FP32
    fp16=True,
    float_inputs=(0,),  # rois are coordinates: never histogrammed, never converted to FP16
)
