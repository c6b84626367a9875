"""Issue 12 placement rules, one graph-pattern test each, plus ONNX Runtime runs of every exported model.

Plugin ``Q -> op -> DQ`` with a tied scale, the ONNX Runtime form (``plugin_io``) against the
NumPy SPP reference on INT8 data, the FP16 base, residual Adds / ConvTranspose / Resize,
Constant-node weights, small GEMMs, rules supplied for other plugins, and tables
TensorRT wrote (internal names, inf and zero entries).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from test_report_support import LEVELS, synthetic_model, write_images

from sppquant.backends.onnxruntime import OrtRunner
from sppquant.calibration.table import CalibrationTable, format_table, parse_table, read_table
from sppquant.config import load_config
from sppquant.errors import TableError
from sppquant.ops import rewrite_for_onnxruntime
from sppquant.ops.plugin_io import dequantize_plugin_io
from sppquant.ops.spp.onnx import SPP_DOMAIN, make_spp_node
from sppquant.ops.spp.reference import spp_reference
from sppquant.pipeline.export import export_qdq
from sppquant.quantize.qdq import build_qdq_model, check_qdq_model
from sppquant.quantize.rules import QdqRule, default_rules
from sppquant.tasks.metrics import sqnr_db

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("qdq_placement", ROOT / "benchmarks" / "qdq_placement.py")
BENCH = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(BENCH)

RNG = np.random.default_rng(11)
X = RNG.standard_normal((3, 3, 24, 28)).astype(np.float32)


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def readers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def inits(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in model.graph.initializer}


def run(model: onnx.ModelProto, x: np.ndarray = X) -> np.ndarray:
    return OrtRunner(model).run({"image": x})[model.graph.output[0].name]


# --------------------------------------------------------------------------- plugins


def test_plugin_gets_int8_io_with_the_input_scale_tied() -> None:
    model = synthetic_model()
    table = BENCH.minmax_table(model, [X])
    untied = CalibrationTable(table.version, table.algorithm, {**table.scales, "spp": 2 * table.scales["relu2"]})
    qdq, info = build_qdq_model(model, untied, high_precision="fp32")
    check_qdq_model(qdq)
    prod = producers(qdq)
    spp = node(qdq, "spp")
    q = prod[spp.input[0]]
    assert q.op_type == "QuantizeLinear" and q.input[0] == "relu2"
    assert readers(qdq, q.output[0]) == [spp]  # no DQ before the plugin
    (dq,) = readers(qdq, spp.output[0])  # no Q after it: the plugin writes INT8, one DQ reads it
    assert dq.op_type == "DequantizeLinear" and dq.output[0] == "spp"
    assert dq.input[1:] == q.input[1:]  # the same scale initializer: tied exactly, whatever the table says
    assert info.plugins["spp"]["tied"] and info.plugins["spp"]["output_scales"] == [table.scales["relu2"]]
    assert info.activations["relu2"] == "relu2_dequantized"  # the value ONNX Runtime sees (plugin_io's DQ)
    # ONNX Runtime form: Q -> DQ -> plugin -> Q -> DQ, and the named DQ exists there.
    ort_form = dequantize_plugin_io(qdq)
    prod = producers(ort_form)
    spp = node(ort_form, "spp")
    assert prod[spp.input[0]].op_type == "DequantizeLinear" and spp.input[0] == "relu2_dequantized"
    assert prod[prod[spp.input[0]].input[0]].op_type == "QuantizeLinear"
    assert [r.op_type for r in readers(ort_form, spp.output[0])] == ["QuantizeLinear"]
    assert dequantize_plugin_io(ort_form) == ort_form  # idempotent
    assert np.isfinite(run(qdq)).all()


def _spp_qdq_model(s_in: float, s_out: float, levels: tuple[int, ...]) -> onnx.ModelProto:
    """image -> Q(s_in) -> SPP -> DQ(s_out) -> out: the exported plugin pattern alone."""
    inits_ = [numpy_helper.from_array(np.float32(s_in), "s_in"), numpy_helper.from_array(np.float32(s_out), "s_out"),
              numpy_helper.from_array(np.int8(0), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["image", "s_in", "zp"], ["q"]),
             make_spp_node("q", "spp_q", levels, name="spp"),
             helper.make_node("DequantizeLinear", ["spp_q", "s_out", "zp"], ["out"])]
    graph = helper.make_graph(nodes, "spp_qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits_)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(SPP_DOMAIN, 1)],
                             ir_version=8)


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(rewrite_for_onnxruntime(dequantize_plugin_io(model)).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


def test_plugin_io_is_exact_for_equal_scales() -> None:
    """max(s*q) == s*max(q): the ONNX Runtime form equals the INT8 SPP (reference on int8 data) bit for bit."""
    q = RNG.integers(-128, 128, size=(2, 5, 13, 9), dtype=np.int8)
    s = np.float32(0.0371)
    got = _ort(_spp_qdq_model(s, s, LEVELS + (3,)), q.astype(np.float32) * s)
    want = spp_reference(q, LEVELS + (3,)).astype(np.float32) * s  # int8 max, then dequantize
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("s_in, s_out", [(0.05, 0.07), (0.07, 0.05), (0.01, 0.003), (0.1, 0.1 / 3)])
def test_plugin_io_unequal_scales_requantize_like_the_kernel(s_in: float, s_out: float) -> None:
    """Unequal scales: ORT computes rint(s_in*q / s_out), the CUDA kernel rint(q * (s_in/s_out)); both saturate."""
    q = np.arange(-128, 128, dtype=np.int8).reshape(1, 256, 1, 1)
    got = _ort(_spp_qdq_model(s_in, s_out, (1,)), q.astype(np.float32) * np.float32(s_in))
    got_q = np.rint(got / np.float32(s_out)).astype(np.int32).ravel()
    r = np.float32(s_in) / np.float32(s_out)
    kernel = np.clip(np.rint(q.astype(np.float32) * r), -128, 127).astype(np.int32).ravel()
    diff = np.abs(got_q - kernel)
    assert diff.max() <= 1 and np.count_nonzero(diff) <= 2, (np.count_nonzero(diff), q.ravel()[diff > 0])


def test_rule_table_supplies_a_rule_for_another_plugin() -> None:
    """A custom op's own rule (as the op registry will supply it): untied output scale from the table."""
    nodes = [helper.make_node("Conv", ["image", "w"], ["c"], name="conv"),
             helper.make_node("RoiPyramidPool", ["c"], ["p"], name="roi", domain="other"),
             helper.make_node("Relu", ["p"], ["y"], name="relu")]
    w = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("other", 1)])
    rules = default_rules().with_rules([QdqRule("RoiPyramidPool", domain="other", plugin=True)])
    qdq, info = build_qdq_model(model, {"image": 0.1, "c": 0.2, "p": 0.3}, high_precision="fp32", rules=rules)
    prod, roi = producers(qdq), node(qdq, "roi")
    assert prod[roi.input[0]].op_type == "QuantizeLinear"
    (dq,) = readers(qdq, roi.output[0])
    assert float(numpy_helper.to_array(inits(qdq)[dq.input[1]])) == np.float32(0.3)
    assert not info.plugins["roi"]["tied"]
    assert build_qdq_model(model, {"image": 0.1, "c": 0.2}, high_precision="fp32")[0]  # no rule: plain float op


# --------------------------------------------------------------------------- FP16 base


def test_fp16_base_keeps_io_and_puts_everything_else_in_fp16() -> None:
    model = synthetic_model()
    table = BENCH.minmax_table(model, [X])
    qdq, info = build_qdq_model(model, table)  # default: fp16
    check_qdq_model(qdq)
    assert info.high_precision == "fp16" and "FP16" in info.placement
    assert {o.version for o in qdq.opset_import if o.domain in ("", "ai.onnx")} == {19}  # FP16 Q/DQ scales
    assert [i.type.tensor_type.elem_type for i in qdq.graph.input] == [TensorProto.FLOAT]  # as the user's model
    assert [o.type.tensor_type.elem_type for o in qdq.graph.output] == [TensorProto.FLOAT]
    values = inits(qdq)
    qdq_nodes = [n for n in qdq.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert {values[n.input[1]].data_type for n in qdq_nodes} == {TensorProto.FLOAT16}
    assert {values[n.input[2]].data_type for n in qdq_nodes} == {TensorProto.INT8}
    assert TensorProto.FLOAT not in {i.data_type for i in values.values()}  # weights, biases, scales: FP16
    # Every float tensor inside the graph is FP16; only the graph's own inputs/outputs are FP32.
    inferred = onnx.shape_inference.infer_shapes(qdq)
    float32 = {v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    assert float32 == set(), float32
    casts = [n for n in qdq.graph.node if n.op_type == "Cast"]
    assert [c.input[0] for c in casts] == ["image", "logits_fp16"]
    y16, y32 = run(qdq), run(build_qdq_model(model, table, high_precision="fp32")[0])
    assert y16.dtype == np.float32 and sqnr_db(y32, y16) > 35
    fp32, _ = build_qdq_model(model, table, high_precision="fp32")
    assert {o.version for o in fp32.opset_import if o.domain == ""} == {17}
    assert {i.data_type for i in fp32.graph.initializer} == {TensorProto.FLOAT, TensorProto.INT8}
    with pytest.raises(ValueError, match="high_precision"):
        build_qdq_model(model, table, high_precision="bf16")


def test_fp16_base_keeps_a_weight_channel_whose_scale_is_below_fp16s_normal_range() -> None:
    """A channel of tiny weights (scale ~5.5e-6 < 2**-14, FP16-subnormal; on a real recognizer such a channel
    broke ONNX Runtime's FP16 Conv: 25.7 -> 6.8 dB). The FP16 export raises such scales to 2**-14, so every
    dequantized weight is 0 or a normal FP16 number; the channel stays close to the FP32 export."""
    rng = np.random.default_rng(5)
    w = rng.uniform(-0.5, 0.5, (4, 3, 1, 1)).astype(np.float32)
    w[2] = rng.uniform(-7e-4, 7e-4, (3, 1, 1))  # max|w| / 127 ~ 5.5e-6
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["y"], name="conv")], "tiny_channel",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 3, 24, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 24, 28])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    table = {"image": float(np.abs(X).max()) / 127}
    y32 = run(build_qdq_model(model, table, high_precision="fp32")[0])
    q16, _ = build_qdq_model(model, table, high_precision="fp16")
    scales = [numpy_helper.to_array(inits(q16)[n.input[1]]) for n in q16.graph.node if n.op_type == "DequantizeLinear"]
    assert min(float(s.min()) for s in scales) >= float(np.finfo(np.float16).tiny)
    y16 = run(q16)
    assert sqnr_db(y32[:, 2], y16[:, 2]) > 20  # the tiny channel: coarser, still close
    assert sqnr_db(y32, y16) > 35


# --------------------------------------------------------------------------- residual Add, ConvTranspose, Resize


def test_residual_adds_convtranspose_resize_and_small_gemms(caplog: pytest.LogCaptureFixture) -> None:
    model = BENCH.residual_cnn()
    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    table = BENCH.minmax_table(model, [x])
    with caplog.at_level(logging.WARNING):
        qdq, info = build_qdq_model(model, table)
    check_qdq_model(qdq)
    prod = producers(qdq)

    def src(node_name: str, i: int) -> str:
        return prod[node(qdq, node_name).input[i]].op_type

    # Conv + Add fuse in INT8 when the Add's other (skip) input is INT8 too; the Conv branch stays as it is.
    assert info.residual_adds == {"b1_add": ["stem_relu"], "b2_add": ["b2_down"], "up_add": ["up_proj"]}
    assert (src("b1_add", 0), src("b1_add", 1)) == ("BatchNormalization", "DequantizeLinear")
    assert (src("b2_add", 0), src("b2_add", 1)) == ("Conv", "DequantizeLinear")  # the longer branch fuses
    assert (src("up_add", 0), src("up_add", 1)) == ("DequantizeLinear", "Relu")
    assert (src("skip_add", 0), src("skip_add", 1)) == ("Relu", "Relu")  # no Conv left to fuse with: float
    # ConvTranspose: data and weight quantized, weight per output channel = axis 1.
    deconv = node(qdq, "up_deconv")
    assert src("up_deconv", 0) == "DequantizeLinear"
    assert [a.i for a in prod[deconv.input[1]].attribute if a.name == "axis"] == [1]
    # Resize: the data input only; its scales stay FLOAT as ONNX requires.
    assert src("up_resize", 0) == "DequantizeLinear" and node(qdq, "up_resize").input[2] == "up.scales"
    assert inits(qdq)["up.scales"].data_type == TensorProto.FLOAT
    # fc1 (K=16, N=32) is INT8; the logits Gemm (K=32, N=10) is GEMV-sized and stays float, with a warning.
    assert src("fc1", 0) == "DequantizeLinear" and src("fc1", 1) == "DequantizeLinear"
    assert node(qdq, "logits").input[:2] == ["fc1_relu", "fc2.weight"]
    assert list(info.unquantized_weights) == ["fc2.weight (Gemm logits)"]
    assert any("fc2.weight" in r.message and "not quantized" in r.message for r in caplog.records)
    for hp in ("fp16", "fp32"):
        y = run(build_qdq_model(model, table, high_precision=hp)[0], x)
        assert sqnr_db(run(model, x), y) > 20


# --------------------------------------------------------------------------- Constant-node weights


def _constant_weight_model() -> onnx.ModelProto:
    """The synthetic net as paddle2onnx writes it: conv1's weight a Constant node, conv2's a Constant -> Transpose."""
    model = synthetic_model()
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    keep = [i for i in model.graph.initializer if i.name not in ("conv1.weight", "conv2.weight")]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    w2t = np.ascontiguousarray(values["conv2.weight"].transpose(1, 0, 2, 3))
    const = [helper.make_node("Constant", [], ["conv1.weight"], name="c1", value=numpy_helper.from_array(
                 values["conv1.weight"], "v1")),
             helper.make_node("Constant", [], ["conv2.weight_t"], name="c2", value=numpy_helper.from_array(w2t, "v2")),
             helper.make_node("Transpose", ["conv2.weight_t"], ["conv2.weight"], name="t2", perm=[1, 0, 2, 3])]
    nodes = const + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def test_constant_node_weights_are_folded_and_quantized(caplog: pytest.LogCaptureFixture) -> None:
    plain = synthetic_model()
    model = _constant_weight_model()
    onnx.checker.check_model(model, full_check=True)
    table = BENCH.minmax_table(plain, [X])
    qdq, info = build_qdq_model(model, table, high_precision="fp32")
    check_qdq_model(qdq)
    assert sorted(info.folded_weights) == ["conv1.weight", "conv2.weight"]
    assert {"conv1.weight", "conv2.weight"} <= set(info.weights)
    assert not [n for n in qdq.graph.node if n.op_type in ("Constant", "Transpose")]
    ref, _ = build_qdq_model(plain, table, high_precision="fp32")
    np.testing.assert_array_equal(run(qdq), run(ref))  # the same quantized weights as from initializers
    # A weight computed at run time cannot be folded: it stays float, and the export says so.
    runtime = synthetic_model()
    runtime.graph.node.insert(0, helper.make_node("Mul", ["conv1.weight", "gain"], ["conv1.w_scaled"], name="gain"))
    runtime.graph.input.append(helper.make_tensor_value_info("gain", TensorProto.FLOAT, [1]))
    node(runtime, "conv1").input[1] = "conv1.w_scaled"
    with caplog.at_level(logging.WARNING):
        _, info = build_qdq_model(runtime, table, high_precision="fp32")
    assert "conv1.weight" not in info.weights and "conv1.w_scaled (Conv conv1)" in info.unquantized_weights
    assert any("conv1.w_scaled" in r.message and "run time" in r.message for r in caplog.records)


# --------------------------------------------------------------------------- tables TensorRT wrote


def test_parser_drops_zero_and_inf_entries_only_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    text = ("TRT-100800-EntropyCalibration2\ninput: 3c010a14\n(Unnamed Layer* 3) [Shuffle]_output: 7f800000\n"
            "ONNXTRT_Broadcast_5: 0\nconv1: 3d000000\n")
    with pytest.raises(TableError, match="unusable scale"):
        parse_table(text, "t.cache")  # the default stays strict
    with caplog.at_level(logging.WARNING):
        table = parse_table(text, "t.cache", drop_zero_inf=True)
    assert list(table.scales) == ["input", "conv1"]
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2 tensor(s) with a zero or infinite scale" in warnings[0]
    for bad in ("a: 7fc00000", "a: ff800000", "a: bf800000", "a: zz"):  # NaN, -inf, negative, garbage
        with pytest.raises(TableError):
            parse_table(f"TRT-100800-EntropyCalibration2\n{bad}\n", "t.cache", drop_zero_inf=True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    onnx.save(synthetic_model(), tmp_path / "m.onnx")
    write_images(tmp_path / "calib", 4, folders=False, seed=3)
    cfg = {"model": {"path": "m.onnx"}, "input": {"sizes": [[24, 28]]},
           "calibration": {"images": "calib", "output": "out/t.cache", "batch_size": 4}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def _trt_style_table(scales: dict[str, float], extra_lines: str) -> str:
    body = format_table(CalibrationTable(100800, "EntropyCalibration2", scales))
    return body + extra_lines


def test_export_accepts_a_table_tensorrt_wrote(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(project / "c.yaml")
    table = BENCH.minmax_table(synthetic_model(), [X])
    internal = ("(Unnamed Layer* 7) [Shuffle]_output: 3c010a14\nONNXTRT_Broadcast_12: 3c010a14\n"
                "(Unnamed Layer* 9) [Constant]_output: 7f800000\n")
    scales = {k: v for k, v in table.scales.items() if k != "logits"}  # logits: not needed, TensorRT wrote 0
    path = project / "trt.cache"
    path.write_text(_trt_style_table(scales, internal + "logits: 0\n"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sppquant.quantize.qdq"):
        result = export_qdq(cfg, project / "m.qdq.onnx", table_path=path, high_precision="fp32")
    ignored = [r.message for r in caplog.records if "ignored" in r.message]
    assert len(ignored) == 1 and "ignored 2 table tensor(s) the model does not have" in ignored[0]
    qdq = onnx.load(str(result.path))
    check_qdq_model(qdq)
    assert {o.version for o in qdq.opset_import if o.domain == ""} == {17}  # high_precision="fp32"
    assert np.isfinite(run(qdq)).all()
    assert read_table(path, drop_zero_inf=True).scales.keys() == {*scales, "(Unnamed Layer* 7) [Shuffle]_output",
                                                                  "ONNXTRT_Broadcast_12"}
    # A tensor the placement quantizes given as inf: refused, with the list.
    path.write_text(_trt_style_table({k: v for k, v in scales.items() if k not in ("relu1", "pool1")},
                                     internal + "relu1: 7f800000\npool1: 0\n"))
    with pytest.raises(TableError, match=r"does not match .*no scale for 2 tensor\(s\).*relu1, pool1"):
        export_qdq(cfg, project / "x.onnx", table_path=path)
    assert not (project / "x.onnx").exists()


# --------------------------------------------------------------------------- every model runs


def _demo() -> onnx.ModelProto:
    return onnx.load(str(ROOT / "sppquant" / "demo" / "sppnet_digits.onnx"))


@pytest.mark.parametrize("hp", ["fp16", "fp32"])
@pytest.mark.parametrize("which", ["demo", "synthetic", "residual_cnn"])
def test_every_exported_model_passes_the_checker_and_runs_in_onnxruntime(which: str, hp: str) -> None:
    model = {"demo": _demo, "synthetic": synthetic_model, "residual_cnn": BENCH.residual_cnn}[which]()
    x = RNG.standard_normal((2, 3, 32, 40)).astype(np.float32)
    table = BENCH.minmax_table(model, [x])
    qdq, info = build_qdq_model(model, table, high_precision=hp)
    onnx.checker.check_model(qdq, full_check=True)
    runner = OrtRunner(qdq, extra_outputs=list(info.activations.values()))  # the report's INT8 run
    out = runner.run({"image": x})
    assert all(np.isfinite(v).all() for v in out.values())
    assert sqnr_db(run(model, x), out[qdq.graph.output[0].name]) > 15


def test_an_already_quantized_model_is_refused() -> None:
    model = synthetic_model()
    qdq, _ = build_qdq_model(model, BENCH.minmax_table(model, [X]), high_precision="fp32")
    with pytest.raises(Exception, match="already has QuantizeLinear"):
        build_qdq_model(qdq, {})


def test_single_tensor_analysis_mode_is_quiet_and_fp32(caplog: pytest.LogCaptureFixture) -> None:
    model = synthetic_model()
    with caplog.at_level(logging.WARNING):
        qdq, info = build_qdq_model(model, {"relu1": 0.05}, only=["relu1"], quantize_weights=False)
    assert not caplog.records and not info.unquantized_weights and info.high_precision == "fp32"
    assert info.placement.startswith("analysis")
