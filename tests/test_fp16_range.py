"""Activations FP16 cannot hold stay FP32: values past 65504 overflow to inf in FP16 storage and the
output is lost; with those tensors (and the nodes that write or read them) in FP32 it matches FP32."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from sppquant.backends.onnxruntime import OrtRunner
from sppquant.quantize.fp16 import FP16_SAFE_MAX, convert_to_fp16, ort_fp16_model

GAIN = 400.0  # inputs up to ~4: the products pass FP16's 65504


def _wide_chain_model(c: int = 8) -> onnx.ModelProto:
    """x -> Mul(GAIN) -> Mul(self) (up to ~2.6e6: past FP16) -> Abs -> Neg -> Abs -> Sqrt (back to ~1600).
    The middle values are what a deep unnormalised network or a hand-written norm produces. (Two ops
    with FP16 kernels in a row: ONNX Runtime's CPU provider moves a lone FP16 op between FP32 ones back
    to FP32, which would hide the overflow a TensorRT FP16 engine meets.)"""
    inits = [numpy_helper.from_array(np.full(c, GAIN, np.float32), "gain")]
    nodes = [helper.make_node("Mul", ["x", "gain"], ["h"]), helper.make_node("Mul", ["h", "h"], ["sq"]),
             helper.make_node("Abs", ["sq"], ["mag"]), helper.make_node("Neg", ["mag"], ["neg"]),
             helper.make_node("Abs", ["neg"], ["pos"]), helper.make_node("Sqrt", ["pos"], ["y"])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, c])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model: onnx.ModelProto, x: np.ndarray, extra: list[str] | None = None) -> dict[str, np.ndarray]:
    runner = OrtRunner(model, extra_outputs=extra or [])
    return runner.run({"x": x}, ["y", *(extra or [])])


def _wide(model: onnx.ModelProto, x: np.ndarray) -> list[str]:
    """The activations whose FP32 max|x| reaches `FP16_SAFE_MAX`, as calibration would measure them."""
    names = ["h", "sq", "mag", "neg", "pos"]
    values = _run(model, x, names)
    return sorted(n for n in names if np.abs(values[n]).max() >= FP16_SAFE_MAX)


def _inputs(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(6, 8)) * 1.5).astype(np.float32)


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """ONNX's reference evaluator keeps every FP16 tensor in numpy float16, as a TensorRT FP16 engine
    stores it (ONNX Runtime's CPU provider moves lone FP16 ops between FP32 ones back to FP32)."""
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def test_fp16_overflow_is_real_and_wide_tensors_in_fp32_fix_it() -> None:
    model = _wide_chain_model()
    x = _inputs(1)
    ref = _run(model, x)["y"]
    wide = _wide(model, x)
    assert wide == ["mag", "neg", "pos", "sq"]  # h (~1600) and the square root fit in FP16; the squares do not
    with np.errstate(over="ignore"):
        assert np.isinf(_reference(convert_to_fp16(model), x)).any()  # FP16 storage of the squares: inf
    guarded = convert_to_fp16(model, fp32_tensors=wide)
    np.testing.assert_allclose(_reference(guarded, x), ref, rtol=2e-3)  # x and h FP16-rounded only
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in onnx.shape_inference.infer_shapes(guarded).graph.value_info}
    assert all(types[t] == TensorProto.FLOAT for t in wide)
    assert types.get("h") == TensorProto.FLOAT16  # the rest stays FP16
    ort_guarded, _kept, _moved = ort_fp16_model(model, fp32_tensors=wide)  # the report's FP16 column
    np.testing.assert_allclose(_run(ort_guarded, x)["y"], ref, rtol=2e-3)
    assert all(t not in {n.output[0] for n in ort_guarded.graph.node if n.op_type == "Cast"} for t in wide)


def test_a_wide_graph_input_and_output_stay_fp32() -> None:
    """The wide tensor is the graph input itself, and a graph output: no FP16 round trip on either."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["y"])]  # x up to 300: y up to 9e4, past FP16
    graph = helper.make_graph(nodes, "sq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.array([[300.0, -250.5, 1.0], [0.1, 299.9, -7.0]], np.float32)
    with np.errstate(over="ignore"):
        assert np.isinf(_reference(convert_to_fp16(model), x)).any()
    got = _reference(convert_to_fp16(model, fp32_tensors=["y"]), x)
    np.testing.assert_allclose(got, x * x, rtol=1e-3)  # x read through FP16 (3 significant digits), squared in FP32
    exact = _reference(convert_to_fp16(model, fp32_tensors=["x", "y"]), x)
    np.testing.assert_array_equal(exact, x * x)


def test_calibration_finds_the_wide_tensors_and_the_export_keeps_them_fp32(tmp_path, image_folder, caplog,
                                                                           monkeypatch) -> None:
    """End to end on the tiny SPP project with a conv scaled past FP16: calibrate records the ranges,
    `fp16_overflow` reads them back, and export-qdq's FP16 base keeps those tensors FP32 and unquantized."""
    from sppquant.cli import main
    from sppquant.config import load_config
    from sppquant.pipeline.calibrate import calibrate
    from sppquant.pipeline.context import ort_runner
    from sppquant.pipeline.export import export_qdq
    from sppquant.pipeline.tables import fp16_overflow
    from tests.conftest import write_tiny_spp_model

    path = write_tiny_spp_model(tmp_path / "tiny.onnx")
    model = onnx.load(str(path))
    for init in model.graph.initializer:  # conv1 up to ~1e5, logits back to the original scale
        if init.name in ("w1", "w2"):
            arr = numpy_helper.to_array(init) * (5000.0 if init.name == "w1" else 1 / 5000.0)
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), init.name))
    onnx.save(model, str(path))
    (tmp_path / "tiny.yaml").write_text(
        "model: {path: tiny.onnx, input_name: image}\ninput: {sizes: [[16, 16]]}\n"
        "preprocess: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}\n"
        "calibration: {images: imgs, batch_size: 3, output: out/tiny.cache, algorithm: minmax}\nbackend: onnxruntime\n"
        "report: {images: imgs, labels: none, output_dir: out/report}\n")
    cfg = load_config(tmp_path / "tiny.yaml")
    table = calibrate(cfg, progress=False).table_path
    wide = fp16_overflow(table)
    assert "past FP16's safe range" in caplog.text and "conv1" in caplog.text
    assert set(wide) >= {"conv1", "relu1", "pool1"} and "logits" not in wide and "image" not in wide
    result = export_qdq(cfg, tmp_path / "q.onnx", progress=False)
    assert result.info.fp32_tensors == list(wide) and not set(wide) & set(result.info.activations)
    qdq = onnx.load(str(tmp_path / "q.onnx"))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in onnx.shape_inference.infer_shapes(qdq).graph.value_info}
    assert all(types.get(t, TensorProto.FLOAT) == TensorProto.FLOAT for t in wide)
    x = np.random.default_rng(0).uniform(-2, 2, size=(2, 3, 16, 16)).astype(np.float32)  # images' range
    with ort_runner(cfg, model) as fp32, ort_runner(cfg, qdq) as q:
        ref, got = fp32.run({"image": x}, ["logits"])["logits"], q.run({"image": x}, ["logits"])["logits"]
    assert np.isfinite(got).all()
    assert 10 * np.log10((ref ** 2).sum() / ((ref - got) ** 2).sum()) > 20  # INT8 input + FP16 rest: no overflow
    assert main(["report", "--config", str(tmp_path / "tiny.yaml"), "--algorithms", "minmax"]) == 0
    rep = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert rep["precisions"]["fp16"]["sqnr_db"] > 40 and rep["precisions"]["int8"]["sqnr_db"] > 20
    assert "passes FP16's safe range stay FP32" in rep["fp16"]["note"]
    assert rep["precisions"]["fp16"]["nonfinite_outputs"] == 0
    # without the ranges (a table TensorRT's calibrator wrote has none) the FP16 column overflows: reported, no crash
    monkeypatch.setattr("sppquant.pipeline.report.fp16_overflow", lambda path: ())
    assert main(["report", "--config", str(tmp_path / "tiny.yaml"), "--algorithms", "minmax"]) == 0
    rep = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert rep["precisions"]["fp16"]["nonfinite_outputs"] > 0
    assert any(n.startswith("FP16 outputs held") and "overflows" in n for n in rep["notes"])


def test_output_statistics_count_and_score_nonfinite_values() -> None:
    from sppquant.tasks.metrics import OutputAccumulator

    ref = np.array([[1.0, 2.0, 3.0, 4.0]])
    acc = OutputAccumulator()
    acc.add(ref, np.array([[1.0, np.inf, 3.0, np.nan]]))
    res = acc.result()
    assert res["nonfinite_outputs"] == 2
    assert res["max_abs_err"] == pytest.approx(4.0, rel=0.01)  # the lost values count as 0: errors 2 and 4
    assert res["sqnr_db"] == pytest.approx(10 * np.log10(30 / 20))
    assert acc.merge(acc).result()["nonfinite_outputs"] == 4
