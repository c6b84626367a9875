"""Q/DQ export: placement, per-channel weight scales, checker, ORT vs a NumPy fake-quant reference, CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import numpy_helper
from test_report_support import LEVELS, synthetic_model, write_images

from sppquant.backends.onnxruntime import OrtRunner, activation_names
from sppquant.calibration.table import CalibrationTable, read_table, write_table
from sppquant.cli import main
from sppquant.errors import ModelError, TableError
from sppquant.ops.spp.onnx import SPP_DOMAIN, is_spp_node
from sppquant.ops.spp.reference import spp_reference
from sppquant.quantize.qdq import (
    build_qdq_model,
    check_qdq_model,
    check_table_matches,
    fake_quantize,
    quantized_tensors,
    weight_scales,
)
from sppquant.quantize.rules import default_rules

RNG = np.random.default_rng(7)
X = RNG.standard_normal((4, 3, 20, 26)).astype(np.float32)


def fp32_activations(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    names = activation_names(model)
    runner = OrtRunner(model, extra_outputs=names)
    acts = runner.run({"image": x}, [n for n in names if n != "image"])
    acts["image"] = x
    return acts


def minmax_table(model: onnx.ModelProto, x: np.ndarray) -> CalibrationTable:
    acts = fp32_activations(model, x)
    return CalibrationTable.from_amax(101601, "MinMaxCalibration", {n: float(np.abs(a).max()) for n, a in acts.items()})


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


# The synthetic net's classifier Gemm is GEMV-sized (N = 6 < 16) and stays float by default;
# these rules quantize it anyway so the Gemm weight paths (transB 0/1) stay covered.
ALL_GEMMS = default_rules().with_rules([replace(r, min_gemm_dim=0) for r in default_rules() if r.min_gemm_dim])


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("trans_b", [1, 0])
def test_qdq_model_structure_and_per_channel_scales(trans_b: int) -> None:
    model = synthetic_model(trans_b=trans_b)
    table = minmax_table(model, X)
    qdq, info = build_qdq_model(model, table, high_precision="fp32", rules=ALL_GEMMS)
    check_qdq_model(qdq)  # onnx.checker full_check
    onnx.checker.check_model(qdq, full_check=True)
    assert any(is_spp_node(n) for n in qdq.graph.node), "SPP must stay the plugin node"
    assert any(o.domain == SPP_DOMAIN for o in qdq.opset_import)
    assert {o.version for o in qdq.opset_import if o.domain in ("", "ai.onnx")} == {17}
    # Activation Q/DQ sits on the inputs of Conv / MaxPool / SPP / Gemm, never on Conv outputs.
    assert set(info.activations) == {"image", "relu1", "pool1", "relu2", "spp"} == quantized_tensors(qdq)
    by_out = {o: n for n in qdq.graph.node for o in n.output}
    consumers = {n.name: n for n in qdq.graph.node}
    for name in ("conv1", "conv2", "pool1", "fc"):
        node = consumers[name]
        assert by_out[node.input[0]].op_type == "DequantizeLinear"
    # CHANGED (issue 12): the SPP plugin reads the INT8 tensor (Q -> plugin -> DQ), it used to read a DQ output.
    assert by_out[consumers["spp"].input[0]].op_type == "QuantizeLinear"
    assert by_out["spp"].op_type == "DequantizeLinear"
    assert consumers["relu1"].input[0] == "conv1"  # Relu reads the FP32 Conv output
    values = inits(qdq)
    w = inits(model)
    expected_axes = {"conv1.weight": 0, "conv2.weight": 0, "fc.weight": 0 if trans_b else 1}
    assert {k: a for k, (_, a) in info.weights.items()} == expected_axes
    for name, axis in expected_axes.items():
        q = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == name)
        assert next(a.i for a in q.attribute if a.name == "axis") == axis
        scale, zero = values[q.input[1]], values[q.input[2]]
        reduce = tuple(i for i in range(w[name].ndim) if i != axis)
        manual = np.abs(w[name]).max(axis=reduce).astype(np.float32) / np.float32(127)
        np.testing.assert_array_equal(scale, manual)
        assert scale.shape == (w[name].shape[axis],) and zero.dtype == np.int8 and not zero.any()
    # Activation scales are the table's, zero points int8 0.
    # CHANGED (issue 12): the plugin output has no Q of its own; its DQ carries the (tied) scale.
    for tensor in info.activations:
        q = next((n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor), None) \
            or by_out[tensor]
        assert values[q.input[1]].shape == () and float(values[q.input[1]]) == table.scales[tensor]
        assert values[q.input[2]].dtype == np.int8 and int(values[q.input[2]]) == 0


def test_weight_scales_zero_channel_and_fake_quantize_rounding() -> None:
    w = np.array([[0.0, 0.0], [1.27, -2.54]], np.float32)
    np.testing.assert_allclose(weight_scales(w, 0), [1.0, 0.02])
    # half-to-even and saturation at [-128, 127]
    np.testing.assert_array_equal(fake_quantize(np.array([0.5, 1.5, 2.5, 1000, -1000], np.float32), 1.0),
                                  [0, 2, 2, 127, -128])


# --------------------------------------------------------------------------- numerics


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NumPy 3x3 convolution, stride 1, pad 1."""
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
    out = np.zeros((n, w.shape[0], h, wd))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, dy:dy + h, dx:dx + wd], w[:, :, dy, dx].astype(np.float64))
    return out + b[None, :, None, None]


def numpy_fake_quant_reference(model: onnx.ModelProto, table: CalibrationTable, x: np.ndarray, trans_b: int) -> np.ndarray:
    p = inits(model)
    s = table.scales
    fq = fake_quantize

    def fqw(name: str, axis: int) -> np.ndarray:
        return fq(p[name], weight_scales(p[name], axis), axis).astype(np.float64)

    a = fq(x, s["image"])
    relu1 = np.maximum(_conv(a, fqw("conv1.weight", 0), p["conv1.bias"]), 0)
    r1 = fq(relu1.astype(np.float32), s["relu1"]).astype(np.float64)
    n, c, h, w = r1.shape
    pool = r1[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    pool = fq(pool.astype(np.float32), s["pool1"])
    relu2 = np.maximum(_conv(pool, fqw("conv2.weight", 0), p["conv2.bias"]), 0)
    r2 = fq(relu2.astype(np.float32), s["relu2"])
    spp = fq(spp_reference(r2, LEVELS), s["spp"]).astype(np.float64)
    wf = fqw("fc.weight", 0 if trans_b else 1)
    return spp @ (wf.T if trans_b else wf) + p["fc.bias"]


@pytest.mark.parametrize("trans_b", [1, 0])
def test_ort_qdq_matches_numpy_fake_quant_reference(trans_b: int) -> None:
    model = synthetic_model(trans_b=trans_b)
    table = minmax_table(model, X)
    qdq, _ = build_qdq_model(model, table, high_precision="fp32", rules=ALL_GEMMS)
    got = OrtRunner(qdq).run({"image": X})["logits"]
    ref = numpy_fake_quant_reference(model, table, X, trans_b)
    fp32 = OrtRunner(model).run({"image": X})["logits"]
    # Same quantized values up to float32 accumulation order; far closer than INT8 vs FP32.
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max() + 1e-5
    assert np.abs(fp32 - ref).max() > 100 * np.abs(got - ref).max()


def test_single_tensor_qdq_only_touches_that_tensor() -> None:
    model = synthetic_model()
    table = minmax_table(model, X)
    qdq, info = build_qdq_model(model, {"relu1": table.scales["relu1"]}, only=["relu1"], quantize_weights=False)
    assert set(info.activations) == {"relu1"} and not info.weights
    assert sum(n.op_type == "QuantizeLinear" for n in qdq.graph.node) == 1
    check_qdq_model(qdq)
    acts = fp32_activations(model, X)
    runner = OrtRunner(qdq, extra_outputs=["relu1_dequantized"])
    out = runner.run({"image": X}, ["relu1_dequantized"])["relu1_dequantized"]
    np.testing.assert_allclose(out, fake_quantize(acts["relu1"], table.scales["relu1"]), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- refusals


def test_table_mismatch_and_old_opset_refused() -> None:
    model = synthetic_model()
    table = minmax_table(model, X)
    names = activation_names(model)
    check_table_matches(table, names, "t.cache", "m.onnx")
    bad = CalibrationTable(table.version, table.algorithm, {**{k: v for k, v in table.scales.items() if k != "relu2"},
                                                            "stranger": 0.1})
    with pytest.raises(TableError, match=r"missing from the table: relu2.*not in the model: stranger"):
        check_table_matches(bad, names, "t.cache", "m.onnx")
    with pytest.raises(ModelError, match="opset >= 13"):
        build_qdq_model(synthetic_model(opset=12), table)
    with pytest.raises(TableError, match="no scale"):
        build_qdq_model(model, {"image": 0.01})


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def project(tmp_path: Path) -> Path:
    onnx.save(synthetic_model(), tmp_path / "m.onnx")
    write_images(tmp_path / "calib", 12, folders=False, seed=3)
    write_images(tmp_path / "eval", 12, seed=4)
    cfg = {"model": {"path": "m.onnx"}, "input": {"sizes": [[20, 20], [28, 28]]},
           "calibration": {"images": "calib", "output": "out/t.cache", "batch_size": 4, "algorithm": "minmax"},
           "report": {"images": "eval", "output_dir": "out/report", "batch_size": 8}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def test_cli_export_qdq(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(project / "c.yaml")
    out = project / "out" / "m.qdq.onnx"
    # No table yet: the one table rule calibrates it first (test_table_rule.py covers stale tables).
    assert main(["export-qdq", "--config", cfg, "--output", str(out)]) == 0
    assert read_table(project / "out" / "t.cache").algorithm == "MinMaxCalibration"  # written where calibrate would
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert any(is_spp_node(n) for n in model.graph.node)
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file
    # A table for another model: exit 2, one line naming the mismatch.
    bad = project / "bad.cache"
    write_table(bad, CalibrationTable(101601, "EntropyCalibration2", {"image": 0.01, "other": 0.02}))
    capsys.readouterr()
    assert main(["export-qdq", "--config", cfg, "--output", str(project / "x.onnx"), "--table", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not match" in err and "other" in err and "\n" not in err
    assert not (project / "x.onnx").exists()
