"""Calibration table -> explicit-quantization ONNX (QuantizeLinear/DequantizeLinear) for TensorRT 10 and 11.

TensorRT 11 has no calibrators and no precision flags: a layer runs in the precision its
ONNX types say. This module writes that model; ``docs/tensorrt11.md`` says what an
engine built from it runs in INT8, FP16 and FP32.

Placement comes from the rule table in ``sppquant.quantize.rules`` (one rule per op type):

- An activation that feeds a quantized input gets ONE ``Q -> DQ`` pair right after its
  producer; every quantized consumer reads the DQ output, other consumers (Relu, Softmax,
  graph outputs, ...) keep reading the float tensor. Scale: the table's ``amax / 127``,
  zero point int8 0 (symmetric).
- Plugin ops: ``Q -> plugin -> DQ``. The plugin reads the INT8 tensor; its output is
  INT8 and the DQ after it carries the output scale (the input's when the rule ties it,
  so INT8 max-SPP copies values). ONNX Runtime runs this after
  ``sppquant.ops.plugin_io.dequantize_plugin_io``.
- Residual Add: the skip input gets Q/DQ so TensorRT fuses Conv + Add in INT8.
- Weights: per output channel, ``max|w| / 127`` (an all-zero channel gets scale 1, exact).
  Weights that are ``Constant`` nodes (or constant chains) are folded into initializers
  first. Any Conv/ConvTranspose/Gemm/MatMul weight left unquantized is logged as a warning
  with the reason. Biases stay float: TensorRT adds them in the fused kernel.
- ``high_precision="fp16"`` (the default; what TensorRT 11 users need) stores everything
  that is not INT8 in FP16: weights, biases, Q/DQ scales (so DQ outputs are FP16, which
  needs opset >= 19; the model is converted) and every float op, with Casts keeping the
  graph's inputs and outputs as the user's model has them. ``"fp32"`` keeps them FP32.

Opset >= 13 is required (per-axis Q/DQ); models below that are refused rather than
silently upgraded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sppquant.calibration.table import CalibrationTable
from sppquant.errors import ModelError, TableError
from sppquant.model import input_side_tensors, reader_counts
from sppquant.ops import default_opset
from sppquant.ops.names import Names
from sppquant.quantize.bias_correction import Correction, correct_biases
from sppquant.quantize.fake import QMAX, QMIN, fake_quantize, weight_scales  # noqa: F401 - re-exported
from sppquant.quantize.fold import fold_weight_constants
from sppquant.quantize.rules import MIN_GEMM_DIM, QdqRule, RuleTable, default_rules
from sppquant.quantize.weight_rounding import RoundedWeight

log = logging.getLogger(__name__)

MIN_OPSET = 13
FP16_OPSET = 19  # first opset whose QuantizeLinear/DequantizeLinear take FP16 scales
HIGH_PRECISIONS = ("fp16", "fp32")
# Smallest Q/DQ scale an FP16 graph keeps: FP16's smallest normal number (2**-14), so every
# dequantized value is 0 or a normal FP16 number and 1/scale stays finite in FP16. Measured on a
# real CTC recognizer (ddddocr): one weight channel at scale 3e-6 made ONNX Runtime's FP16 Conv
# return 467 where the FP32 export gives 0.094 (output SQNR 25.7 dB FP32 base, 6.8 dB FP16 base;
# 25.6 dB with this floor). The mechanism was not isolated: a synthetic conv with the same scale
# did not reproduce it.
FP16_MIN_SCALE = float(np.finfo(np.float16).tiny)



def few(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def table_mismatch(table: CalibrationTable, activations: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(missing, extra)``: model activations the table lacks, table entries the model lacks."""
    acts = list(activations)
    have = set(table.scales)
    missing = [n for n in acts if n not in have]
    extra = sorted(have - set(acts))
    return missing, extra


def check_table_matches(table: CalibrationTable, activations: Iterable[str], source: str, model: str) -> None:
    """Refuse a table whose tensors are not exactly the model's activations (TableError).

    The report uses this (its per-layer analysis needs every activation); the export only
    needs the tensors its placement quantizes (``export_qdq``).
    """
    missing, extra = table_mismatch(table, activations)
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} model tensor(s) missing from the table: {few(missing)}")
    if extra:
        parts.append(f"{len(extra)} table tensor(s) not in the model: {few(extra)}")
    raise TableError(f"{source}: calibration table does not match {model}: {'; '.join(parts)} "
                     "(calibrated for another model? rerun sppquant calibrate)")


def model_tensor_names(model: onnx.ModelProto) -> set[str]:
    """Every tensor name the graph has: inputs, outputs, initializers, node inputs and outputs."""
    g = model.graph
    names = {i.name for i in g.input} | {o.name for o in g.output} | {i.name for i in g.initializer}
    for node in g.node:
        names.update(node.input)
        names.update(node.output)
    names.discard("")
    return names


@dataclass
class QdqInfo:
    """What ``build_qdq_model`` inserted, and which placement it followed."""

    # tensor -> the tensor holding its dequantized value as ONNX Runtime runs the model
    # (for a tensor only a plugin reads, the DQ that ``dequantize_plugin_io`` inserts).
    activations: dict[str, str] = field(default_factory=dict)
    weights: dict[str, tuple[str, int]] = field(default_factory=dict)  # initializer -> (DQ output, axis)
    skipped: list[str] = field(default_factory=list)  # why some quantizable inputs stayed float
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> inputs, outputs, scales, tied
    residual_adds: dict[str, list[str]] = field(default_factory=dict)  # Add node -> its quantized skip inputs
    unquantized_weights: dict[str, str] = field(default_factory=dict)  # Conv/Gemm/MatMul weight -> why
    act_scales: dict[str, str] = field(default_factory=dict)  # tensor -> its scale initializer (shared by its Q/DQ)
    folded_weights: list[str] = field(default_factory=list)  # Constant-node weights made initializers
    bias_corrections: list[Correction] = field(default_factory=list)  # layers whose bias absorbed dW . E[x]
    rounded_weights: list[str] = field(default_factory=list)  # weights on GPTQ grid points (`weight_rounding`)
    fp32_tensors: list[str] = field(default_factory=list)  # FP16 base: activations kept FP32 (past FP16's range)
    input_side: list[str] = field(default_factory=list)  # input-side activations left unquantized (first layers)
    high_precision: str = "fp32"
    placement: str = ""  # one line for reports: which placement this model follows


@dataclass
class _Plan:
    """Which tensors get what, decided before any node is written."""

    consumers: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # tensor -> (node, input) reading DQ
    plugin_in: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # tensor -> (node, input) reading Q
    plugin_out: dict[str, tuple[int, str | None]] = field(default_factory=dict)  # output -> (node, tied input)
    weights: dict[str, int] = field(default_factory=dict)  # initializer -> axis
    weight_uses: dict[str, list[tuple[int, int]]] = field(default_factory=dict)


def _gemm_dims(node: onnx.NodeProto, w: onnx.TensorProto) -> tuple[int, int] | None:
    """``(K, N)`` of a 2-D constant GEMM weight."""
    if len(w.dims) != 2:
        return None
    trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    n, k = (w.dims[0], w.dims[1]) if trans_b else (w.dims[1], w.dims[0])
    return int(k), int(n)


def _weight(plan: _Plan, info: QdqInfo, rule: QdqRule, node: onnx.NodeProto, k: int,
            inits: dict[str, onnx.TensorProto]) -> None:
    """Plan the weight input of node ``k``, or record why it stays float."""
    name = node.input[rule.weight_input] if rule.weight_input is not None and rule.weight_input < len(node.input) else ""
    if not name:
        return
    init = inits.get(name)
    label = f"{name} ({node.op_type} {node.name or k})"
    if init is None:
        if rule.weight_input not in rule.activations:  # Gemm/MatMul B: quantized as an activation
            info.unquantized_weights[label] = "computed at run time (not constant-foldable): left float"
        return
    axis = rule.weight_axis(node, len(init.dims)) if rule.weight_axis else None
    if init.data_type != TensorProto.FLOAT:
        info.unquantized_weights[label] = f"initializer of type {TensorProto.DataType.Name(init.data_type)}: left as is"
    elif axis is None:
        info.unquantized_weights[label] = f"no per-channel axis for this {node.op_type} (rank {len(init.dims)}, " \
                                          "grouped?): left float"
    elif plan.weights.setdefault(name, axis) != axis:
        info.unquantized_weights[label] = "used with two different channel axes: left float"
        info.skipped.append(f"{name}: used with two different channel axes, left FP32")
    else:
        plan.weight_uses.setdefault(name, []).append((k, rule.weight_input))


def _is_const(name: str, inits: Mapping[str, onnx.TensorProto]) -> bool:
    return name in inits


_FUSIBLE_CHAIN = frozenset({"Relu", "BatchNormalization", "Clip", "LeakyRelu", "Identity", "Add", "Mul", "Sub", "Div"})


def _backbone(name: str, producer: dict[str, tuple[int, onnx.NodeProto]], readers: dict[str, int],
              inits: Mapping[str, onnx.TensorProto]) -> int | None:
    """Index of the Conv/ConvTranspose that TensorRT can fuse into a consumer of ``name``, or None.

    Walks back through BN, activations and constant bias/scale ops, each output read once.
    """
    while name in producer and readers.get(name, 0) == 1:
        k, node = producer[name]
        if node.op_type in ("Conv", "ConvTranspose") and node.domain in ("", "ai.onnx"):
            return k
        if node.op_type not in _FUSIBLE_CHAIN:
            return None
        dynamic = [i for i in node.input if i and not _is_const(i, inits)]
        if len(dynamic) != 1 or (node.op_type in ("Add", "Mul", "Sub", "Div") and len(node.input) != 2):
            return None
        name = dynamic[0]
    return None


def _residual_skip_inputs(node: onnx.NodeProto, producer: dict[str, tuple[int, onnx.NodeProto]],
                          readers: dict[str, int], depth: dict[str, int],
                          inits: Mapping[str, onnx.TensorProto]) -> list[int]:
    """Input indices of a residual Add that get Q/DQ: the input(s) not fused with a Conv (ModelOpt's rule)."""
    if len(node.input) != 2 or any(_is_const(i, inits) or i not in producer for i in node.input):
        return []
    bb = [_backbone(i, producer, readers, inits) for i in node.input]
    if bb[0] is None and bb[1] is None or bb[0] == bb[1]:
        return []
    if bb[0] is not None and bb[1] is not None:
        # the longer branch fuses; on a tie the second input does (ModelOpt's tie-break)
        fused = 0 if depth.get(node.input[0], 0) > depth.get(node.input[1], 0) else 1
    else:
        fused = 0 if bb[0] is not None else 1
    return [1 - fused]


def _depths(graph: onnx.GraphProto) -> dict[str, int]:
    """Longest path (in nodes) from the graph inputs to each tensor; graph order is topological."""
    depth: dict[str, int] = {}
    for node in graph.node:
        d = 1 + max((depth.get(i, 0) for i in node.input if i), default=0)
        for o in node.output:
            depth[o] = d
    return depth


def _small_gemm(node: onnx.NodeProto, rule: QdqRule, k: int, inits: dict[str, onnx.TensorProto],
                info: QdqInfo) -> bool:
    """True (and recorded) when a Gemm/MatMul's constant weight is too small for INT8 to pay off."""
    w = node.input[rule.weight_input] if rule.weight_input is not None and rule.weight_input < len(node.input) else ""
    dims = _gemm_dims(node, inits[w]) if rule.min_gemm_dim and w in inits else None
    if dims is None or min(dims) >= rule.min_gemm_dim:
        return False
    why = f"K={dims[0]}, N={dims[1]} < {rule.min_gemm_dim}: GEMV-sized, the whole {node.op_type} stays float"
    info.unquantized_weights[f"{w} ({node.op_type} {node.name or k})"] = why
    info.skipped.append(f"{node.name or node.op_type}: {why}")
    return True


def _plan(graph: onnx.GraphProto, rules: RuleTable, inits: dict[str, onnx.TensorProto], info: QdqInfo,
          quantize_weights: bool, only: list[str] | None) -> _Plan:
    """Apply the rule table to every node (or, with ``only``, pair exactly those tensors for all their readers)."""
    plan = _Plan()
    producer = {o: (k, n) for k, n in enumerate(graph.node) for o in n.output}
    readers = reader_counts(graph, outputs_read=True)
    depth = _depths(graph)
    for k, node in enumerate(graph.node):
        if only is not None:
            for i, name in enumerate(node.input):
                if name in only:
                    plan.consumers.setdefault(name, []).append((k, i))
        rule = rules.get(node)
        if rule is None or (only is not None and not quantize_weights):
            continue  # the analysis mode without weights needs no rule
        if rule.min_gemm_dim and _small_gemm(node, rule, k, inits, info):
            continue
        if quantize_weights and rule.weight_input is not None:
            _weight(plan, info, rule, node, k, inits)
        if only is not None:
            continue
        idxs = rule.activations
        if rule.residual:
            idxs = tuple(_residual_skip_inputs(node, producer, readers, depth, inits))
            if idxs:
                info.residual_adds[node.name or f"Add_{k}"] = [node.input[i] for i in idxs]
        for i in idxs:
            name = node.input[i] if i < len(node.input) else ""
            if not name or name in inits or (name in plan.plugin_out and not rule.plugin):
                continue  # constants; a plugin's output is already dequantized for float readers
            (plan.plugin_in if rule.plugin else plan.consumers).setdefault(name, []).append((k, i))
        if rule.plugin:
            tied = node.input[0] if rule.tie_output and node.input and node.input[0] not in inits else None
            for o in node.output:
                if o:
                    plan.plugin_out[o] = (k, tied)
    return plan


def _keep(plan: _Plan, graph: onnx.GraphProto, keep: set[str]) -> None:
    """Drop the activation pairs of ``keep`` (and the INT8 output of a plugin whose input is kept), and the
    weight pairs of the layers reading them: a kept tensor's readers run wholly in the high precision, as
    TensorRT 10 runs them under a plan (no range -> no INT8 layer), not as weight-only INT8."""
    if not keep:
        return
    readers = {k for t in keep for k, _ in plan.consumers.get(t, [])}
    for w in list(plan.weight_uses):
        uses = [u for u in plan.weight_uses[w] if u[0] not in readers]
        if uses:
            plan.weight_uses[w] = uses
        else:
            del plan.weight_uses[w]
    for t in keep:
        plan.consumers.pop(t, None)
        plan.plugin_in.pop(t, None)
    plan.plugin_out = {o: v for o, v in plan.plugin_out.items() if graph.node[v[0]].input[0] not in keep}


def _scale_source(plan: _Plan, tensor: str) -> str:
    """The table tensor whose scale ``tensor`` uses: itself, or (plugin outputs) the input it is tied to."""
    seen = set()
    while tensor in plan.plugin_out and plan.plugin_out[tensor][1] is not None and tensor not in seen:
        seen.add(tensor)
        tensor = plan.plugin_out[tensor][1]
    return tensor


def _check_scales(plan: _Plan, scales: Mapping[str, float]) -> None:
    """Every scale the placement needs must be in the table and usable (TableError with the list)."""
    need = [_scale_source(plan, t) for t in [*plan.consumers, *plan.plugin_in, *plan.plugin_out]]
    need = list(dict.fromkeys(need))
    missing = [n for n in need if n not in scales]
    if missing:
        raise TableError(f"calibration table has no scale for {len(missing)} tensor(s) the Q/DQ placement "
                         f"quantizes: {few(missing, 20)}")
    bad = [n for n in need if not (np.isfinite(scales[n]) and scales[n] > 0)]
    if bad:
        raise TableError(f"calibration table has unusable (zero/NaN) scales for: {few(bad, 20)}")


def _pair(names: Names, tensor: str, scale: str, zero: str, axis: int | None, dq: bool
          ) -> tuple[list[onnx.NodeProto], str, str]:
    """``Q`` (and ``DQ`` when ``dq``) for ``tensor``: nodes, Q output, DQ output (reserved if not written)."""
    extra = {"axis": axis} if axis is not None else {}
    q_out = names.new(f"{tensor}_quantized")
    dq_out = names.new(f"{tensor}_dequantized")
    nodes = [helper.make_node("QuantizeLinear", [tensor, scale, zero], [q_out],
                              name=names.new(f"{tensor}_QuantizeLinear"), **extra)]
    if dq:
        nodes.append(helper.make_node("DequantizeLinear", [q_out, scale, zero], [dq_out],
                                      name=names.new(f"{tensor}_DequantizeLinear"), **extra))
    return nodes, q_out, dq_out


class _Scales:
    """Scale/zero-point initializers, one pair per tensor, shared by every Q/DQ of that tensor."""

    def __init__(self, names: Names, scales: Mapping[str, float],
                 weight_scales_given: Mapping[str, np.ndarray] | None = None) -> None:
        self.names, self.scales, self.pairs, self.inits = names, scales, {}, []
        self.given = weight_scales_given or {}

    def act(self, tensor: str) -> tuple[str, str]:
        if tensor not in self.pairs:
            s, z = self.names.new(f"{tensor}_act_scale"), self.names.new(f"{tensor}_act_zero_point")
            self.inits += [numpy_helper.from_array(np.asarray(self.scales[tensor], np.float32), s),
                           numpy_helper.from_array(np.zeros((), np.int8), z)]
            self.pairs[tensor] = (s, z)
        return self.pairs[tensor]

    def weight(self, name: str, w: np.ndarray, axis: int) -> tuple[str, str]:
        scale = self.given[name] if name in self.given else weight_scales(w, axis)
        s, z = self.names.new(f"{name}_weight_scale"), self.names.new(f"{name}_weight_zero_point")
        self.inits += [numpy_helper.from_array(scale, s), numpy_helper.from_array(np.zeros(scale.shape, np.int8), z)]
        return s, z


def _usable_rounding(plan: _Plan, inits: Mapping[str, onnx.TensorProto],
                     rounded: Mapping[str, RoundedWeight]) -> dict[str, RoundedWeight]:
    """The given roundings of weights this plan quantizes on the same axis, with the initializer's shape."""
    return {w: r for w, r in rounded.items() if w in plan.weight_uses and plan.weights.get(w) == r.axis
            and w in inits and tuple(inits[w].dims) == r.values.shape}


def _emit(graph: onnx.GraphProto, plan: _Plan, scales: Mapping[str, float], info: QdqInfo,
          inits: dict[str, onnx.TensorProto], weight_scales_given: Mapping[str, np.ndarray] | None = None) -> None:
    """Write the planned Q/DQ nodes into ``graph`` (in place), in topological order."""
    names = Names(graph)
    sc = _Scales(names, scales, weight_scales_given)
    read_as: dict[tuple[int, int], str] = {}  # (node, input) -> the tensor it reads instead
    after: dict[str, list[onnx.NodeProto]] = {}  # tensor -> nodes right after its producer
    head: list[onnx.NodeProto] = []
    produced = {o for n in graph.node for o in n.output}
    for t in dict.fromkeys([*plan.consumers, *plan.plugin_in]):
        if t in plan.plugin_out:
            continue
        nodes, q_out, dq_out = _pair(names, t, *sc.act(t), None, dq=t in plan.consumers)
        read_as.update({use: dq_out for use in plan.consumers.get(t, [])})
        read_as.update({use: q_out for use in plan.plugin_in.get(t, [])})
        info.activations[t] = dq_out
        (after.setdefault(t, []) if t in produced else head).extend(nodes)
    int8: dict[str, str] = {}  # plugin output -> the INT8 tensor the plugin now writes
    for o in plan.plugin_out:
        int8[o] = names.new(f"{o}_quantized")
        after.setdefault(o, []).append(helper.make_node("DequantizeLinear", [int8[o], *sc.act(_scale_source(plan, o))],
                                                        [o], name=names.new(f"{o}_DequantizeLinear")))
        info.activations[o] = o
    for t, uses in plan.plugin_in.items():
        if t in int8:
            read_as.update({use: int8[t] for use in uses})
    for w, axis in plan.weights.items():
        if w in plan.weight_uses:
            nodes, _, dq_out = _pair(names, w, *sc.weight(w, numpy_helper.to_array(inits[w]), axis), axis, dq=True)
            head += nodes
            read_as.update({use: dq_out for use in plan.weight_uses[w]})
            info.weights[w] = (dq_out, axis)
    body: list[onnx.NodeProto] = []
    for k, node in enumerate(graph.node):
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i in range(len(new.input)):
            new.input[i] = read_as.get((k, i), new.input[i])
        for j, o in enumerate(new.output):
            new.output[j] = int8.get(o, o)
        body.append(new)
        for o in node.output:
            body += after.get(o, [])
    _record_plugins(graph, plan, scales, info)  # before the nodes are replaced: plan indices refer to them
    del graph.node[:]
    graph.node.extend(head + body)
    graph.initializer.extend(sc.inits)
    info.act_scales.update({t: pair[0] for t, pair in sc.pairs.items()})


def _record_plugins(graph: onnx.GraphProto, plan: _Plan, scales: Mapping[str, float], info: QdqInfo) -> None:
    by_node: dict[int, list[str]] = {}
    for o, (k, _) in plan.plugin_out.items():
        by_node.setdefault(k, []).append(o)
    ins: dict[int, list[str]] = {}
    for t, uses in plan.plugin_in.items():
        for k, _ in uses:
            ins.setdefault(k, []).append(t)
    for k, outs in by_node.items():
        tied = any(plan.plugin_out[o][1] is not None for o in outs)
        src_in = [_scale_source(plan, t) for t in ins.get(k, [])]
        node = graph.node[k]
        info.plugins[node.name or f"{node.op_type}_{k}"] = {
            "op": f"{node.domain}::{node.op_type}",
            "inputs": ins.get(k, []), "outputs": outs, "tied": tied,
            "input_scales": [float(scales[s]) for s in src_in],
            "output_scales": [float(scales[_scale_source(plan, o)]) for o in outs],
        }


def _upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Opset >= 19, where Q/DQ take FP16 scales (ModelOpt's FP16 export does the same)."""
    if default_opset(model) >= FP16_OPSET:
        return model
    from onnx import version_converter

    try:
        out = version_converter.convert_version(model, FP16_OPSET)
    except Exception as exc:
        raise ModelError(f"FP16 Q/DQ export needs opset >= {FP16_OPSET} (FP16 scales) and ONNX cannot convert this "
                         f"model: {str(exc).splitlines()[0]} (export with high_precision='fp32')") from None
    out.ir_version = max(out.ir_version, 9)
    return out


def _to_fp16(model: onnx.ModelProto, fp32_tensors: Iterable[str] = ()) -> onnx.ModelProto:
    """The non-INT8 part in FP16 (fp16.convert_to_fp16), Q/DQ scales FP16; FP32 graph I/O kept;
    ``fp32_tensors`` (values FP16 cannot hold) and the nodes writing or reading them stay FP32.

    Scales below `FP16_MIN_SCALE` (or that underflow to 0) are raised to it: Q and DQ share the
    scale, so the channel stays consistent, with a coarser step for values that small (a weight
    channel of max|w| < 127 * 2**-14 = 0.0078 keeps fewer levels; its absolute error stays < 2**-15).
    """
    from sppquant.quantize.fp16 import convert_to_fp16

    out = convert_to_fp16(model, fp32_tensors=fp32_tensors)
    qdq_scales = {n.input[1] for n in out.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    raised = []
    for init in out.graph.initializer:
        if init.name in qdq_scales and init.data_type == TensorProto.FLOAT16:
            a = numpy_helper.to_array(init).copy()
            low = ~(a >= FP16_MIN_SCALE)
            if low.any():
                a[low] = FP16_MIN_SCALE
                init.CopyFrom(numpy_helper.from_array(a, init.name))
                raised.append(init.name)
    if raised:
        log.warning("%d Q/DQ scale(s) below FP16's normal range raised to %g (see FP16_MIN_SCALE): %s",
                    len(raised), FP16_MIN_SCALE, few(raised))
    return out


def _describe(rules: RuleTable, only: list[str] | None, high_precision: str) -> str:
    if only is not None:
        return f"analysis: Q/DQ on {few(only)} only, for all readers; rest {high_precision.upper()}"
    ops = "/".join(r.op_type for r in rules if not r.plugin and not r.residual)
    plugins = "/".join(r.op_type for r in rules if r.plugin)
    return (f"TensorRT explicit quantization: Q/DQ on inputs of {ops} (GEMMs with K or N < {MIN_GEMM_DIM} stay "
            f"float) and on residual-Add skip inputs; Q -> op -> DQ around {plugins} (INT8 I/O); weights per "
            f"output channel; everything else {high_precision.upper()}")


def build_qdq_model(
    model: onnx.ModelProto,
    table: CalibrationTable | Mapping[str, float] | None,
    only: Iterable[str] | None = None,
    quantize_weights: bool = True,
    high_precision: str | None = None,
    rules: RuleTable | None = None,
    keep_high_precision: Iterable[str] = (),
    channel_means: Mapping[str, np.ndarray] | None = None,
    rounded_weights: Mapping[str, RoundedWeight] | None = None,
    fp32_tensors: Iterable[str] = (),
    quantize_input_layer: bool = True,
) -> tuple[onnx.ModelProto, QdqInfo]:
    """A copy of ``model`` with Q/DQ placed by ``rules`` (default: ``rules.default_rules()``).

    ``table`` maps tensor -> scale. ``high_precision``: ``"fp16"`` or ``"fp32"`` for the part
    that is not INT8; None means ``"fp16"`` (TensorRT 11) except with ``only``. ``only`` is
    the report's per-layer analysis mode: a pair on each named tensor for ALL its readers,
    no rules, FP32 unless asked otherwise. ``keep_high_precision``: activations that get no
    Q/DQ (a precision plan from ``sppquant tune``): their readers run in the high precision.
    ``channel_means`` (layer input -> per-channel mean, from calibration): the bias of every layer
    whose weights get INT8 absorbs the rounding's mean shift (`bias_correction`).
    ``rounded_weights`` (weight -> its INT8 values and scales, `weight_rounding`): these weights take
    those grid points instead of the nearest ones (same per-channel scales); their layers get no bias
    correction. ``fp32_tensors`` (FP16 base only): activations whose calibrated range FP16 cannot hold
    (`fp16.FP16_SAFE_MAX`); they get no Q/DQ and stay FP32 with the nodes that write or read them.
    ``quantize_input_layer=False``: the input side (`model.input_side_tensors`: the image up to the first
    weighted layers) gets no Q/DQ, so those layers run in the high precision (`calibration.input_layer`).
    """
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ModelError(f"Q/DQ export needs ONNX opset >= {MIN_OPSET} (per-axis QuantizeLinear), model has {opset}")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise ModelError("model already has QuantizeLinear/DequantizeLinear nodes: quantize its FP32 original")
    hp = high_precision or ("fp32" if only is not None else "fp16")
    if hp not in HIGH_PRECISIONS:
        raise ValueError(f"high_precision must be one of {HIGH_PRECISIONS}, got {high_precision!r}")
    scales = dict(table.scales) if isinstance(table, CalibrationTable) else dict(table or {})
    rules = rules or default_rules()
    only_list = list(dict.fromkeys(only)) if only is not None else None
    info = QdqInfo(high_precision=hp)
    if quantize_weights:
        slots = [n.input[r.weight_input] for n in model.graph.node
                 if (r := rules.get(n)) is not None and r.weight_input is not None and r.weight_input < len(n.input)]
        out, info.folded_weights = fold_weight_constants(model, slots)
    else:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    if hp == "fp16":
        out = _upgrade_opset(out)
    inits = {i.name: i for i in out.graph.initializer}
    plan = _plan(out.graph, rules, inits, info, quantize_weights, only_list)
    wide = sorted(set(fp32_tensors)) if hp == "fp16" else []
    front = input_side_tensors(out) if not quantize_input_layer and only is None else set()
    info.input_side = sorted(front & set(plan.consumers))
    _keep(plan, out.graph, set(keep_high_precision) | set(wide) | front)
    _check_scales(plan, scales)
    rounded = _usable_rounding(plan, inits, rounded_weights or {})
    if channel_means:  # for weights rounded to nearest: GPTQ's objective already holds the input mean, and
        # correcting on top of it lost 0.1-4 dB of output SQNR on the three real models (RESULTS.md)
        uses = [(k, w, plan.weights[w]) for w, ks in plan.weight_uses.items() for k, slot in ks
                if slot == 1 and w not in rounded]
        info.bias_corrections = correct_biases(out.graph, uses, channel_means)
        inits = {i.name: i for i in out.graph.initializer}
    for w, r in rounded.items():  # the Q of a grid value with its own scale returns its integer exactly
        inits[w].CopyFrom(numpy_helper.from_array(r.values, w))
    info.rounded_weights = sorted(rounded)
    _emit(out.graph, plan, scales, info, inits, {w: r.scales for w, r in rounded.items()})
    if hp == "fp16":
        out = _to_fp16(out, wide)
        info.fp32_tensors = wide
    info.placement = _describe(rules, only_list, hp)
    if wide:
        info.placement += f"; {len(wide)} tensor(s) past FP16's range kept FP32"
    if info.input_side:
        info.placement += f"; the first layers' input ({few(info.input_side)}) left {hp.upper()}"
    if info.rounded_weights:
        info.placement += f"; {len(info.rounded_weights)} weight(s) GPTQ-rounded"
    if info.bias_corrections:
        info.placement += f"; {len(info.bias_corrections)} layer bias(es) corrected for INT8 weight rounding"
    if info.unquantized_weights:
        log.warning("%d Conv/Gemm/MatMul weight(s) not quantized: %s", len(info.unquantized_weights),
                    "; ".join(f"{k}: {v}" for k, v in info.unquantized_weights.items()))
    return out, info
def check_qdq_model(model: onnx.ModelProto, source: str = "Q/DQ model") -> None:
    """onnx.checker with full_check (strict shape inference); the SPP custom op has no schema, which is fine."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ModelError(f"{source} fails onnx.checker: {str(exc).splitlines()[0]}") from None


def quantized_tensors(model: onnx.ModelProto) -> set[str]:
    """Activations that are INT8 in ``model``: read by a QuantizeLinear, or written by the DQ after a plugin."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    graph_in = {i.name for i in model.graph.input}
    casts = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast" and n.input[0] in graph_in}
    quantized = {casts.get(n.input[0], n.input[0]) for n in model.graph.node  # FP16 export: Q reads the input's Cast
                 if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    quantized |= {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"
                  and n.input[0] not in inits and producer.get(n.input[0], "QuantizeLinear") != "QuantizeLinear"}
    return quantized
