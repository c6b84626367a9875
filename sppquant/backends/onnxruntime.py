"""ONNX Runtime backend: one session factory (execution providers from the config) and the runner.

Custom-op nodes are rewritten into standard ops (`sppquant.ops.rewrite_for_onnxruntime`)
in memory; the file on disk is never touched. ``extra_outputs`` turns intermediate
tensors into graph outputs, which is how calibration observes activations batch by batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from sppquant.backends.base import Runner
from sppquant.errors import BackendUnavailable, ModelError
from sppquant.model import activation_names, graph_input_names, load_model, tensor_types
from sppquant.ops import rewrite_for_onnxruntime

log = logging.getLogger(__name__)

__all__ = ["OrtOptions", "OrtRunner", "activation_names", "fp16_bias_overflows", "load_model", "make_session",
           "tensor_types"]


@dataclass(frozen=True)
class OrtOptions:
    """The config's ``onnxruntime`` section: execution providers in priority order, threads."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int | None = None  # intra-op threads; default min(4, cores)


DEFAULT_ORT = OrtOptions()


def check_providers(providers: Sequence[str]) -> None:
    """BackendUnavailable (one line) when this onnxruntime build lacks a requested provider."""
    import onnxruntime as ort  # noqa: PLC0415

    have = ort.get_available_providers()
    missing = [p for p in providers if p not in have]
    if missing:
        raise BackendUnavailable(f"onnxruntime {ort.__version__} has no {', '.join(missing)} (available: "
                                 f"{', '.join(have)}); install the matching onnxruntime package, e.g. onnxruntime-gpu")


FP16_MAX = 65504.0
_BIASED_OPS = ("Conv", "ConvTranspose", "Gemm")  # the ops ONNX Runtime's bias quantization may rewrite
# Its name in ONNX Runtime 1.2x (BiasQuantization) and since (WeightBiasQuantization); unknown names are ignored.
_BIAS_TRANSFORMERS = ("WeightBiasQuantization", "BiasQuantization")
_TOLD: set[str] = set()  # overflow sites already logged at INFO (a report builds many sessions)


def _dq_scale(node_by_output: Mapping[str, onnx.NodeProto], inits: Mapping[str, onnx.TensorProto],
              tensor: str) -> np.ndarray | None:
    """The scale of the DequantizeLinear producing ``tensor`` when it is an initializer, else None."""
    node = node_by_output.get(tensor)
    if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in inits:
        return None
    return onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)


def fp16_bias_overflows(model: onnx.ModelProto) -> list[str]:
    """Conv/ConvTranspose/Gemm nodes whose FP16 bias ONNX Runtime's bias quantization would overflow.

    With DQ on the data and weight inputs and a Q after the op (through Relu/Clip), ORT
    (``WeightBiasQuantization``, at every optimization level) rewrites a float bias as
    ``int32(round(bias / (x_scale * w_scale)))`` computed in the bias's type. For an FP16 bias a
    quotient above 65504 is inf and the int32 garbage: on the demo detector, fc1 (bias up to 16,
    scales 0.067 x 0.002) went from 31 dB to 6 dB SQNR. TensorRT adds biases in float and has no
    such step, so `make_session` turns that one transformer off for such models.
    """
    inits = {i.name: i for i in model.graph.initializer}
    by_out = {o: n for n in model.graph.node for o in n.output}
    bad = []
    for node in model.graph.node:
        if node.op_type not in _BIASED_OPS or len(node.input) < 3 or node.input[2] not in inits:
            continue
        bias = inits[node.input[2]]
        if bias.data_type != onnx.TensorProto.FLOAT16:
            continue
        sx, sw = _dq_scale(by_out, inits, node.input[0]), _dq_scale(by_out, inits, node.input[1])
        if sx is None or sw is None:
            continue
        quotient = np.abs(onnx.numpy_helper.to_array(bias).astype(np.float64)) / np.maximum(sx * sw, 1e-30)
        if quotient.size and float(quotient.max()) > FP16_MAX:
            bad.append(node.name or node.output[0])
    return bad


def make_session(
    model: onnx.ModelProto,
    options: OrtOptions = DEFAULT_ORT,
    optimization: str = "all",
    optimized_model_path: str | None = None,
    spinning: bool = True,
) -> Any:
    """An ``InferenceSession`` over ``model`` as given (already ORT-runnable); ModelError if ORT refuses it."""
    import onnxruntime as ort  # noqa: PLC0415

    check_providers(options.providers)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = options.threads or min(4, os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    if not spinning:  # idle intra-op threads sleep: the cores go to work beside the session (histograms)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    opts.graph_optimization_level = levels[optimization]
    overflow = fp16_bias_overflows(model)
    disabled = list(_BIAS_TRANSFORMERS) if overflow else None
    if overflow:
        where = ", ".join(overflow[:5])
        (log.debug if where in _TOLD else log.info)("ONNX Runtime's bias quantization off: it would overflow FP16 at %s",
                                                    where)
        _TOLD.add(where)
    if optimized_model_path:
        opts.optimized_model_filepath = optimized_model_path
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=list(options.providers),
                                    disabled_optimizers=disabled)
    except Exception as exc:
        raise ModelError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None


class OrtRunner(Runner):
    """An ONNX Runtime session over the custom-op-rewritten model."""

    backend = "onnxruntime"

    def __init__(
        self,
        model: onnx.ModelProto,
        extra_outputs: Sequence[str] = (),
        threads: int | None = None,
        options: OrtOptions | None = None,
        spinning: bool = True,
    ) -> None:
        options = options or OrtOptions()
        if threads is not None:
            options = OrtOptions(options.providers, threads)
        rewritten = rewrite_for_onnxruntime(model)
        present = {o.name for o in rewritten.graph.output}
        inputs = set(graph_input_names(rewritten))
        # Shape inference is the slow part of building a runner on a large model: only
        # pay for it when intermediate tensors must be exposed.
        types = tensor_types(model) if extra_outputs else {}
        for name in extra_outputs:
            if name not in present and name not in inputs:
                rewritten.graph.output.append(
                    helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
        self.session = make_session(rewritten, options, spinning=spinning)
        self.options = options
        self.threads = self.session.get_session_options().intra_op_num_threads
        self.device = self.session.get_providers()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model_outputs = [o.name for o in model.graph.output]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else self.output_names
        values = self.session.run(names, dict(feeds))
        return dict(zip(names, values))

    def close(self) -> None:
        self.session = None


def integer_kernel_counts(model: onnx.ModelProto, options: OrtOptions = DEFAULT_ORT) -> dict[str, int]:
    """Op types in ONNX Runtime's optimized graph that run on integer data (QLinear*, int8 ops).

    Says what actually runs in integer arithmetic: ORT fuses only ``DQ -> op -> Q`` groups;
    the Q/DQ pairs it leaves compute as fake-quant in float.
    """
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="sppquant-ort-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        # ORT_ENABLE_EXTENDED: the serialisable level, same QDQ fusions as ORT_ENABLE_ALL.
        make_session(rewrite_for_onnxruntime(model), options, optimization="extended", optimized_model_path=path)
        opt = onnx.load(path)
    counts: dict[str, int] = {}
    for n in opt.graph.node:
        if n.op_type.startswith("QLinear") or n.op_type in ("QGemm", "MatMulInteger", "ConvInteger",
                                                            "DynamicQuantizeLinear") \
                or (n.op_type == "MaxPool" and any("quantized" in i for i in n.input)):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    counts["QuantizeLinear (left)"] = sum(n.op_type == "QuantizeLinear" for n in opt.graph.node)
    counts["DequantizeLinear (left)"] = sum(n.op_type == "DequantizeLinear" for n in opt.graph.node)
    return counts
