"""TEMPORARY, until the merge wires ``dequantize_plugin_io`` into ONNX Runtime's model preparation.

The Q/DQ export now writes ``Q -> plugin -> DQ`` (TensorRT's INT8 plugin pattern). ONNX
Runtime runs the plugin through ``sppquant.spp.onnx.rewrite_for_onnxruntime``, which needs
float input, so ``sppquant.quantize.plugin_io.dequantize_plugin_io`` must run first. The
owners of ``sppquant/backends`` and ``sppquant/spp`` (being moved into ``sppquant/ops``)
add that call at merge; until then this module wraps the rewrite where it is looked up
(``sppquant.spp.onnx`` and ``sppquant.backends.onnxruntime``) so the report, the export's
load check and the tests run the new placement. Delete this file and its import in
``sppquant/quantize/__init__.py`` at merge. The wrap is idempotent and a no-op for models
without the pattern.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from sppquant.quantize.plugin_io import dequantize_plugin_io

_MARK = "_sppquant_plugin_io"


def install() -> None:
    import sppquant.backends.onnxruntime as ort_backend
    import sppquant.spp.onnx as spp_onnx

    original: Callable[[onnx.ModelProto], onnx.ModelProto] = spp_onnx.rewrite_for_onnxruntime
    if getattr(original, _MARK, False):
        return

    def rewrite_for_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
        return original(dequantize_plugin_io(model))

    rewrite_for_onnxruntime.__doc__ = original.__doc__
    setattr(rewrite_for_onnxruntime, _MARK, True)
    spp_onnx.rewrite_for_onnxruntime = rewrite_for_onnxruntime
    ort_backend.rewrite_for_onnxruntime = rewrite_for_onnxruntime
