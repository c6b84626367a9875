"""Calibration table -> explicit-quantization ONNX (QuantizeLinear/DequantizeLinear pairs).

The result is what TensorRT 10 and 11 take for explicit quantization and what ONNX
Runtime runs as INT8 (its QDQ selectors fuse ``DQ -> op -> Q`` groups into integer
kernels when the session's graph optimizations are on). The report's INT8 numbers come
from exactly this model.

Placement, following TensorRT's explicit-quantization guidance ("Q/DQ on the inputs of
quantizable layers", DESIGN.md §2):

- Activations: a tensor that feeds a quantizable op gets ONE ``Q -> DQ`` pair right
  after its producer; every quantizable consumer reads the DQ output, other consumers
  (Relu, Flatten, Softmax, graph outputs, ...) keep reading the FP32 tensor. Scale: the
  table's per-tensor scale (``amax / 127``, float32), zero point int8 0 (symmetric).
  Quantizable ops: Conv, Gemm, MatMul, MaxPool, AveragePool, GlobalAveragePool,
  GlobalMaxPool and the SPP plugin node. Conv/Gemm outputs are not quantized themselves:
  TensorRT fuses Conv+Relu and quantizes the fused output where the next quantizable
  layer's input Q sits, which is the Relu output's scale from the table.
- Weights: Conv ``W`` (axis 0), Gemm ``B`` (axis 0 with ``transB=1``, axis 1 with
  ``transB=0``: always the output channel) and a constant 2-D MatMul ``B`` (axis 1) get a
  per-channel ``Q -> DQ`` pair on the float initializer, scale ``max|w| / 127`` per
  output channel (float32; an all-zero channel gets scale 1, which represents it
  exactly). The FP32 weights stay in the file; TensorRT and ONNX Runtime fold the Q.
- Biases stay FP32: TensorRT adds them in the fused kernel, and INT32 Q/DQ is not a
  TensorRT input.
- The SPP node stays the ``sppquant::SpatialPyramidPooling`` plugin node; with its
  input quantized it runs with INT8 I/O in TensorRT. ONNX Runtime runs it after
  ``sppquant.spp.onnx.rewrite_for_onnxruntime``.

Opset >= 13 is required (per-axis Q/DQ); models below that are refused rather than
silently upgraded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sppquant.calibration.table import CalibrationTable
from sppquant.errors import ModelError, TableError
from sppquant.ops import default_opset, find_op

log = logging.getLogger(__name__)

QUANTIZABLE_OPS = frozenset(
    {"Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
)
MIN_OPSET = 13
QMIN, QMAX = -128, 127


def is_quantizable(node: onnx.NodeProto) -> bool:
    return find_op(node) is not None or (node.domain in ("", "ai.onnx") and node.op_type in QUANTIZABLE_OPS)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def is_activation_input(node: onnx.NodeProto, idx: int) -> bool:
    """Inputs of a quantizable op that get activation Q/DQ: the data input, B of Gemm/MatMul when B
    is itself an activation (not an initializer), and a custom op's inputs its spec's Q/DQ rule names."""
    spec = find_op(node)
    if spec is not None:
        return idx in spec.qdq.inputs
    return idx == 0 or (idx == 1 and node.op_type in ("Gemm", "MatMul") and node.domain in ("", "ai.onnx"))


def weight_axis(node: onnx.NodeProto, input_index: int, rank: int) -> int | None:
    """The output-channel axis of a weight input, or None when that input is not a weight."""
    if node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "Conv" and input_index == 1:
        return 0  # (O, I/groups, kh, kw)
    if node.op_type == "Gemm" and input_index == 1 and rank == 2:
        return 0 if _attr(node, "transB", 0) else 1  # B is (N, K) with transB=1, else (K, N)
    if node.op_type == "MatMul" and input_index == 1 and rank == 2:
        return 1  # (K, N)
    return None


def fake_quantize(x: np.ndarray, scale: float | np.ndarray, axis: int | None = None) -> np.ndarray:
    """NumPy reference of ``DequantizeLinear(QuantizeLinear(x))``: int8, zero point 0, half-to-even."""
    x = np.asarray(x, dtype=np.float32)
    s = np.asarray(scale, dtype=np.float32)
    if axis is not None and s.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = s.size
        s = s.reshape(shape)
    q = np.clip(np.rint(x / s), QMIN, QMAX)  # np.rint rounds half to even, as ONNX does
    return (q * s).astype(np.float32)


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Per-output-channel ``max|w| / 127`` in float32; all-zero channels get 1.0."""
    w = np.asarray(w, dtype=np.float32)
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    maxabs = np.abs(w).max(axis=reduce) if reduce else np.abs(w)
    scales = (maxabs.astype(np.float32) / np.float32(127.0)).astype(np.float32)
    scales[~(scales > 0)] = 1.0
    return scales


def table_mismatch(table: CalibrationTable, activations: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(missing, extra)``: model activations the table lacks, table entries the model lacks."""
    acts = list(activations)
    have = set(table.scales)
    missing = [n for n in acts if n not in have]
    extra = sorted(have - set(acts))
    return missing, extra


def check_table_matches(table: CalibrationTable, activations: Iterable[str], source: str, model: str) -> None:
    """Refuse a table whose tensors are not exactly the model's activations (TableError)."""
    missing, extra = table_mismatch(table, activations)
    if not missing and not extra:
        return

    def few(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} model tensor(s) missing from the table: {few(missing)}")
    if extra:
        parts.append(f"{len(extra)} table tensor(s) not in the model: {few(extra)}")
    raise TableError(f"{source}: calibration table does not match {model}: {'; '.join(parts)} "
                     "(calibrated for another model? rerun sppquant calibrate)")


@dataclass
class QdqInfo:
    """What ``build_qdq_model`` inserted."""

    activations: dict[str, str] = field(default_factory=dict)  # tensor -> its DQ output
    weights: dict[str, tuple[str, int]] = field(default_factory=dict)  # initializer -> (DQ output, axis)
    skipped: list[str] = field(default_factory=list)  # why some quantizable inputs stayed FP32


class _Names:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.used = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}
        for node in graph.node:
            self.used.update(node.input)
            self.used.update(node.output)
            self.used.add(node.name)

    def new(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def _qdq_pair(names: _Names, tensor: str, scale: np.ndarray, axis: int | None, kind: str
              ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    scale = np.asarray(scale, dtype=np.float32)
    s_name = names.new(f"{tensor}_{kind}_scale")
    z_name = names.new(f"{tensor}_{kind}_zero_point")
    q_out = names.new(f"{tensor}_quantized")
    dq_out = names.new(f"{tensor}_dequantized")
    inits = [numpy_helper.from_array(scale, s_name), numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name)]
    extra = {"axis": axis} if axis is not None else {}
    nodes = [
        helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out], name=names.new(f"{tensor}_QuantizeLinear"), **extra),
        helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=names.new(f"{tensor}_DequantizeLinear"), **extra),
    ]
    return nodes, inits, dq_out


def build_qdq_model(
    model: onnx.ModelProto,
    table: CalibrationTable | Mapping[str, float] | None,
    only: Iterable[str] | None = None,
    quantize_weights: bool = True,
) -> tuple[onnx.ModelProto, QdqInfo]:
    """A copy of ``model`` with Q/DQ pairs; see the module docstring for the placement.

    ``table`` maps tensor -> scale (a CalibrationTable or a plain mapping). ``only``
    restricts activation Q/DQ to those tensors and disables the consumer rule (a pair is
    inserted on each named tensor for ALL its consumers): the per-layer "local" analysis
    quantizes one tensor at a time this way, with ``quantize_weights=False``.
    """
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ModelError(f"Q/DQ export needs ONNX opset >= {MIN_OPSET} (per-axis QuantizeLinear), model has {opset}")
    scales = dict(table.scales) if isinstance(table, CalibrationTable) else dict(table or {})
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    names = _Names(graph)
    info = QdqInfo()
    inits = {i.name: i for i in graph.initializer}
    graph_inputs = {i.name for i in graph.input}

    # 1. Which activations get a pair, which weights.
    want: list[str] = []
    weight_uses: dict[str, int] = {}
    if only is not None:
        want = list(dict.fromkeys(only))
    for node in graph.node:
        if not is_quantizable(node):
            continue
        for idx, name in enumerate(node.input):
            if not name:
                continue
            if name in inits:
                if quantize_weights and name not in graph_inputs:
                    axis = weight_axis(node, idx, len(inits[name].dims))
                    if axis is not None and inits[name].data_type == TensorProto.FLOAT:
                        if weight_uses.setdefault(name, axis) != axis:
                            info.skipped.append(f"{name}: used with two different channel axes, left FP32")
                continue
            if only is None and is_activation_input(node, idx):
                want.append(name)
    want = list(dict.fromkeys(want))
    missing = [n for n in want if n not in scales]
    if missing:
        raise TableError(f"calibration table has no scale for {len(missing)} quantized tensor(s): "
                         f"{', '.join(missing[:5])}")
    bad = [n for n in want if not (np.isfinite(scales[n]) and scales[n] > 0)]
    if bad:
        raise TableError(f"calibration table has unusable (zero/NaN) scales for: {', '.join(bad[:5])}")

    # 2. Build the pairs: for graph inputs and weights up front, for node outputs after the producer.
    pairs: dict[str, tuple[list[onnx.NodeProto], str]] = {}
    new_inits: list[onnx.TensorProto] = []
    for name in want:
        nodes, extra, dq = _qdq_pair(names, name, np.float32(scales[name]), None, "act")
        pairs[name] = (nodes, dq)
        new_inits += extra
        info.activations[name] = dq
    weight_pairs: dict[str, tuple[list[onnx.NodeProto], str]] = {}
    for name, axis in weight_uses.items():
        w = numpy_helper.to_array(inits[name])
        nodes, extra, dq = _qdq_pair(names, name, weight_scales(w, axis), axis, "weight")
        weight_pairs[name] = (nodes, dq)
        new_inits += extra
        info.weights[name] = (dq, axis)

    produced_by_node = {o for n in graph.node for o in n.output}
    head: list[onnx.NodeProto] = []
    for name, (nodes, _) in list(pairs.items()):
        if name not in produced_by_node:
            head += nodes  # graph input
    for nodes, _ in weight_pairs.values():
        head += nodes
    body: list[onnx.NodeProto] = []
    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        if only is not None or is_quantizable(node):
            for idx, name in enumerate(new.input):
                if name in pairs and (only is not None or is_activation_input(node, idx)):
                    new.input[idx] = pairs[name][1]
                elif name in weight_pairs and is_quantizable(node) and weight_axis(node, idx, len(inits[name].dims)) \
                        == weight_uses.get(name):
                    new.input[idx] = weight_pairs[name][1]
        body.append(new)
        for o in node.output:
            if o in pairs:
                body += pairs[o][0]
    del graph.node[:]
    graph.node.extend(head + body)
    graph.initializer.extend(new_inits)
    return out, info


def check_qdq_model(model: onnx.ModelProto, source: str = "Q/DQ model") -> None:
    """onnx.checker with full_check (strict shape inference); the SPP custom op has no schema, which is fine."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ModelError(f"{source} fails onnx.checker: {str(exc).splitlines()[0]}") from None


def quantized_tensors(model: onnx.ModelProto) -> set[str]:
    """Activation tensors that a QuantizeLinear reads in ``model`` (weights excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
