"""ONNX Runtime's bias quantization overflows FP16 biases (16 / (0.05 * 0.001) = 320000 > 65504); `make_session`
runs Q/DQ models exactly (`EXACT_QDQ`), which keeps that rewrite off too."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

from sppquant.backends.onnxruntime import make_session  # noqa: E402


def _qdq_gemm(bias_value: float, x_scale: float = 0.05, w_scale: float = 0.001) -> tuple[onnx.ModelProto, dict]:
    """X (INT8, as a plugin's output) -> DQ -> Gemm(DQ(Q(W)), FP16 bias) -> Y: the FP16 Q/DQ export's Gemm."""
    rng = np.random.default_rng(0)
    w_q = rng.integers(-127, 128, size=(8, 16)).astype(np.int8)
    bias = np.full(8, bias_value, np.float16)
    w = (w_q.astype(np.float32) * np.float16(w_scale)).astype(np.float16)  # exactly on the grid
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.full(8, w_scale, np.float16), "w_s"),
             numpy_helper.from_array(np.zeros(8, np.int8), "w_z"),
             numpy_helper.from_array(np.array(x_scale, np.float16), "x_s"),
             numpy_helper.from_array(np.array(0, np.int8), "x_z"), numpy_helper.from_array(bias, "b"),
             numpy_helper.from_array(np.array(0.5, np.float16), "y_s")]
    nodes = [helper.make_node("DequantizeLinear", ["X", "x_s", "x_z"], ["xd"]),
             helper.make_node("QuantizeLinear", ["w", "w_s", "w_z"], ["w_q"], axis=0),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], axis=0),
             helper.make_node("Gemm", ["xd", "wd", "b"], ["y"], transB=1, name="fc"),
             helper.make_node("QuantizeLinear", ["y", "y_s", "x_z"], ["yq"]),  # ORT rewrites only Gemm -> Q
             helper.make_node("DequantizeLinear", ["yq", "y_s", "x_z"], ["Y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.INT8, [4, 16])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT16, [4, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    x = rng.integers(-127, 128, size=(4, 16)).astype(np.int8)
    xd = x.astype(np.float64) * np.float64(np.float16(x_scale))
    y = xd @ (w_q.astype(np.float64) * np.float64(np.float16(w_scale))).T + np.float64(bias[0])
    return model, {"X": x, "ref": np.clip(np.round(y / 0.5), -128, 127) * 0.5}


@pytest.mark.parametrize("bias", [16.0, 1.0])
def test_session_computes_the_qdq_gemm(bias: float) -> None:
    model, data = _qdq_gemm(bias)
    got = make_session(model).run(["Y"], {"X": data["X"]})[0].astype(np.float64)
    # Y is on the 0.5 grid: at most one step off where y sits on a rounding edge
    assert np.abs(got - data["ref"]).max() <= 0.5
