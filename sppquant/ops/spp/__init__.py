"""Spatial Pyramid Pooling (He et al. 2014): reference semantics, ONNX helpers, op spec."""

from sppquant.ops.spp.reference import bin_edges, spp_output_width, spp_reference

__all__ = ["bin_edges", "spp_output_width", "spp_reference"]
