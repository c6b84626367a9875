"""GPTQ rounding of INT8 weights: choose each weight's rounding so the layer's OUTPUT error is small.

Round-to-nearest minimises each weight's own error; but a layer's output error is ``dW x``, and
with correlated inputs the errors of neighbouring weights can cancel there. GPTQ (Frantar et al.
2022, after Optimal Brain Quantization) rounds one input column at a time and moves the not yet
rounded columns by the error's least-squares compensation under the input second moment
``H = E[x x^T]``. The scales stay the per-output-channel ``max|w| / 127`` the export and TensorRT
use, so the result is an ordinary INT8 weight tensor: only which grid point each weight takes
changes. Measured on real models (benchmarks/RESULTS.md) weight-only output error drops by
10-13 dB, the whole INT8 model's by 0.3-3 dB.

This module knows no backend: `RoundingPass` takes the layers' FP32 inputs batch by batch (a
`LayerGram` per layer accumulates ``H`` from sampled convolution windows) and rounds them with
`gptq_round`; `sppquant.pipeline.weight_rounding` runs the model over calibration images for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper
from tqdm import tqdm

from sppquant.model import node_attribute
from sppquant.quantize.fake import weight_scales

log = logging.getLogger(__name__)

DAMPING = 0.01  # of the mean diagonal of H, added to it: GPTQ's default; keeps H invertible
BLOCK = 128  # columns rounded between two matrix updates of the rest (GPTQ's lazy batches)
MAX_WINDOWS = 512  # sampled output positions per batch and layer (all of them when fewer)
GRAM_BUDGET = 2 << 30  # bytes of float64 second moments held at once; the widest layers past it stay nearest


@dataclass(frozen=True)
class RoundedWeight:
    """One weight tensor on the INT8 grid: ``values = k * scale`` (k integer in [-127, 127]) per output channel."""

    values: np.ndarray  # float32, the weight's shape
    scales: np.ndarray  # float32, one per output channel (``axis``)
    axis: int


def _ints(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    return list(node_attribute(node, name, default))


@dataclass
class LayerGram:
    """``H = E[x x^T]`` of one layer's input windows, per group: (groups, D, D) with D = C/groups x kernel area.

    Gemm: every input row is a sample (D = in features); MatMul with a constant (K, N) weight: rows of
    its ``(..., K)`` input, sampled like conv positions. Conv (2-D only): a random sample of output
    positions per batch (``MAX_WINDOWS``), each window's values in (channel, ky, kx) order, the
    order of the weight's flattened input dimension.
    """

    node: onnx.NodeProto
    kernel: tuple[int, int] = (1, 1)
    groups: int = 1
    seed: int = 0
    gram: np.ndarray | None = None
    count: int = 0
    _rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def update(self, x: np.ndarray) -> None:
        if self.node.op_type == "Conv":
            cols = self._windows(np.asarray(x, np.float32))
        else:
            cols = np.asarray(x, np.float32).reshape(1, -1, x.shape[-1])
            if self.node.op_type == "MatMul" and cols.shape[1] > MAX_WINDOWS:  # (..., K) rows: like conv positions
                cols = cols[:, np.sort(self._rng.choice(cols.shape[1], MAX_WINDOWS, replace=False))]
        part = np.matmul(cols.transpose(0, 2, 1), cols).astype(np.float64)  # float32 BLAS per batch, float64 sums
        self.gram = part if self.gram is None else self.gram + part
        self.count += cols.shape[1]

    def _windows(self, x: np.ndarray) -> np.ndarray:
        """(groups, samples, D) windows of the conv input at sampled output positions."""
        kh, kw = self.kernel
        sh, sw = (_ints(self.node, "strides", [1, 1]) + [1, 1])[:2]
        dh, dw = (_ints(self.node, "dilations", [1, 1]) + [1, 1])[:2]
        pads = _pads(self.node, x.shape[2:], (kh, kw), (sh, sw), (dh, dw))
        xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
        n, c, h, w = xp.shape
        oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (w - (kw - 1) * dw - 1) // sw + 1
        total = n * oh * ow
        pick = self._rng.choice(total, MAX_WINDOWS, replace=False) if total > MAX_WINDOWS else np.arange(total)
        b, rest = np.divmod(pick, oh * ow)
        y, xx = np.divmod(rest, ow)
        out = np.empty((len(pick), c, kh * kw), np.float32)
        for ky in range(kh):
            for kx in range(kw):
                out[:, :, ky * kw + kx] = xp[b, :, y * sh + ky * dh, xx * sw + kx * dw]
        g = self.groups
        return out.reshape(len(pick), g, -1).transpose(1, 0, 2)

    def second_moment(self) -> np.ndarray:
        assert self.gram is not None and self.count > 0
        return self.gram / self.count


def _pads(node: onnx.NodeProto, size: tuple[int, ...], k: tuple[int, int], s: tuple[int, int],
          d: tuple[int, int]) -> list[int]:
    """Begin/end pads as ONNX Conv applies them (explicit ``pads`` or ``auto_pad``)."""
    auto = node_attribute(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i in range(2):
            total = max((-(-size[i] // s[i]) - 1) * s[i] + (k[i] - 1) * d[i] + 1 - size[i], 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return [out[0][0], out[1][0], out[0][1], out[1][1]]
    if auto == "VALID":
        return [0, 0, 0, 0]
    return (_ints(node, "pads", [0, 0, 0, 0]) + [0, 0, 0, 0])[:4]


def gram_for(node: onnx.NodeProto, weight: np.ndarray, seed: int) -> LayerGram | None:
    """A `LayerGram` for a Conv (2-D kernel), Gemm or MatMul (2-D weight) whose weight is ``weight``; else None."""
    if node.op_type == "Conv" and weight.ndim == 4:
        groups = int(node_attribute(node, "group", 1))
        return LayerGram(node, (int(weight.shape[2]), int(weight.shape[3])), groups, seed)
    if node.op_type == "Gemm" and weight.ndim == 2 and not int(node_attribute(node, "transA", 0)):
        return LayerGram(node, seed=seed)
    if node.op_type == "MatMul" and weight.ndim == 2:
        return LayerGram(node, seed=seed)
    return None


def _rows(node: onnx.NodeProto, w: np.ndarray, axis: int, groups: int) -> np.ndarray:
    """The weight as (groups, outputs per group, D): rows are output channels, columns the window order."""
    if node.op_type == "Conv":
        return w.reshape(groups, w.shape[0] // groups, -1).astype(np.float64)
    return (w if axis == 0 else w.T).reshape(1, -1, w.shape[1 - axis]).astype(np.float64)


def gptq_round(rows: np.ndarray, h: np.ndarray, scales: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """Rounded weights (same shape as ``rows``: (G, K, D)) on the grid ``k * scales`` (scales (G, K)).

    For each group: columns are rounded in order; each rounding error, divided by the pivot of the
    upper Cholesky factor of ``H^-1``, is propagated to the later columns (GPTQ's update), so the
    output error ``E[((W - Q) x)^2]`` stays close to its least-squares minimum.
    """
    w = rows.astype(np.float32)  # the updates in float32 (BLAS sgemm; inverse and Cholesky in float64)
    hd = h.astype(np.float64)
    diag = np.einsum("gdd->gd", hd)
    dead = diag <= 0
    idx = np.arange(hd.shape[1])
    hd[:, idx, idx] = np.where(dead, 1.0, diag + damping * np.maximum(diag.mean(axis=1, keepdims=True), 1e-30))
    upper = np.swapaxes(np.linalg.cholesky(np.linalg.inv(hd)), 1, 2).astype(np.float32)  # H^-1 = U^T U
    s = scales.astype(np.float32)[:, :, None]
    q = np.empty_like(w)
    d = w.shape[2]
    for a in range(0, d, BLOCK):  # GPTQ's lazy batch updates: columns after the block move once, by a matmul
        b = min(a + BLOCK, d)
        block, ublock = w[:, :, a:b], upper[:, a:b, a:b]
        errs = np.empty_like(block)
        for j in range(b - a):
            qj = np.clip(np.rint(block[:, :, j:j + 1] / s), -127, 127) * s
            q[:, :, a + j:a + j + 1] = qj
            err = (block[:, :, j:j + 1] - qj) / ublock[:, None, j:j + 1, j:j + 1][:, :, :, 0]
            block[:, :, j:] -= err * ublock[:, None, j, j:]
            errs[:, :, j:j + 1] = err
        if b < d:
            w[:, :, b:] -= errs @ upper[:, a:b, b:]
    return q.astype(np.float64)


def round_layer(node: onnx.NodeProto, weight: np.ndarray, axis: int, gram: LayerGram) -> RoundedWeight:
    """GPTQ-rounded ``weight`` of ``node`` from its accumulated input second moment."""
    w = np.asarray(weight, np.float32)
    scales = weight_scales(w, axis)
    groups = gram.groups
    rows = _rows(node, w, axis, groups)
    q = gptq_round(rows, gram.second_moment(), scales.reshape(groups, -1))
    if node.op_type == "Conv":
        values = q.reshape(w.shape)
    else:
        flat = q.reshape(-1, rows.shape[2])
        values = flat if axis == 0 else flat.T
    return RoundedWeight(np.ascontiguousarray(values, np.float32), scales, axis)


def _same_layer(a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    """Same op and attributes: one weight's readers then see their inputs through the same windows."""
    return a.op_type == b.op_type and sorted(x.SerializeToString() for x in a.attribute) == \
        sorted(x.SerializeToString() for x in b.attribute)


def layers_to_round(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str, int, tuple[str, ...]]]:
    """(first reader, weight initializer, output-channel axis, the readers' data inputs) of every Conv / Gemm /
    MatMul weight (MatMul: (K, N), output channels on axis 1) whose readers all are such layers with the same
    attributes, reading it as their weight: an RNN unrolled over time reuses one weight at every step, and its
    rounding then answers the inputs of all of them."""
    inits = {i.name for i in model.graph.initializer}
    uses: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name in inits:
                uses.setdefault(name, []).append(n if i == 1 else None)  # None: read some other way
    out = []
    for w, readers in uses.items():
        first = readers[0]
        if first is None or first.op_type not in ("Conv", "Gemm", "MatMul") or len(first.input) < 2:
            continue
        if any(r is None or not _same_layer(first, r) or r.input[0] in inits for r in readers):
            continue
        trans_b = int(node_attribute(first, "transB", 0))
        axis = 0 if first.op_type == "Conv" or trans_b else 1
        out.append((first, w, axis, tuple(dict.fromkeys(r.input[0] for r in readers))))
    return out


class RoundingPass:
    """Feed it the FP32 values of `inputs` batch by batch (`observe`), then `result()` rounds every layer."""

    def __init__(self, model: onnx.ModelProto, seed: int = 0, budget: int = GRAM_BUDGET) -> None:
        layers = layers_to_round(model)
        names = {w for _, w, _, _ in layers}
        self.weights = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer
                        if i.name in names}
        self.layers: list[tuple[onnx.NodeProto, str, int, LayerGram]] = []
        self.sources: dict[str, tuple[str, ...]] = {}  # weight -> the data inputs of its readers
        for k, (node, w, axis, sources) in enumerate(layers):
            gram = gram_for(node, self.weights[w], seed + k)
            if gram is not None:
                self.layers.append((node, w, axis, gram))
                self.sources[w] = sources
        self.skipped = self._fit_budget(budget)
        self.inputs = list(dict.fromkeys(t for _, w, _, _ in self.layers for t in self.sources[w]))

    def _fit_budget(self, budget: int) -> list[str]:
        """Drop the widest layers (they keep round-to-nearest) until the second moments fit ``budget`` bytes."""
        def size(entry: tuple) -> int:  # (groups, D, D) float64; D = one output channel's weights (Conv)
            node, w, axis, gram = entry
            d = self.weights[w][0].size if node.op_type == "Conv" else self.weights[w].shape[1 - axis]
            return gram.groups * d * d * 8
        total, dropped = sum(size(e) for e in self.layers), set()
        for entry in sorted(self.layers, key=size, reverse=True):
            if total <= budget:
                break
            total -= size(entry)
            dropped.add(entry[1])
        skipped = [node.name or w for node, w, _, _ in self.layers if w in dropped]
        self.layers = [e for e in self.layers if e[1] not in dropped]
        if skipped:
            log.warning("GPTQ: %d layer(s) keep round-to-nearest weights: their input second moments would pass "
                        "%.1f GiB (%s)", len(skipped), budget / 2**30, ", ".join(skipped[:5]))
        return skipped

    def observe(self, values: Mapping[str, np.ndarray]) -> None:
        for node, w, _, gram in self.layers:
            xs = [values[t] for t in self.sources[w]]
            if len(xs) > 1 and node.op_type != "Conv":  # a shared GEMM weight: one product for all its readers
                xs = [np.concatenate([x.reshape(-1, x.shape[-1]) for x in xs])]
            for x in xs:
                gram.update(x)

    def result(self, progress: bool = False) -> dict[str, RoundedWeight]:
        out: dict[str, RoundedWeight] = {}
        failed = []
        for node, w, axis, gram in tqdm(self.layers, desc="weight rounding (GPTQ)", unit="layer", disable=not progress):
            if gram.count == 0:
                continue
            try:
                out[w] = round_layer(node, self.weights[w], axis, gram)
            except np.linalg.LinAlgError:
                failed.append(node.name or w)
        if failed:
            log.warning("GPTQ: %d layer(s) kept round-to-nearest weights (input second moment not invertible): %s",
                        len(failed), ", ".join(failed[:5]))
        return out
