"""Where the Q/DQ export puts Q/DQ, by consumer op type, on the demo and a small residual CNN.

Three steps, each writing JSON into ``--out``:

- ``ours`` (the sppquant venv): exports both models with ``build_qdq_model`` (FP16 and
  FP32 high precision), counts Q/DQ by consumer op type and the op types ONNX Runtime's
  optimized graph runs; writes the FP32 models (the demo with its SPP node rewritten into
  standard ops, since ModelOpt calibrates with ONNX Runtime on the CPU and cannot run the
  plugin) and calibration data for the next step;
- ``modelopt`` (a venv with ``nvidia-modelopt[onnx]``; no sppquant needed): ModelOpt's
  ONNX INT8 PTQ (``modelopt.onnx.quantization.quantize``, defaults: FP16 high precision,
  GEMV detection) on the same models, counted the same way;
- ``gemv`` (the sppquant venv): the demo's logits Gemm (K=128, N=10) quantized vs float,
  over the labelled evaluation set at every configured size.

Usage (repository root):
    python benchmarks/qdq_placement.py ours --out /tmp/qdq_placement --table out/sppnet_digits.cache
    /path/to/modelopt-venv/bin/python benchmarks/qdq_placement.py modelopt --out /tmp/qdq_placement
    python benchmarks/qdq_placement.py gemv --table out/sppnet_digits.cache
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("qdq_placement")


def _conv(name: str, x: str, cin: int, cout: int, k: int, rng: np.random.Generator, stride: int = 1
          ) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    w = (rng.standard_normal((cout, cin, k, k)) * (2.0 / (cin * k * k)) ** 0.5).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.05).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name,
                            pads=[k // 2] * 4, strides=[stride, stride])
    return node, [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]


def residual_cnn(seed: int = 0, classes: int = 10, width: int = 16) -> onnx.ModelProto:
    """A small ResNet/FPN-style CNN with every op kind of issue 12: residual Adds, ConvTranspose, Resize, GEMMs.

    stem conv -> identity block (conv-relu-conv-BN + skip) -> downsampling block (two conv
    branches) -> decoder (ConvTranspose and Resize+1x1 conv, summed) -> + skip -> conv ->
    GlobalAveragePool -> Gemm(16->32) -> Relu -> Gemm(32->classes, GEMV-sized).
    """
    rng = np.random.default_rng(seed)
    c = width
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def conv(name: str, x: str, cin: int, cout: int, k: int = 3, stride: int = 1) -> str:
        node, ws = _conv(name, x, cin, cout, k, rng, stride)
        nodes.append(node)
        inits.extend(ws)
        return name

    def op(op_type: str, inputs: list[str], out: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    x0 = op("Relu", [conv("stem", "image", 3, c)], "stem_relu")
    # identity block, BN after the second conv (not folded, as some exporters leave it)
    bn = {k: numpy_helper.from_array(v, f"bn.{k}") for k, v in {
        "scale": (1 + 0.1 * rng.standard_normal(c)).astype(np.float32), "bias": (0.1 * rng.standard_normal(c)).astype(
            np.float32), "mean": (0.1 * rng.standard_normal(c)).astype(np.float32), "var": np.ones(c, np.float32)}.items()}
    inits.extend(bn.values())
    b1 = conv("b1_conv2", op("Relu", [conv("b1_conv1", x0, c, c)], "b1_relu1"), c, c)
    b1 = op("BatchNormalization", [b1, *(f"bn.{k}" for k in ("scale", "bias", "mean", "var"))], "b1_bn")
    x1 = op("Relu", [op("Add", [b1, x0], "b1_add")], "b1_out")
    # downsampling block: main branch (2 convs) + 1x1 stride-2 projection
    main = conv("b2_conv2", op("Relu", [conv("b2_conv1", x1, c, 2 * c, stride=2)], "b2_relu1"), 2 * c, 2 * c)
    x2 = op("Relu", [op("Add", [main, conv("b2_down", x1, c, 2 * c, k=1, stride=2)], "b2_add")], "b2_out")
    # decoder: ConvTranspose and Resize + 1x1 conv, summed, then the skip from x1
    wt = (rng.standard_normal((2 * c, c, 2, 2)) * 0.2).astype(np.float32)
    inits.append(numpy_helper.from_array(wt, "up.weight"))
    up_a = op("Relu", [op("ConvTranspose", [x2, "up.weight"], "up_deconv", strides=[2, 2])], "up_relu")
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up.scales"))
    up_b = conv("up_proj", op("Resize", [x2, "", "up.scales"], "up_resize", mode="nearest"), 2 * c, c, k=1)
    merged = op("Relu", [op("Add", [up_b, up_a], "up_add")], "up_out")
    x3 = op("Relu", [op("Add", [merged, x1], "skip_add")], "skip_out")
    feat = op("Flatten", [op("GlobalAveragePool", [op("Relu", [conv("head_conv", x3, c, c)], "head_relu")],
                             "gap")], "flat", axis=1)
    for name, (k, n) in {"fc1": (c, 32), "fc2": (32, classes)}.items():
        inits += [numpy_helper.from_array((rng.standard_normal((n, k)) * (1 / k) ** 0.5).astype(np.float32),
                                          f"{name}.weight"),
                  numpy_helper.from_array(np.zeros(n, np.float32), f"{name}.bias")]
    h = op("Relu", [op("Gemm", [feat, "fc1.weight", "fc1.bias"], "fc1", transB=1)], "fc1_relu")
    op("Gemm", [h, "fc2.weight", "fc2.bias"], "logits", transB=1)
    graph = helper.make_graph(nodes, "residual_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                             producer_name="sppquant-benchmarks")


def minmax_table(model: onnx.ModelProto, batches: list[np.ndarray], input_name: str = "image"):
    """A MinMax table from a few batches (max |x| per activation), scales tied like ``calibrate`` does."""
    from sppquant.backends.onnxruntime import OrtRunner, activation_names
    from sppquant.calibration.table import CalibrationTable

    names = activation_names(model)
    runner = OrtRunner(model, extra_outputs=names)
    amax: dict[str, float] = {}
    for x in batches:
        acts = runner.run({input_name: x}, [n for n in names if n != input_name])
        acts[input_name] = x
        for n, a in acts.items():
            amax[n] = max(amax.get(n, 0.0), float(np.abs(a).max()))
    return CalibrationTable.from_amax(101601, "MinMaxCalibration", {n: a if a > 0 else 1.0 for n, a in amax.items()})


def placement_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Quantized inputs by consumer op type: a node input read from a DequantizeLinear (weights counted apart)."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    counts: Counter = Counter()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for name in node.input:
            src = producer.get(name)
            if src is None:
                continue
            if src.op_type == "DequantizeLinear":
                q = producer.get(src.input[0])
                is_weight = src.input[0] in inits or (q is not None and q.input[0] in inits)
                counts[f"{node.op_type} {'weight' if is_weight else 'act'}"] += 1
            elif src.op_type == "QuantizeLinear":
                counts[f"{node.op_type} int8-in (plugin)"] += 1
    return dict(sorted(counts.items()))


def ort_kernels(model: onnx.ModelProto) -> dict[str, int]:
    """Op types in ONNX Runtime's optimized graph (CPU, ORT_ENABLE_EXTENDED) for the Q/DQ model, SPP rewritten."""
    import tempfile

    import onnxruntime as ort

    from sppquant.ops import rewrite_for_onnxruntime
    from sppquant.ops.plugin_io import dequantize_plugin_io

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(rewrite_for_onnxruntime(dequantize_plugin_io(model)).SerializeToString(), opts,
                             providers=["CPUExecutionProvider"])
        opt = onnx.load(str(Path(tmp) / "opt.onnx"))
    c = Counter(n.op_type for n in opt.graph.node)
    keep = ("QLinear", "QGemm", "ConvInteger", "MatMulInteger", "QuantizeLinear", "DequantizeLinear", "Conv", "Gemm",
            "FusedConv", "MatMul", "FusedMatMul")
    return {k: v for k, v in sorted(c.items()) if k.startswith(keep)}


def _save_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
    log.info("wrote %s", path)


def step_ours(out: Path, table_path: Path) -> None:
    from sppquant.backends.onnxruntime import load_model
    from sppquant.calibration.table import read_table
    from sppquant.ops import rewrite_for_onnxruntime
    from sppquant.quantize.qdq import build_qdq_model, check_qdq_model

    rng = np.random.default_rng(0)
    demo = load_model(REPO / "sppquant" / "demo" / "sppnet_digits.onnx")
    resnet = residual_cnn()
    data = {"demo": rng.standard_normal((16, 3, 32, 32)).astype(np.float32),
            "residual_cnn": rng.standard_normal((16, 3, 32, 32)).astype(np.float32)}
    tables = {"demo": read_table(table_path, drop_zero_inf=True), "residual_cnn": minmax_table(resnet, [data["residual_cnn"]])}
    results = {}
    for name, model in {"demo": demo, "residual_cnn": resnet}.items():
        for hp in ("fp16", "fp32"):
            qdq, info = build_qdq_model(model, tables[name], high_precision=hp)
            check_qdq_model(qdq, name)
            onnx.save(qdq, str(out / f"{name}.ours.{hp}.onnx"))
            results[f"{name} {hp}"] = {"placement": placement_counts(qdq), "ort_kernels": ort_kernels(qdq),
                                       "unquantized_weights": info.unquantized_weights,
                                       "residual_adds": info.residual_adds, "plugins": info.plugins}
        fp32 = rewrite_for_onnxruntime(model) if name == "demo" else model
        onnx.save(fp32, str(out / f"{name}.fp32.onnx"))
        np.savez(out / f"{name}.calib.npz", image=data[name])
    _save_json(out / "ours.json", results)


def step_modelopt(out: Path) -> None:
    from modelopt.onnx.quantization import quantize

    results = {}
    for name in ("demo", "residual_cnn"):
        path = out / f"{name}.modelopt.onnx"
        calib = dict(np.load(out / f"{name}.calib.npz"))
        quantize(str(out / f"{name}.fp32.onnx"), quantize_mode="int8", calibration_data=calib,
                 calibration_method="max", calibration_eps=["cpu"], output_path=str(path))
        model = onnx.load(str(path))
        results[name] = {"placement": placement_counts(model),
                         "opset": [(o.domain, o.version) for o in model.opset_import],
                         "scale_types": sorted({TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer
                                                if i.name.endswith("_scale")}),
                         "ort_kernels": _ort_kernels_plain(model)}
    _save_json(out / "modelopt.json", results)


def _ort_kernels_plain(model: onnx.ModelProto) -> dict[str, int]:
    """``ort_kernels`` for a model with standard ops only (no sppquant import needed)."""
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        opt = onnx.load(str(Path(tmp) / "opt.onnx"))
    c = Counter(n.op_type for n in opt.graph.node)
    return {k: v for k, v in sorted(c.items()) if k.startswith(("QLinear", "QGemm", "Quantize", "Dequantize", "Conv",
                                                                  "FusedConv", "Gemm", "MatMul"))}


def step_gemv(table_path: Path, config: Path) -> None:
    """Logits Gemm quantized vs float (FP32 rest, to isolate it): accuracy, agreement and SQNR vs FP32."""
    from dataclasses import replace

    from sppquant.backends.onnxruntime import OrtRunner, load_model
    from sppquant.calibration.table import read_table
    from sppquant.config import load_config
    from sppquant.data import BadFiles, iter_batches, labelled_set
    from sppquant.quantize.qdq import build_qdq_model
    from sppquant.quantize.rules import default_rules
    from sppquant.tasks.metrics import output_metrics

    cfg = load_config(config)
    model = load_model(cfg.model.path, cfg.model.input_name)
    table = read_table(table_path, drop_zero_inf=True)
    all_gemms = default_rules().with_rules([replace(r, min_gemm_dim=0) for r in default_rules() if r.min_gemm_dim])
    runners = {"fp32": OrtRunner(model)}
    for key, rules in {"logits Gemm float (default)": None, "logits Gemm INT8": all_gemms}.items():
        for hp in ("fp32", "fp16"):
            runners[f"{key}, rest {hp}"] = OrtRunner(build_qdq_model(model, table, high_precision=hp, rules=rules)[0])
    images = labelled_set(cfg.report.images, cfg.report.labels, cfg.calibration.extensions)
    outs: dict[str, list[np.ndarray]] = {k: [] for k in runners}
    labels: list[int] = []
    for batch in iter_batches(images, cfg.preprocess, cfg.input.sizes, 64, "keep", "skip", 2, bad=BadFiles(),
                              progress=False):
        for x in batch.inputs:
            labels.extend(batch.labels)
            for k, r in runners.items():
                outs[k].append(r.run({cfg.model.input_name: x})[r.model_outputs[0]])
    lab = np.asarray(labels)
    ref = np.concatenate(outs["fp32"])
    result = {k: {m: v for m, v in output_metrics(ref, np.concatenate(o), lab, ref.shape[1]).items()
                  if m in ("top1", "agreement", "sqnr_db", "cosine")} for k, o in outs.items()}
    macs = {n.name: _macs(n, model, cfg.input.sizes[0]) for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
    result["macs_at_first_size"] = macs
    print(json.dumps(result, indent=2, default=float))


def _macs(node: onnx.NodeProto, model: onnx.ModelProto, size: tuple[int, int]) -> int:
    """Multiply-accumulates per image of a Conv/Gemm at input ``size`` (shapes from ONNX shape inference)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, 3, *size)):
        d.dim_value = v
    from sppquant.ops import rewrite_for_onnxruntime

    inferred = onnx.shape_inference.infer_shapes(rewrite_for_onnxruntime(fixed))
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    w = next(i for i in model.graph.initializer if i.name == node.input[1])
    out = shapes.get(node.output[0], [])
    if node.op_type == "Gemm":
        return int(np.prod(w.dims))
    return int(np.prod(out[1:]) * np.prod(w.dims[1:])) if out else -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["ours", "modelopt", "gemv"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/qdq_placement"))
    parser.add_argument("--table", type=Path, default=REPO / "out" / "sppnet_digits.cache")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "sppnet_digits.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "ours":
        step_ours(args.out, args.table)
    elif args.step == "modelopt":
        step_modelopt(args.out)
    else:
        step_gemv(args.table, args.config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
