"""Where Q/DQ goes, per op type: the placement rules of the Q/DQ export, as data.

One ``QdqRule`` per op type says which inputs are activations that get a ``Q -> DQ`` pair,
which input is a weight (and its output-channel axis), and whether the op is a plugin
that runs with INT8 I/O. ``build_qdq_model`` only interprets this table; a new op (for
example a custom op spec of the op registry) brings its own rule through ``with_rules``.

Sources (DESIGN.md §2; TensorRT "Explicit Quantization": Q/DQ layer-placement
recommendations, Q/DQ interaction with plugins; NVIDIA ModelOpt ``modelopt/onnx/quantization``):

- Conv / ConvTranspose / Gemm / MatMul: Q/DQ on the data input and on the weight, per
  output channel. TensorRT fuses ``DQ -> Conv (+bias, +Relu, +residual Add)`` into one INT8
  kernel and quantizes the fused output where the next Q sits.
- Pooling and Resize: Q/DQ on the data input; TensorRT runs them in INT8 (they commute
  with per-tensor quantization).
- Residual Add: the input that does NOT come from the Conv being fused (the skip branch)
  gets Q/DQ; TensorRT then fuses Conv + Add in INT8. The Conv branch's input gets none:
  it is the fused Conv's own output (ModelOpt: ``build_non_residual_input_map``).
- Plugins: ``Q -> plugin -> DQ`` (no DQ before, no Q after): TensorRT hands the plugin INT8
  tensors and the scales in ``PluginTensorDesc.scale``. An op that cannot widen a range
  (max/avg pooling, SPP) gets its input's scale on its output, so INT8 max-SPP is an exact
  copy and needs no requantization.
- Small GEMMs: a Gemm/MatMul whose weight has K or N below ``MIN_GEMM_DIM`` stays in float
  (ModelOpt's ``_MIN_MATMUL_DIM``: INT8 tensor-core kernels need K, N >= 16; such layers
  cost nothing in float and only add quantization error; numbers in benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import onnx

from sppquant.model import node_attribute
from sppquant.ops import OPS, OpSpec

MIN_GEMM_DIM = 16
STANDARD_DOMAINS = ("", "ai.onnx")

# A weight's output-channel axis from (node, weight rank); None: not a weight this rule quantizes.
AxisFn = Callable[[onnx.NodeProto, int], "int | None"]


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return int(node_attribute(node, name, default))


def _conv_axis(node: onnx.NodeProto, rank: int) -> int | None:
    return 0  # (O, I/groups, kh, kw)


def _conv_transpose_axis(node: onnx.NodeProto, rank: int) -> int | None:
    # (I, O/groups, kh, kw): the output channel is axis 1 (ONNX Runtime's and ModelOpt's choice).
    return 1 if _attr(node, "group", 1) == 1 else None


def _gemm_axis(node: onnx.NodeProto, rank: int) -> int | None:
    return (0 if _attr(node, "transB", 0) else 1) if rank == 2 else None  # B is (N, K) or (K, N)


def _matmul_axis(node: onnx.NodeProto, rank: int) -> int | None:
    return 1 if rank == 2 else None  # (K, N)


@dataclass(frozen=True)
class QdqRule:
    """How one op type is quantized; see the module docstring for why each rule is what it is."""

    op_type: str
    domain: str = ""
    activations: tuple[int, ...] = (0,)  # input indices that get Q/DQ when they are activations
    weight_input: int | None = None  # input index of the weight (an initializer after folding)
    weight_axis: AxisFn | None = None
    min_gemm_dim: int = 0  # a constant 2-D weight with K or N below this: the whole op stays float (0: no limit)
    residual: bool = False  # Add: only the skip input(s) get Q/DQ, where TensorRT fuses Conv + Add
    plugin: bool = False  # Q -> op -> DQ: the op reads and writes INT8
    tie_output: bool = False  # plugin output scale = its input's (the op cannot widen a range)
    why: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.op_type)


DEFAULT_RULES: tuple[QdqRule, ...] = (
    QdqRule("Conv", weight_input=1, weight_axis=_conv_axis, why="INT8 conv, fused bias/Relu/residual Add"),
    QdqRule("ConvTranspose", weight_input=1, weight_axis=_conv_transpose_axis,
            why="INT8 deconvolution, weight per output channel (axis 1; grouped: left float)"),
    QdqRule("Gemm", activations=(0, 1), weight_input=1, weight_axis=_gemm_axis, min_gemm_dim=MIN_GEMM_DIM,
            why="INT8 GEMM; K or N < 16 stays float"),
    QdqRule("MatMul", activations=(0, 1), weight_input=1, weight_axis=_matmul_axis, min_gemm_dim=MIN_GEMM_DIM,
            why="INT8 GEMM; K or N < 16 stays float"),
    QdqRule("MaxPool", why="INT8 pooling"),
    QdqRule("AveragePool", why="INT8 pooling"),
    QdqRule("GlobalAveragePool", why="INT8 pooling"),
    QdqRule("GlobalMaxPool", why="INT8 pooling"),
    QdqRule("Resize", why="INT8 resize (data input only; roi/scales/sizes stay as they are)"),
    QdqRule("Add", activations=(0, 1), residual=True, why="residual Add: skip input quantized, fused with the Conv"),
)


def plugin_rule(spec: OpSpec) -> QdqRule:
    """A custom op's rule, from its spec in the op registry (`sppquant.ops.OPS`)."""
    q = spec.qdq
    tied = "output scale = input scale (it cannot widen the range)" if q.output_tied_to is not None else \
        "output scale from the table"
    return QdqRule(spec.op_type, domain=spec.domain, activations=q.inputs, plugin=q.int8_io,
                   tie_output=q.output_tied_to is not None,
                   why=f"plugin with {'INT8' if q.int8_io else 'float'} I/O; {tied}")


class RuleTable:
    """Rules by ``(domain, op_type)``; ``""`` and ``"ai.onnx"`` are the same domain."""

    def __init__(self, rules: Iterable[QdqRule]) -> None:
        self._rules: dict[tuple[str, str], QdqRule] = {}
        for rule in rules:
            self._rules[(_domain(rule.domain), rule.op_type)] = rule

    def get(self, node: onnx.NodeProto) -> QdqRule | None:
        return self._rules.get((_domain(node.domain), node.op_type))

    def with_rules(self, extra: Iterable[QdqRule]) -> RuleTable:
        """A copy where ``extra`` adds or replaces rules (e.g. a plugin op's own rule)."""
        return RuleTable([*self._rules.values(), *extra])

    def __iter__(self) -> Iterator[QdqRule]:
        return iter(self._rules.values())

    def describe(self) -> str:
        """One line per rule, for QdqInfo.placement and the docs."""
        return "; ".join(f"{r.op_type}: {r.why}" for r in self._rules.values())


def _domain(domain: str) -> str:
    return "" if domain in STANDARD_DOMAINS else domain


def default_rules(extra: Iterable[QdqRule] | Mapping[str, QdqRule] = ()) -> RuleTable:
    """The standard ops' rules, every registered custom op's rule, then ``extra``."""
    values = extra.values() if isinstance(extra, Mapping) else extra
    return RuleTable(DEFAULT_RULES).with_rules([plugin_rule(spec) for spec in OPS.values()]).with_rules(values)
