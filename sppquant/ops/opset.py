"""Bringing a model to the ONNX opset a step needs, or refusing it with the reason.

Real exporters still write opset 11 and 12 (paddle2onnx, older tf2onnx). TensorRT 10's
ONNX parser takes them as they are (officially back to opset 9), so engines are built
from the original file. Two steps of ours need opset 13: the ONNX Runtime rewrite of a
custom op (Slice/Gather with tensor inputs) and per-axis QuantizeLinear (Q/DQ export,
report). For those the model is converted in memory with `onnx.version_converter`, and
the conversion is logged; a model it cannot convert is refused with one line.
"""

from __future__ import annotations

import logging

import onnx

from sppquant.errors import ModelError

log = logging.getLogger(__name__)


def default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelError("model has no opset import for the default ONNX domain")


def upgrade_opset(model: onnx.ModelProto, minimum: int, why: str, source: str = "model") -> onnx.ModelProto:
    """``model`` itself when its opset is >= ``minimum``, else a converted copy (ModelError if impossible)."""
    have = default_opset(model)
    if have >= minimum:
        return model
    try:
        from onnx import version_converter  # noqa: PLC0415

        converted = version_converter.convert_version(model, minimum)
    except Exception as exc:  # the converter raises several unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{source}: opset {have} is below the {minimum} that {why} needs, and "
                         f"onnx.version_converter cannot convert it ({first}); re-export with opset >= {minimum}") \
            from None
    log.info("%s: converted from opset %d to %d in memory with onnx.version_converter (%s needs it)", source, have,
             minimum, why)
    return converted
