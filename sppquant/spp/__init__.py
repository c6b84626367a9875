"""Spatial Pyramid Pooling: reference semantics, ONNX helpers, the TensorRT plugin library."""

from sppquant.spp.reference import bin_edges, spp_output_width, spp_reference

__all__ = ["bin_edges", "spp_output_width", "spp_reference"]
