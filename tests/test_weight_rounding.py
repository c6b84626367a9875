"""GPTQ weight rounding: against a slow Optimal-Brain-Quantization reference, its objective, conv windows
against ONNX's reference Conv, the Q/DQ export carrying the rounded grid points, and the pipeline pass."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from sppquant.quantize.bias_correction import mean_shift
from sppquant.quantize.fake import fake_quantize, weight_scales
from sppquant.quantize.qdq import build_qdq_model
from sppquant.quantize.weight_rounding import DAMPING, LayerGram, RoundedWeight, RoundingPass, gptq_round, round_layer

ROOT = Path(__file__).resolve().parents[1]


def _obq_reference(w: np.ndarray, h: np.ndarray, s: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """One row at a time, the textbook OBQ step: quantize column j, then move the remaining columns F by
    -(w_j - q_j) / [H_F^-1]_jj * [H_F^-1]_{F, j}, with H_F^-1 the explicit inverse of H restricted to F."""
    h = h.copy()
    d = np.diag(h).copy()
    h[np.diag_indices_from(h)] = d + damping * d.mean()
    out = np.empty_like(w)
    for r in range(w.shape[0]):
        row = w[r].astype(np.float64).copy()
        for j in range(len(row)):
            q = np.clip(np.rint(row[j] / s[r]), -127, 127) * s[r]
            rest = np.arange(j, len(row))
            hinv = np.linalg.inv(h[np.ix_(rest, rest)])
            row[rest] -= (row[j] - q) / hinv[0, 0] * hinv[:, 0]
            row[j] = q
            out[r, j] = q
    return out


def _correlated(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    mix = rng.normal(size=(d, d)) * 0.6 + np.eye(d)
    return rng.normal(size=(n, d)) @ mix + 0.3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gptq_equals_the_obq_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = _correlated(rng, 400, 7)
    w = rng.normal(size=(5, 7)) * 0.2
    s = weight_scales(w.astype(np.float32), 0).astype(np.float64) * 9.0  # coarse grid: many rounding choices
    h = x.T @ x / len(x)
    got = gptq_round(w[None], h[None], s[None])[0]
    np.testing.assert_allclose(got, _obq_reference(w, h, s), rtol=0, atol=1e-6)  # float32 updates


@pytest.mark.parametrize("seed", range(6))
def test_gptq_lowers_the_output_error_and_stays_on_the_grid(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    x = _correlated(rng, 2000, 24)
    w = rng.normal(size=(2, 6, 24)) * 0.1  # two groups
    s = np.stack([weight_scales(g.astype(np.float32), 0) for g in w]).astype(np.float64)
    h = np.stack([x.T @ x / len(x)] * 2)
    q = gptq_round(w, h, s)
    k = q / s[:, :, None]
    np.testing.assert_allclose(k, np.rint(k), atol=1e-4)
    assert np.abs(k).max() <= 127 + 1e-4
    nearest = np.clip(np.rint(w / s[:, :, None]), -127, 127) * s[:, :, None]
    err = [((x @ (w[g] - q[g]).T) ** 2).mean() for g in range(2)]
    err_nearest = [((x @ (w[g] - nearest[g]).T) ** 2).mean() for g in range(2)]
    assert all(e < en for e, en in zip(err, err_nearest))
    assert sum(err) < 0.85 * sum(err_nearest)  # measured 0.33-0.80 per group over these seeds


def _conv_node(group: int, pads: list[int], strides: list[int], dil: list[int], auto_pad: str | None = None):
    attrs = {"group": group, "strides": strides, "dilations": dil}
    attrs.update({"auto_pad": auto_pad} if auto_pad else {"pads": pads})
    return helper.make_node("Conv", ["x", "w"], ["y"], name="c", **attrs)


@pytest.mark.parametrize("group,pads,strides,dil,auto_pad", [
    (1, [1, 0, 2, 1], [1, 1], [1, 1], None),
    (2, [0, 1, 1, 0], [2, 1], [1, 2], None),
    (4, [0, 0, 0, 0], [2, 2], [1, 1], "SAME_UPPER"),
    (1, [0, 0, 0, 0], [1, 2], [1, 1], "SAME_LOWER"),
])
def test_conv_windows_reproduce_the_onnx_conv(group, pads, strides, dil, auto_pad) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 4, 7, 6)).astype(np.float32)
    w = rng.normal(size=(8, 4 // group, 3, 2)).astype(np.float32)
    node = _conv_node(group, pads, strides, dil, auto_pad)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    y = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).run(None, {"x": x})[0]
    gram = LayerGram(node, (3, 2), group)
    cols = gram._windows(x)  # every output position (fewer than MAX_WINDOWS here)
    rows = w.reshape(group, 8 // group, -1)
    got = np.einsum("gmd,gkd->mgk", cols, rows).reshape(len(cols[0]), 8)  # (positions, channels)
    want = y.transpose(0, 2, 3, 1).reshape(-1, 8)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    gram.update(x)
    ref = np.einsum("gmd,gme->gde", cols.astype(np.float64), cols.astype(np.float64)) / cols.shape[1]
    np.testing.assert_allclose(gram.second_moment(), ref, rtol=1e-5, atol=1e-6)  # float32 products


def _tiny_model(w: np.ndarray, b: np.ndarray) -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_qdq_export_carries_the_rounded_grid_points() -> None:
    rng = np.random.default_rng(9)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    model = _tiny_model(w, b)
    node = model.graph.node[0]
    gram = LayerGram(node, (3, 3))
    gram.update(_correlated(rng, 2 * 3 * 36, 1).reshape(2, 3, 6, 6).astype(np.float32) + rng.normal(size=(2, 3, 6, 6)))
    rounded = round_layer(node, w, 0, gram)
    assert not np.array_equal(rounded.values, fake_quantize(w, weight_scales(w, 0), 0))  # it does choose
    mean = np.array([0.5, -1.0, 2.0], np.float32)
    q, info = build_qdq_model(model, {"x": 0.05}, high_precision="fp32", channel_means={"x": mean},
                              rounded_weights={"w": rounded})
    assert info.rounded_weights == ["w"]
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    wq = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "w")
    scale = inits[wq.input[1]]
    ints = np.clip(np.rint(inits["w"] / scale[:, None, None, None]), -127, 127)
    np.testing.assert_array_equal(ints * scale[:, None, None, None], rounded.values)  # Q then DQ: the same points
    bias = inits[next(n for n in q.graph.node if n.op_type == "Conv").input[2]]
    np.testing.assert_array_equal(bias, b)  # GPTQ layers get no bias correction (its objective holds the mean)
    q0, info0 = build_qdq_model(model, {"x": 0.05}, high_precision="fp32", channel_means={"x": mean})
    bias0 = {i.name: numpy_helper.to_array(i) for i in q0.graph.initializer}[
        next(n for n in q0.graph.node if n.op_type == "Conv").input[2]]
    np.testing.assert_allclose(bias0, b - mean_shift(node, w, 0, mean), rtol=1e-6)  # nearest: corrected
    # a rounding for another axis or shape is not used
    wrong = RoundedWeight(rounded.values[:2], rounded.scales[:2], 0)
    _, info2 = build_qdq_model(model, {"x": 0.05}, high_precision="fp32", rounded_weights={"w": wrong})
    assert info2.rounded_weights == []


def test_pipeline_pass_rounds_the_demo_and_lowers_weight_only_error() -> None:
    from sppquant.config import load_config
    from sppquant.data import calibration_set, iter_batches
    from sppquant.pipeline.context import open_model, ort_runner
    from sppquant.pipeline.weight_rounding import rounded_weights

    cfg = load_config(ROOT / "configs" / "sppnet_digits.yaml", ["calibration.weight_rounding_images=16"])
    ctx = open_model(cfg)
    got = rounded_weights(cfg, ctx, progress=False)
    # the same pass by hand: same images, sizes and seed -> the same rounding, and its grams to judge it
    rp = RoundingPass(ctx.model, cfg.calibration.seed)
    assert got is not None and set(got) == {w for _, w, _, _ in rp.layers} and len(got) >= 4
    images = calibration_set(cfg.calibration)
    images = replace(images, paths=images.paths[:16])
    with ort_runner(cfg, ctx.model, extra_outputs=rp.inputs) as run:
        for batch in iter_batches(images, cfg.preprocess, cfg.input.sizes, cfg.calibration.batch_size,
                                  progress=False):
            for k in range(len(cfg.input.sizes)):
                feeds = batch.feeds(k, cfg.model.input_name)
                rp.observe({**feeds, **run.run(feeds, [t for t in rp.inputs if t not in feeds])})
    again = rp.result()
    better = 0
    for node, w, axis, gram in rp.layers:
        np.testing.assert_array_equal(again[w].values, got[w].values)
        h = gram.second_moment()
        weight = rp.weights[w]
        near = fake_quantize(weight, weight_scales(weight, axis), axis)
        errors = []
        for a in (got[w].values - weight, near - weight):  # E[(dW x)^2] summed over output channels
            r = a.reshape(gram.groups, -1, h.shape[-1]) if node.op_type == "Conv" else (a if axis == 0 else a.T)[None]
            errors.append(float(np.einsum("gkd,gde,gke->", r, h, r)))
        better += errors[0] < errors[1]
    assert better == len(rp.layers)
    nearest = load_config(ROOT / "configs" / "sppnet_digits.yaml", ["calibration.weight_rounding=nearest"])
    assert rounded_weights(nearest, ctx, progress=False) is None


def test_weight_rounding_images_must_be_positive(tmp_path: Path) -> None:
    from sppquant.config import load_config
    from sppquant.errors import ConfigError

    with pytest.raises(ConfigError, match="calibration.weight_rounding_images.*positive"):
        load_config(ROOT / "configs" / "sppnet_digits.yaml", ["calibration.weight_rounding_images=0"])
    with pytest.raises(ConfigError, match="calibration.weight_rounding"):
        load_config(ROOT / "configs" / "sppnet_digits.yaml", ["calibration.weight_rounding=adaround"])


def test_second_moments_stay_within_the_memory_budget() -> None:
    rng = np.random.default_rng(3)
    w_wide = rng.normal(size=(4, 16, 3, 3)).astype(np.float32)  # D = 144: 165 888 bytes of float64 moments
    w_thin = rng.normal(size=(4, 4, 1, 1)).astype(np.float32)  # D = 4: 128 bytes
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="wide", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="thin")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w_wide, "w1"), numpy_helper.from_array(w_thin, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert [w for _, w, _, _ in RoundingPass(model).layers] == ["w1", "w2"]
    small = RoundingPass(model, budget=10_000)
    assert [w for _, w, _, _ in small.layers] == ["w2"] and small.skipped == ["wide"] and small.inputs == ["h"]


def test_matmul_weights_of_a_token_model_are_rounded_and_exported() -> None:
    """A transformer-style linear layer: (B, T, K) @ (K, N) + bias. Its weight is rounded per output column
    (axis 1), lowers the output error on NEW inputs against nearest rounding, and the export carries it."""
    rng = np.random.default_rng(11)
    k, n = 48, 32
    w = (rng.normal(size=(k, n)) * 0.1).astype(np.float32)
    b = rng.normal(size=n).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"), helper.make_node("Add", ["h", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 40, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    rp = RoundingPass(model)
    assert [(node.name, weight, axis) for node, weight, axis, _ in rp.layers] == [("fc", "w", 1)]
    mix = rng.normal(size=(k, k)) * 0.6 + np.eye(k)  # correlated features, as hidden states are
    tokens = [(rng.normal(size=(4, 40, k)) @ mix + 0.3).astype(np.float32) for _ in range(8)]
    for x in tokens:
        rp.observe({"x": x})
    assert rp.layers[0][3].count == 8 * 160  # every row of (4, 40, K) while under MAX_WINDOWS
    got = rp.result()["w"]
    assert got.axis == 1 and got.values.shape == w.shape
    k_int = got.values / got.scales[None, :]
    np.testing.assert_allclose(k_int, np.rint(k_int), atol=1e-4)
    x_new = (rng.normal(size=(4000, k)) @ mix + 0.3).astype(np.float64)
    near = fake_quantize(w, weight_scales(w, 1), 1)
    err = ((x_new @ (got.values - w)) ** 2).mean()
    assert err < 0.8 * ((x_new @ (near - w)) ** 2).mean()
    q, info = build_qdq_model(model, {"x": 20.0}, high_precision="fp32", rounded_weights={"w": got})
    assert info.rounded_weights == ["w"]
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    wq = next(nd for nd in q.graph.node if nd.op_type == "QuantizeLinear" and nd.input[0] == "w")
    scale = inits[wq.input[1]]
    ints = np.clip(np.rint(inits["w"] / scale[None, :]), -127, 127)
    np.testing.assert_array_equal(ints * scale[None, :], got.values)
    many = LayerGram(nodes[0], seed=1)
    many.update(rng.normal(size=(64, 40, k)).astype(np.float32))  # 2560 rows: sampled like conv positions
    assert many.count == 512


def _unrolled_rnn(w_hh: np.ndarray, w_ih: np.ndarray, steps: int) -> onnx.ModelProto:
    """h_{t+1} = tanh(x_t W_ih^T + h_t W_hh^T), one Gemm pair per step reading the SAME two weights."""
    nodes, h = [], "h0"
    for t in range(steps):
        nodes += [helper.make_node("Gemm", [f"x{t}", "w_ih"], [f"a{t}"], transB=1),
                  helper.make_node("Gemm", [h, "w_hh"], [f"b{t}"], transB=1),
                  helper.make_node("Add", [f"a{t}", f"b{t}"], [f"s{t}"]),
                  helper.make_node("Tanh", [f"s{t}"], [f"h{t + 1}"])]
        h = f"h{t + 1}"
    d = w_hh.shape[0]
    inputs = [helper.make_tensor_value_info(f"x{t}", TensorProto.FLOAT, [None, w_ih.shape[1]]) for t in range(steps)]
    inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [None, d]))
    graph = helper.make_graph(nodes, "rnn", inputs, [helper.make_tensor_value_info(h, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w_hh, "w_hh"), numpy_helper.from_array(w_ih, "w_ih")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_weight_shared_by_unrolled_steps_is_rounded_for_all_of_them() -> None:
    rng = np.random.default_rng(21)
    d, k, steps = 24, 20, 3
    w_hh, w_ih = (rng.normal(size=(d, d)) * 0.2).astype(np.float32), (rng.normal(size=(d, k)) * 0.2).astype(np.float32)
    model = _unrolled_rnn(w_hh, w_ih, steps)
    rp = RoundingPass(model)
    assert {w: rp.sources[w] for _, w, _, _ in rp.layers} == {
        "w_ih": ("x0", "x1", "x2"), "w_hh": ("h0", "h1", "h2")}
    assert all(axis == 0 for _, _, axis, _ in rp.layers)  # transB: output channels are rows
    hidden = helper.make_model(model.graph, opset_imports=model.opset_import)
    hidden.graph.output.extend([helper.make_tensor_value_info(f"h{t}", TensorProto.FLOAT, None) for t in (1, 2)])
    ref = ReferenceEvaluator(hidden)
    mix = rng.normal(size=(k, k)) * 0.7 + np.eye(k)
    seen = {"w_hh": [], "w_ih": []}
    for _ in range(6):
        feeds = {f"x{t}": (rng.normal(size=(32, k)) @ mix).astype(np.float32) for t in range(steps)}
        feeds["h0"] = np.zeros((32, d), np.float32)
        outs = dict(zip(["h3", "h1", "h2"], ref.run(None, feeds)))
        values = {**feeds, **outs}
        rp.observe(values)
        for w in seen:
            seen[w] += [values[t] for t in rp.sources[w]]
    got = rp.result()
    for w, weight in (("w_hh", w_hh), ("w_ih", w_ih)):
        x = np.concatenate(seen[w]).astype(np.float64)  # every step's input: what the shared weight answers
        near = fake_quantize(weight, weight_scales(weight, 0), 0)
        err = ((x @ (got[w].values - weight).T) ** 2).mean()
        assert err < ((x @ (near - weight).T) ** 2).mean()
    assert sum(gram.count for *_, gram in rp.layers) == 2 * 6 * 32 * steps  # both weights, every step's rows


def test_weights_read_another_way_or_by_different_layers_keep_nearest() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=(4, 4)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["a"], transB=1), helper.make_node("Gemm", ["a", "w"], ["b"]),
             helper.make_node("Gemm", ["b", "v"], ["c"]), helper.make_node("Add", ["c", "v"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w.copy(), "v")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert RoundingPass(model).layers == []  # w: transB differs between its readers; v: also an Add operand
