"""ONNX Runtime backend: load a model with SPP nodes, run it on CPU, expose activations.

The SPP node is rewritten into standard ops (`sppquant.spp.onnx`) in memory; the
file on disk is never touched. ``extra_outputs`` turns intermediate tensors into
graph outputs, which is how calibration observes activations batch by batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from sppquant.errors import ModelError
from sppquant.spp.onnx import is_spp_node, rewrite_for_onnxruntime

log = logging.getLogger(__name__)

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def load_model(path: str | Path, input_name: str | None = None) -> onnx.ModelProto:
    """Read an ONNX file; ModelError (one line) when it is missing, broken or lacks the input."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found" if not path.exists() else f"{path}: model path is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise ModelError(f"{path}: ONNX model has no nodes")
    if input_name is not None:
        names = graph_input_names(model)
        if input_name not in names:
            raise ModelError(f"{path}: model has no input named {input_name!r} (model.input_name); "
                             f"its inputs are: {', '.join(names) or 'none'}")
    return model


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor we can type; SPP outputs inherit their input's type."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # inference is best effort; unknown types are resolved at run time
        inferred = model
    types: dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:  # in topological order, so inputs are typed first
        if is_spp_node(node) and node.input[0] in types:
            types.setdefault(node.output[0], types[node.input[0]])
    return types


def activation_names(model: onnx.ModelProto) -> list[str]:
    """Float tensors of the original graph in execution order: inputs, then node outputs.

    Initializers (weights) are not activations; helper tensors of the ORT rewrite do
    not exist in the original graph, so they never appear here.
    """
    types = tensor_types(model)
    inits = {i.name for i in model.graph.initializer}
    names = [n for n in graph_input_names(model) if types.get(n) in FLOAT_TYPES]
    for node in model.graph.node:
        for out in node.output:
            if out and out not in inits and types.get(out, onnx.TensorProto.FLOAT) in FLOAT_TYPES:
                names.append(out)
    return list(dict.fromkeys(names))


class OrtRunner:
    """An ONNX Runtime CPU session over the SPP-rewritten model."""

    def __init__(
        self,
        model: onnx.ModelProto,
        extra_outputs: Sequence[str] = (),
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        rewritten = rewrite_for_onnxruntime(model)
        present = {o.name for o in rewritten.graph.output}
        inputs = set(graph_input_names(rewritten))
        # Shape inference is the slow part of building a runner on a large model: only
        # pay for it when intermediate tensors must be exposed (the report builds one
        # runner per table tensor, none of which need it).
        types = tensor_types(model) if extra_outputs else {}
        for name in extra_outputs:
            if name not in present and name not in inputs:
                rewritten.graph.output.append(
                    helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        threads = threads or min(4, os.cpu_count() or 1)
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(rewritten.SerializeToString(), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.model_outputs = [o.name for o in model.graph.output]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else self.output_names
        values = self.session.run(names, feeds)
        return dict(zip(names, values))
