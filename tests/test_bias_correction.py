"""Bias correction: per-channel means streamed exactly, the mean shift against brute force, and the
INT8 model's output mean equal to FP32's where nothing else perturbs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from test_report_support import synthetic_model, write_images

from sppquant.backends.onnxruntime import OrtRunner
from sppquant.calibration.channel_means import ChannelMeans
from sppquant.calibration.provenance import read_provenance
from sppquant.calibration.table import CalibrationTable
from sppquant.cli import main
from sppquant.model import weighted_layer_inputs
from sppquant.quantize.bias_correction import mean_shift
from sppquant.quantize.fake import fake_quantize, weight_scales
from sppquant.quantize.qdq import build_qdq_model


def test_channel_means_match_numpy_and_merge_exactly() -> None:
    rng = np.random.default_rng(1)
    batches = [rng.normal(i, 1 + i, (3, 5, 4, 6)).astype(np.float32) for i in range(4)]
    gemm = [rng.normal(-i, 1, (7, 9)).astype(np.float32) for i in range(4)]
    a, b = ChannelMeans({"x": 1, "g": 1}), ChannelMeans({"x": 1, "g": 1})
    for i, (x, g) in enumerate(zip(batches, gemm)):
        (a if i < 2 else b).update("x", x)
        (a if i < 2 else b).update("g", g)
    got = a.merge(b).means()
    want_x = np.concatenate(batches).astype(np.float64).mean(axis=(0, 2, 3))
    want_g = np.concatenate(gemm).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(got["x"], want_x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["g"], want_g, rtol=1e-6, atol=1e-6)
    c = ChannelMeans({"x": 1})
    c.update("x", batches[0])
    c.update("x", batches[0][:, :3])  # the channel count changed: no meaningful mean
    assert "x" not in c.means()


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_conv_mean_shift_is_the_brute_force_mean(groups: int) -> None:
    """1x1 convolution: dW . E[x] equals the mean over the data of conv(x, dW), exactly."""
    rng = np.random.default_rng(groups)
    cin, cout = 8, 12
    w = rng.normal(0, 1, (cout, cin // groups, 1, 1)).astype(np.float32)
    x = rng.normal(0.7, 2, (5, cin, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=groups)
    dw = fake_quantize(w, weight_scales(w, 0), 0) - w
    brute = np.zeros(cout)
    per = cout // groups
    for k in range(cout):
        g = k // per
        xs = x[:, g * (cin // groups):(g + 1) * (cin // groups)].astype(np.float64)
        brute[k] = np.einsum("nchw,c->nhw", xs, dw[k, :, 0, 0].astype(np.float64)).mean()
    got = mean_shift(node, w, 0, x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(got, brute, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_mean_shift_is_the_brute_force_mean(trans_b: int) -> None:
    rng = np.random.default_rng(trans_b)
    x = rng.normal(0.3, 1, (20, 16)).astype(np.float32)
    w = rng.normal(0, 1, (24, 16) if trans_b else (16, 24)).astype(np.float32)
    axis = 0 if trans_b else 1
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=trans_b, alpha=0.5)
    dw = fake_quantize(w, weight_scales(w, axis), axis) - w
    brute = 0.5 * (x.astype(np.float64) @ (dw.T if trans_b else dw).astype(np.float64)).mean(axis=0)
    np.testing.assert_allclose(mean_shift(node, w, axis, x.mean(axis=0)), brute, rtol=1e-5, atol=1e-9)


def _model(nodes: list, shape: list, inits: dict[str, np.ndarray], outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _per_channel(y: np.ndarray) -> np.ndarray:
    return y.mean(axis=tuple(i for i in range(y.ndim) if i != 1), dtype=np.float64)


def _means_error(model: onnx.ModelProto, x: np.ndarray, means: dict[str, np.ndarray]) -> tuple[float, float, object]:
    """Largest |INT8 output mean - FP32 output mean| over channels and outputs, without and with correction."""
    table = CalibrationTable.from_amax(101601, "MinMaxCalibration", {"x": 6.35})  # x's grid: 0.05 = 6.35 / 127
    fp32 = OrtRunner(model).run({"x": x})
    plain, _ = build_qdq_model(model, table, high_precision="fp32")
    fixed, info = build_qdq_model(model, table, high_precision="fp32", channel_means=means)
    errs = []
    for m in (plain, fixed):
        got = OrtRunner(m).run({"x": x})
        errs.append(max(float(np.abs(_per_channel(got[k]) - _per_channel(fp32[k])).max()) for k in fp32))
    return errs[0], errs[1], (fixed, info)


def test_corrected_int8_conv_keeps_fp32_output_means() -> None:
    """Input on the quantization grid (exact under Q/DQ), 1x1 grouped conv without a bias: with the means
    of the same data, the INT8 model's per-channel output means equal FP32's; uncorrected they do not."""
    rng = np.random.default_rng(7)
    w = rng.normal(0, 1, (6, 2, 1, 1)).astype(np.float32)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", group=2)], [None, 4, 3, 3], {"w": w},
                   ["y"])
    x = (rng.integers(-20, 100, (64, 4, 3, 3)) * 0.05).astype(np.float32)  # positive mean: a visible shift
    assert weighted_layer_inputs(model) == {"x": 1}
    plain, fixed, (_, info) = _means_error(model, x, {"x": x.mean(axis=(0, 2, 3))})
    assert [c.node for c in info.bias_corrections] == ["conv"]
    assert "1 layer bias(es) corrected for INT8 weight rounding" in info.placement  # what reports show
    assert fixed < 1e-5 < plain / 100


def test_corrected_int8_gemm_keeps_means_and_leaves_a_shared_bias_alone() -> None:
    rng = np.random.default_rng(8)
    w, b = rng.normal(0, 0.3, (16, 20)).astype(np.float32), rng.normal(0, 0.1, 20).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm"),
             helper.make_node("Gemm", ["x", "w", "b"], ["z"], name="gemm_twin", alpha=2.0)]
    model = _model(nodes, [None, 16], {"w": w, "b": b}, ["y", "z"])
    x = (rng.integers(-30, 110, (200, 16)) * 0.05).astype(np.float32)
    plain, fixed, (q, info) = _means_error(model, x, {"x": x.mean(axis=0)})
    assert {c.node for c in info.bias_corrections} == {"gemm", "gemm_twin"}
    assert fixed < 1e-5 < plain / 100
    nodes_q = {n.name: n for n in q.graph.node}
    assert nodes_q["gemm"].input[2] != nodes_q["gemm_twin"].input[2]  # each reader got its own corrected bias
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    np.testing.assert_array_equal(inits["b"], b)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    onnx.save(synthetic_model(), tmp_path / "m.onnx")
    write_images(tmp_path / "calib", 12, folders=False, seed=3)
    cfg = {"model": {"path": "m.onnx"}, "input": {"sizes": [[20, 20]]},
           "calibration": {"images": "calib", "output": "out/t.cache", "batch_size": 4, "algorithm": "minmax"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def _conv_biases(path: Path) -> dict[str, np.ndarray]:
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.name: inits[n.input[2]] for n in m.graph.node if n.op_type == "Conv" and len(n.input) > 2}


def test_export_applies_the_recorded_means(project: Path) -> None:
    cfg = str(project / "c.yaml")
    on, off = project / "on.onnx", project / "off.onnx"
    nearest = ["--set", "calibration.weight_rounding=nearest"]  # GPTQ-rounded layers get no correction
    assert main(["export-qdq", "--config", cfg, "--output", str(on), "--high-precision", "fp32", *nearest]) == 0
    record = read_provenance(project / "out" / "t.cache")
    assert record.channel_means and all(len(v) > 0 for v in record.channel_means.values())
    assert main(["export-qdq", "--config", cfg, "--output", str(off), "--high-precision", "fp32",
                 "--set", "calibration.bias_correction=false", *nearest]) == 0
    fp32 = _conv_biases(project / "m.onnx")
    b_on, b_off = _conv_biases(on), _conv_biases(off)
    assert b_off.keys() == b_on.keys() and b_on
    for name in b_off:
        np.testing.assert_array_equal(b_off[name], fp32[name])
    assert any(not np.array_equal(b_on[n], fp32[n]) for n in b_on)
