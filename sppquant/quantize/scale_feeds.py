"""The INT8 Q/DQ model with every activation scale a feed: any per-tensor threshold choice in one session.

``auto`` compares whole threshold choices (one rule per tensor) by the model output. Building and
opening one Q/DQ model per choice costs a graph build and a session each; here the exported
model's activation scale initializers are also listed as graph inputs (ONNX IR >= 4: an initializer
named as an input is its default, a feed overrides it), so one session runs every choice and the
weights, placement and FP32 between the pairs are exactly the exported model's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from sppquant.quantize.qdq import QdqInfo, build_qdq_model


def scale_fed_model(model: onnx.ModelProto, scales: Mapping[str, float]
                    ) -> tuple[onnx.ModelProto, dict[str, str], QdqInfo]:
    """``build_qdq_model(model, scales, high_precision="fp32")`` whose activation scales are feeds.

    Returns the model, ``{tensor: scale input}`` (only the tensors the placement quantizes) and the
    export's `QdqInfo`. Unfed scales keep ``scales``' values.
    """
    q, info = build_qdq_model(model, scales, high_precision="fp32")
    if q.ir_version < 4:
        q.ir_version = 4
    for name in info.act_scales.values():
        q.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
    return q, dict(info.act_scales), info


def scale_feeds(inputs: Mapping[str, str], scales: Mapping[str, float]) -> dict[str, np.ndarray]:
    """Feeds setting each fed tensor's scale (``inputs``: tensor -> scale input; ``scales``: tensor -> scale)."""
    return {inp: np.asarray(scales[t], np.float32) for t, inp in inputs.items()}
