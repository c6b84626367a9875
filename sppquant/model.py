"""ONNX model facts every layer needs: loading with one-line errors, inputs, tensor types, activations.

Backend-free on purpose: calibration, quantization, reports and both backends ask the
same questions of a model, and the answers must not depend on which backend runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from sppquant.errors import ModelError
from sppquant.ops import find_op

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


def graph_output_names(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output]


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor we can type; custom-op outputs inherit their first input's type."""
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
        spec = find_op(node)
        if spec is not None and node.input[spec.float_inputs[0]] in types:
            types.setdefault(node.output[0], types[node.input[spec.float_inputs[0]]])
    return types


def activation_names(model: onnx.ModelProto) -> list[str]:
    """Float tensors of the original graph in execution order: inputs, then node outputs.

    Initializers (weights) are not activations; helper tensors of the ONNX Runtime
    rewrite do not exist in the original graph, so they never appear here. Neither are
    tensors read only as a plugin's coordinates (RoI SPP's ``rois``): they stay FP32.
    """
    types = tensor_types(model)
    inits = {i.name for i in model.graph.initializer}
    names = [n for n in graph_input_names(model) if types.get(n) in FLOAT_TYPES]
    for node in model.graph.node:
        for out in node.output:
            if out and out not in inits and types.get(out, onnx.TensorProto.FLOAT) in FLOAT_TYPES:
                names.append(out)
    coords = coordinate_only_tensors(model)
    return [n for n in dict.fromkeys(names) if n not in coords]


def weighted_layer_inputs(model: onnx.ModelProto) -> dict[str, int]:
    """Data inputs of Conv and Gemm (transA = 0) nodes: tensor -> its channel axis (1).

    Their per-channel means are what bias correction needs (`sppquant.quantize.bias_correction`).
    """
    out: dict[str, int] = {}
    for node in model.graph.node:
        if not node.input or not node.input[0]:
            continue
        if node.op_type == "Conv" or (node.op_type == "Gemm" and not any(
                a.name == "transA" and a.i for a in node.attribute)):
            out.setdefault(node.input[0], 1)
    return out


WEIGHTED_LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def input_side_tensors(model: onnx.ModelProto) -> set[str]:
    """Float tensors computed from the graph inputs and constants alone, before any weighted layer
    (normalisation, padding, space-to-depth of the image): the inputs of the network's first layers.

    A node's float outputs belong here only when every float activation it reads does, so a layer
    that also reads features (a RoI op reading the image-side boxes) ends the input side there.
    """
    types = tensor_types(model)
    consts = {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type in ("Constant", "ConstantOfShape") for o in n.output}
    front = {i.name for i in model.graph.input if types.get(i.name) == onnx.TensorProto.FLOAT} - consts
    for node in model.graph.node:
        floats = [i for i in node.input if i and types.get(i) == onnx.TensorProto.FLOAT and i not in consts]
        if node.op_type in WEIGHTED_LAYERS or not floats or not all(i in front for i in floats):
            continue
        front.update(o for o in node.output if types.get(o) == onnx.TensorProto.FLOAT)
    return front


def coordinate_only_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors whose every consumer is a custom op reading them outside its ``float_inputs`` (coordinates)."""
    coord: set[str] = set()
    other: set[str] = set()
    for node in model.graph.node:
        spec = find_op(node)
        for i, name in enumerate(node.input):
            (coord if spec is not None and i not in spec.float_inputs else other).add(name)
    outputs = {o.name for o in model.graph.output}
    return coord - other - outputs


def input_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Declared shape of every graph input: ints for fixed dims, names for symbolic ones, None unknown."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, list[int | str | None]] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims: list[int | str | None] = []
        for d in vi.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        out[vi.name] = dims
    return out


def node_attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name`` (ints, floats, lists, bytes as ONNX stores them), else ``default``."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def reader_counts(graph: onnx.GraphProto, outputs_read: bool = False) -> dict[str, int]:
    """How many node inputs read each tensor (``outputs_read``: a graph output counts as one more reader)."""
    readers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    if outputs_read:
        for o in graph.output:
            readers[o.name] = readers.get(o.name, 0) + 1
    return readers
