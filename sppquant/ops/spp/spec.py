"""The SPP op's entry in the op registry (`sppquant.ops.OPS`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from sppquant.ops.spec import OpSpec, PluginInfo, PluginQdq
from sppquant.ops.spp.onnx import SPP_DOMAIN, SPP_OP_TYPE, SPP_PLUGIN_VERSION, spp_as_standard_ops, spp_node_attributes
from sppquant.ops.spp.reference import spp_output_width, spp_reference


def _attributes(node: onnx.NodeProto) -> Mapping[str, Any]:
    levels, pooling = spp_node_attributes(node)
    return {"levels": levels, "pooling": pooling}


def _output_shape(inputs: Sequence[Sequence[int | str | None]], attrs: Mapping[str, Any]) -> list[int | str | None]:
    n, c = inputs[0][0], inputs[0][1]
    width = spp_output_width(c, attrs["levels"]) if isinstance(c, int) else None
    return [n, width]


def _reference(x: np.ndarray, levels: Sequence[int], pooling: str = "max") -> np.ndarray:
    return spp_reference(x, levels, pooling)


SPP = OpSpec(
    key="spp",
    domain=SPP_DOMAIN,
    op_type=SPP_OP_TYPE,
    plugin=PluginInfo(SPP_OP_TYPE, SPP_PLUGIN_VERSION, SPP_DOMAIN),
    attributes=_attributes,
    output_shape=_output_shape,
    reference=_reference,
    rewrite=spp_as_standard_ops,
    min_opset=13,  # Slice/Gather with tensor inputs
    # Max pooling picks input values: the output range never exceeds the input's.
    ties_output_to_input=lambda attrs: 0 if attrs["pooling"] == "max" else None,
    qdq=PluginQdq(inputs=(0,), int8_io=True, output_tied_to=0),
    fp16=True,
    float_inputs=(0,),
)
