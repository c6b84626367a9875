"""FP32 -> FP16 ONNX conversion, small and explicit, plus a probe of ONNX Runtime's FP16 CPU kernels.

What ``convert_to_fp16`` does:

- every FLOAT initializer, ``Constant`` / ``ConstantOfShape`` value and ``Cast(to=FLOAT)``
  becomes FLOAT16 (values beyond +-65504 are clipped, and counted);
- the graph keeps its FP32 interface: a ``Cast`` to FLOAT16 after each float graph input
  and a ``Cast`` to FLOAT before each float graph output;
- nodes whose op type is in ``keep_fp32`` compute in FP32: their float inputs are cast to
  FLOAT right before them and their float outputs back to FLOAT16 right after. The values
  they read and write are therefore FP16-rounded (FP16 storage), the arithmetic is FP32
  (like TensorRT's FP16 kernels that accumulate in FP32);
- custom-op (plugin) nodes stay plugin nodes with FP16 I/O where their spec says the plugin
  supports FP16; ``sppquant.ops.rewrite_for_onnxruntime`` expands them for ONNX Runtime;
- Resize/Upsample ``roi``/``scales`` inputs stay FLOAT (the ONNX spec requires it).

ONNX Runtime's CPU provider lacks FP16 kernels for several ops (on x86-64 with ORT 1.31:
Conv, Gemm, ReduceMax, ...). Left alone, ORT silently wraps such nodes in Casts
(``InsertCastTransformer``). ``ort_fp16_fallbacks`` finds out which op types that hits
by asking ORT itself (it reads the Casts ORT inserted in its optimized graph), so the
report can name them, and ``ort_fp16_model`` keeps exactly those FP32 with explicit
Casts: the FP16 model the report runs hides nothing.

Control-flow subgraphs (If/Loop/Scan) are not converted: such models are refused.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sppquant.backends.onnxruntime import DEFAULT_ORT, OrtOptions, make_session
from sppquant.errors import ModelError
from sppquant.model import tensor_types
from sppquant.ops import find_op, rewrite_for_onnxruntime, upgrade_opset
from sppquant.ops.names import Names

log = logging.getLogger(__name__)

FP16_MAX = float(np.finfo(np.float16).max)
# Largest calibrated max|x| an activation may reach and still be computed and stored in FP16: a
# factor 4 below FP16_MAX, because calibration images only sample the inputs a deployment sees.
# Above it (a decomposed LayerNorm's squares, a detector's unnormalised sums) FP16 overflows to inf
# and the model's output is lost, as TensorRT users meet on FP16 engines; those tensors stay FP32.
FP16_SAFE_MAX = FP16_MAX / 4
# Inputs that the ONNX spec requires to be float32 whatever the data type.
FLOAT32_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}
REWRITE_IN_FP32_OPSET = 15  # from here the RoI SPP rewrite casts in and back itself (CastLike)


def _coordinate_inputs(node: onnx.NodeProto) -> tuple[int, ...]:
    """Input positions of a custom op that are not activations (RoI SPP's rois): they stay FP32."""
    spec = find_op(node)
    return () if spec is None else tuple(i for i in range(len(node.input)) if i not in spec.float_inputs)


def _keep_coordinates_fp32(node: onnx.NodeProto, new: onnx.NodeProto, rename: dict[str, str],
                           cast32: dict[str, str], names: Names) -> list[onnx.NodeProto]:
    """A plugin's coordinate inputs read the FP32 graph input, or an FP32 cast of an FP16 tensor."""
    pre = []
    for i in _coordinate_inputs(node):
        name = node.input[i]
        if name in rename or not name:
            new.input[i] = name
            continue
        if new.input[i] not in cast32:
            cast32[new.input[i]] = names.new(f"{new.input[i]}_fp32")
            pre.append(helper.make_node("Cast", [new.input[i]], [cast32[new.input[i]]],
                                        name=names.new(f"{new.input[i]}_to_fp32"), to=TensorProto.FLOAT))
        new.input[i] = cast32[new.input[i]]
    return pre


def _to_fp16_array(a: np.ndarray) -> tuple[np.ndarray, int]:
    a = np.asarray(a, dtype=np.float32)
    finite = np.isfinite(a)
    clipped = int(np.count_nonzero(finite & (np.abs(a) > FP16_MAX)))
    return np.where(finite, np.clip(a, -FP16_MAX, FP16_MAX), a).astype(np.float16), clipped


def convert_to_fp16(model: onnx.ModelProto, keep_fp32: Iterable[str] = (),
                    fp32_tensors: Iterable[str] = ()) -> onnx.ModelProto:
    """A copy of ``model`` computing in FP16 except ops in ``keep_fp32``; FP32 graph inputs/outputs.

    ``fp32_tensors``: activations whose values FP16 cannot hold (`FP16_SAFE_MAX`): they stay FP32,
    and every node that writes or reads one computes in FP32 (its other inputs are cast up, its
    other outputs cast back to FP16)."""
    keep = set(keep_fp32)
    wide = set(fp32_tensors)
    types = tensor_types(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ModelError(f"FP16 conversion does not support control-flow subgraphs (node {node.name or node.op_type!r})")
    names = Names(g)
    clipped = 0

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == TensorProto.FLOAT

    # Initializers that must stay FLOAT (Resize scales, ...).
    f32_inits = {node.input[i] for node in g.node for i in FLOAT32_INPUTS.get(node.op_type, ()) if i < len(node.input)}
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in f32_inits:
            arr, n = _to_fp16_array(numpy_helper.to_array(init))
            clipped += n
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            types[init.name] = TensorProto.FLOAT16

    head, rename, out_rename = _interface_casts(g, names, is_float)
    cast32: dict[str, str] = {}  # FP16 tensor -> its FP32 copy (shared by kept nodes)
    for t in wide:  # already FP32: nodes read a graph input under its FP16 copy's name, so map it back
        read_as = rename.get(t) or out_rename.get(t, t)
        cast32[read_as] = t if t in rename else read_as
    body: list[onnx.NodeProto] = []
    for node in g.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i, name in enumerate(new.input):
            if name in rename:
                new.input[i] = rename[name]
            elif name in out_rename:
                new.input[i] = out_rename[name]
        for i, name in enumerate(new.output):
            if name in out_rename:
                new.output[i] = out_rename[name]
        for attr in new.attribute:
            to_float = new.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT
            if to_float and node.output[0] not in wide:
                attr.i = TensorProto.FLOAT16
            elif new.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" \
                    and attr.t.data_type == TensorProto.FLOAT:
                arr, n = _to_fp16_array(numpy_helper.to_array(attr.t))
                clipped += n
                attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
        touches_wide = any(t in wide for t in list(node.input) + list(node.output))
        if (new.op_type in keep or touches_wide) and new.domain in ("", "ai.onnx"):
            body += _computed_in_fp32(node, new, is_float, types, f32_inits, cast32, names, wide)
        else:
            body += _keep_coordinates_fp32(node, new, rename, cast32, names) + [new]
    tail = [helper.make_node("Cast", [fp16], [orig], name=names.new(f"{orig}_to_fp32"), to=TensorProto.FLOAT)
            for orig, fp16 in out_rename.items()]
    del g.node[:]
    g.node.extend(head + body + tail)
    del g.value_info[:]  # intermediate types changed; ORT and shape inference re-derive them
    if clipped:
        log.warning("FP16 conversion clipped %d constant value(s) beyond +-%g", clipped, FP16_MAX)
    return out


def _interface_casts(g: onnx.GraphProto, names: Names, is_float: Callable[[str], bool]
                     ) -> tuple[list[onnx.NodeProto], dict[str, str], dict[str, str]]:
    """The Casts to FP16 after the float graph inputs, input -> its FP16 copy, and output -> the FP16 tensor
    computed for it (cast back to FP32 at the end): the graph keeps its FP32 interface."""
    rename: dict[str, str] = {}
    head: list[onnx.NodeProto] = []
    inits = {i.name for i in g.initializer}
    for vi in g.input:
        if is_float(vi.name) and vi.name not in inits:
            new = names.new(f"{vi.name}_fp16")
            head.append(helper.make_node("Cast", [vi.name], [new], name=names.new(f"{vi.name}_to_fp16"),
                                         to=TensorProto.FLOAT16))
            rename[vi.name] = new
    out_rename = {vi.name: names.new(f"{vi.name}_fp16") for vi in g.output if is_float(vi.name)}
    return head, rename, out_rename


def _computed_in_fp32(node: onnx.NodeProto, new: onnx.NodeProto, is_float: Callable[[str], bool],
                      types: dict[str, int], f32_inits: set[str], cast32: dict[str, str],
                      names: Names, wide: set[str] = frozenset()) -> list[onnx.NodeProto]:
    """``new`` between Casts: FP16 float inputs cast to FP32 before it (one cast per tensor, shared via
    ``cast32``), its float outputs cast back to FP16 after it, except outputs in ``wide`` (they stay
    FP32). ``node`` (the original) decides float-ness."""
    pre, post = [], []
    for i, name in enumerate(node.input):
        if (is_float(name) or types.get(name) == TensorProto.FLOAT16) and name not in f32_inits:
            src = new.input[i]
            if src not in cast32:
                cast32[src] = names.new(f"{src}_fp32")
                pre.append(helper.make_node("Cast", [src], [cast32[src]], name=names.new(f"{src}_to_fp32"),
                                            to=TensorProto.FLOAT))
            new.input[i] = cast32[src]
    for i, name in enumerate(node.output):
        if is_float(name) and name not in wide:
            dst = new.output[i]
            tmp = names.new(f"{dst}_fp32")
            new.output[i] = tmp
            post.append(helper.make_node("Cast", [tmp], [dst], name=names.new(f"{dst}_to_fp16"),
                                         to=TensorProto.FLOAT16))
    return pre + [new] + post


def ort_fp16_fallbacks(model: onnx.ModelProto, options: OrtOptions = DEFAULT_ORT) -> Counter:
    """Op types (with node counts) that ONNX Runtime's CPU provider runs in FP32 for ``model``.

    ``model`` must already be ORT-runnable (SPP rewritten). ORT's InsertCastTransformer
    wraps nodes that have no FP16 kernel in Casts named ``InsertedPrecisionFreeCast_*``;
    the nodes fed by such a Cast to FLOAT are the fallbacks.
    """
    with tempfile.TemporaryDirectory(prefix="sppquant-fp16-") as tmp:
        path = Path(tmp) / "optimized.onnx"
        try:  # no fusions: the optimized graph keeps the original op types
            make_session(model, options, optimization="none", optimized_model_path=str(path))
        except ModelError as exc:
            raise ModelError(f"the FP16 model: {exc}") from None
        optimized = onnx.load(str(path))
    inserted = {
        n.output[0] for n in optimized.graph.node
        if n.op_type == "Cast" and n.name.startswith("Inserted")
        and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)
    }
    return Counter(n.op_type for n in optimized.graph.node
                   if n.op_type != "Cast" and any(i in inserted for i in n.input))


def has_coordinate_inputs(node: onnx.NodeProto) -> bool:
    """A custom-op node with inputs that are not activations (RoI SPP's rois)."""
    return bool(_coordinate_inputs(node))


def _spread_into_rewrites(graph_model: onnx.ModelProto, wide: set[str], measured: set[str]) -> list[str]:
    """``wide`` plus the tensors a plugin's ONNX Runtime rewrite computes from them: calibration measured
    only the original graph's tensors, and a max pool's windows are as wide as its input."""
    out = set(wide)
    for node in graph_model.graph.node:
        if any(i in out for i in node.input):
            out.update(o for o in node.output if o and o not in measured)
    return sorted(out)


def ort_fp16_model(model: onnx.ModelProto, options: OrtOptions = DEFAULT_ORT, fp32_tensors: Iterable[str] = ()
                   ) -> tuple[onnx.ModelProto, list[str], list[str]]:
    """The FP16 model ONNX Runtime runs (SPP rewritten), the op types kept FP32 in it, and extra moves.

    Probes ORT once with everything in FP16; the op types ORT has no FP16 kernel for are
    then kept FP32 with explicit Casts. A second probe lists what ORT still moves to FP32
    on its own: InsertCastTransformer also runs FP16-capable nodes in FP32 when all their
    inputs come straight from an FP32 value (a "precision-free" move, e.g. the Sub/Where
    after the SPP rewrite's ReduceMax: max of FP16 values is exact in FP16 anyway). Those
    are returned as the third item so the report can name them too. Plugins with coordinate
    inputs (RoI SPP) are converted as plugin nodes (coordinates kept FP32) and rewritten
    afterwards at opset >= `REWRITE_IN_FP32_OPSET`, where their rewrite computes in FP32
    whatever its I/O type, as the plugin does. ``fp32_tensors``: see `convert_to_fp16`.
    """
    rewritten = rewrite_for_onnxruntime(model, select=lambda n: not has_coordinate_inputs(n))

    def runnable(m: onnx.ModelProto) -> onnx.ModelProto:
        return rewrite_for_onnxruntime(upgrade_opset(m, REWRITE_IN_FP32_OPSET, "the FP16 RoI SPP rewrite"))

    wide = _spread_into_rewrites(rewritten, set(fp32_tensors), {o for n in model.graph.node for o in n.output})
    keep = sorted(ort_fp16_fallbacks(runnable(convert_to_fp16(rewritten, fp32_tensors=wide)), options))
    final = runnable(convert_to_fp16(rewritten, keep_fp32=keep, fp32_tensors=wide))
    moved = sorted(ort_fp16_fallbacks(final, options))
    return final, keep, moved
