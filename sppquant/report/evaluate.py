"""`sppquant report`: FP32 vs FP16 vs INT8 on a labelled set, per size, per layer.

Flow (ONNX Runtime backend, CPU):

1. One calibration table per INT8 algorithm: the config's ``calibration.output`` when
   ``check_table`` says it is valid for that algorithm (and was calibrated with the
   config's ``tie_scales``), else a table in the report folder from an earlier report
   run if still valid, else a fresh ``calibrate()`` into the report folder. An explicit
   ``table`` (``--table``) is used as given. Whatever is used must list exactly the
   model's activations, or it is refused (TableError, exit 2).
2. Precisions: FP32 = the model; FP16 = ``sppquant.quantize.fp16.ort_fp16_model``; INT8 =
   the Q/DQ model ``sppquant.quantize.qdq.build_qdq_model`` makes from the table (the same
   model ``sppquant export-qdq`` writes; it is saved in the report folder), run by ONNX
   Runtime with all graph optimizations on (its QDQ fusions included).
3. One pass over the evaluation set, every batch at every configured size through every
   precision; metrics from ``sppquant.report.metrics``.
4. Per layer (first algorithm's table, first ``layer_images`` images, every size):
   LOCAL SQNR = the tensor fake-quantized alone vs its FP32 value; ACCUMULATED SQNR =
   that tensor in the whole INT8 Q/DQ model vs FP32; OUTPUT SQNR = the model output
   with only that tensor quantized (the FP32 model plus that one Q/DQ pair) vs FP32: the
   tensor's sensitivity, which ranks the list (tensors quantized in the Q/DQ model first).
   FP32 histograms of the same images feed the histogram plots.

Latency is wall time of the backend's run call per batch (``report.batch_size``), after
one warm-up run per precision and size, divided by the images: ms/image on the named
CPU with ONNX Runtime's CPU provider. It is never GPU time.

``report.json`` (format ``sppquant.report/1``; strict JSON: ``null`` stands for an
infinite SQNR, i.e. identical outputs, or for a value that does not exist):

- ``precisions``: one entry per column, keys ``fp32``, ``fp16``, ``int8`` (the FIRST
  algorithm) and ``int8_<algo>`` for every further algorithm. Each entry has
  ``precision``, ``algorithm`` (INT8 only), the metrics of ``sppquant.report.metrics``
  (``top1``, ``top5`` when >= 5 classes, both only with labels; ``agreement``,
  ``cosine``, ``sqnr_db``, ``max_abs_err``, ``mean_abs_err``, ``p99_abs_err``),
  ``images``, ``evaluations`` (images x sizes), ``latency_ms_per_image``, computed over
  all sizes pooled (each image counts once per size), and ``per_size`` with the same
  metrics for each size keyed ``"HxW"``.
- ``layers``: ranked list of ``name``, ``quantized`` (has a Q/DQ pair in the INT8 model),
  ``amax``, ``scale``, ``max_abs``, ``clipped_fraction``, ``zero_fraction``, ``local_sqnr_db``,
  ``accumulated_sqnr_db``, ``output_sqnr_db``, ``rank``; ``layers_algorithm`` and
  ``layers_images`` say what they were computed with.
- ``dataset`` (``evaluated``, ``listed``, ``bad_files``, ``labelled``, ``classes``),
  ``tables`` (per algorithm: ``path``, ``source``, ``reasons``: why the config's table was
  not used, or a given table's provenance problems),
  ``fp16`` (op types kept FP32), ``int8`` (per algorithm: Q/DQ model file, quantized
  tensors, ONNX Runtime's integer kernels), ``backend``, ``device``, ``notes``, ``plots``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sppquant import __version__
from sppquant.atomic import atomic_write_bytes, atomic_write_text, check_writable
from sppquant.backends import resolve_backend
from sppquant.calibration.histogram import Histogram
from sppquant.calibration.provenance import check_table
from sppquant.calibration.table import CalibrationTable, read_table
from sppquant.config import Config
from sppquant.data import BadFiles, ImageSet, iter_batches, labelled_set
from sppquant.errors import BackendUnavailable, DataError, UserError
from sppquant.report.metrics import SqnrAccumulator, jsonable, output_metrics

log = logging.getLogger(__name__)

REPORT_FORMAT = "sppquant.report/1"
LAYER_IMAGES = 64
ALGORITHMS = ("entropy2", "minmax", "percentile")


# --------------------------------------------------------------------------- tables


@dataclass
class TableChoice:
    algorithm: str
    path: Path
    table: CalibrationTable
    source: str  # "config", "report folder (reused)", "calibrated", "given"
    reasons: list[str] = field(default_factory=list)  # why the config's table was not used
    tie_scales: bool | None = None


def _valid(path: Path, cfg: Config, algorithm: str) -> list[str]:
    status = check_table(path, cfg, algorithm)
    return status.reasons


def resolve_table(cfg: Config, algorithm: str, out_dir: Path, given: Path | None = None,
                  progress: bool = True) -> TableChoice:
    if given is not None:
        table = read_table(given)
        status = check_table(given, cfg, algorithm)
        if not status.valid:
            log.warning("table %s: %s (used as given)", given, status.explain())
        return TableChoice(algorithm, given, table, "given", [] if status.valid else status.reasons)
    reasons = _valid(cfg.calibration.output, cfg, algorithm)
    if not reasons:
        return TableChoice(algorithm, cfg.calibration.output, read_table(cfg.calibration.output), "config",
                           tie_scales=cfg.calibration.tie_scales)
    own = out_dir / f"calibration_{algorithm}.cache"
    if not _valid(own, cfg, algorithm):
        log.info("%s table: reusing %s from an earlier report run", algorithm, own)
        return TableChoice(algorithm, own, read_table(own), "report folder (reused)", reasons,
                           cfg.calibration.tie_scales)
    from sppquant.calibration.calibrate import calibrate

    log.info("%s table: config table %s not usable (%s); calibrating into %s", algorithm, cfg.calibration.output,
             "; ".join(reasons), own)
    result = calibrate(cfg, output=own, algorithm=algorithm, backend="onnxruntime", progress=progress)
    return TableChoice(algorithm, own, result.table, "calibrated", reasons, cfg.calibration.tie_scales)


# --------------------------------------------------------------------------- runners


class _Ort:
    """A precision's ONNX Runtime session: ``run(x) -> outputs`` plus timing."""

    def __init__(self, model: onnx.ModelProto, input_name: str, extra_outputs: Sequence[str] = ()) -> None:
        from sppquant.backends.onnxruntime import OrtRunner

        self.runner = OrtRunner(model, extra_outputs=extra_outputs)
        self.input_name = input_name
        self.output = self.runner.model_outputs[0]
        self.threads = self.runner.session.get_session_options().intra_op_num_threads

    def run(self, x: np.ndarray, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return self.runner.run({self.input_name: x}, outputs if outputs is not None else [self.output])

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(x)[self.output], dtype=np.float32)


def _tensorrt_runner_class() -> Any:
    """`TrtRunner`, or None when the TensorRT backend cannot be imported (tests swap in a fake)."""
    try:
        from sppquant.backends.tensorrt import TrtRunner
    except ImportError:
        return None
    return TrtRunner


def choose_backend(requested: str) -> str:
    """``onnxruntime`` or ``tensorrt`` (only with an engine runner); BackendUnavailable otherwise."""
    chosen = resolve_backend(requested)
    if chosen == "tensorrt" and _tensorrt_runner_class() is None:
        if requested == "auto":
            log.info("TensorRT is installed but sppquant.backends.tensorrt has no engine runner; using ONNX Runtime")
            return "onnxruntime"
        raise BackendUnavailable("backend 'tensorrt' cannot run reports: sppquant.backends.tensorrt has no engine "
                                 "runner in this version; use --backend onnxruntime")
    return chosen


class _Trt:
    """A precision's TensorRT engine through ``sppquant.backends.tensorrt``'s runner (same ``logits``)."""

    threads = None

    def __init__(self, engine: Path, cfg: Config, output: str) -> None:
        self.runner = _tensorrt_runner_class()(engine, cfg.build.plugin_library)
        self.input_name, self.output = cfg.model.input_name, output

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.runner.run({self.input_name: x}, [self.output])[self.output], dtype=np.float32)

    def close(self) -> None:
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()  # device buffers, context and engine, deterministically


def _tensorrt_variants(cfg: Config, algorithms: list[str], output: str) -> tuple[dict[str, Any], dict[str, str]]:
    """FP32/FP16/INT8 engines from ``sppquant build`` (build.output_dir); the INT8 one has one algorithm."""
    from sppquant.backends.tensorrt.settings import plan_builds

    if algorithms != [cfg.calibration.algorithm]:
        raise UserError(f"--backend tensorrt: the INT8 engine is built with calibration.algorithm "
                        f"({cfg.calibration.algorithm}); --algorithms can only be {cfg.calibration.algorithm} "
                        "(use --backend onnxruntime to compare algorithms)")
    plans = plan_builds(cfg, ("fp32", "fp16", "int8"), cfg.build.output_dir, False)
    missing = [str(p.engine_path) for p in plans if not p.engine_path.is_file()]
    if missing:
        raise UserError(f"--backend tensorrt: engine(s) not found: {', '.join(missing)}; run sppquant build "
                        "--config ... first")
    return {p.precision: _Trt(p.engine_path, cfg, output) for p in plans}, \
        {p.precision: str(p.engine_path) for p in plans}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# --------------------------------------------------------------------------- evaluation


@dataclass
class ReportResult:
    output_dir: Path
    report: dict[str, Any]
    markdown_path: Path
    json_path: Path
    plots: list[Path]
    seconds: float


def _eval_set(cfg: Config) -> tuple[ImageSet, list[str]]:
    rep = cfg.report
    if rep.images is None:
        raise DataError("config: report.images: no evaluation images configured")
    notes = []
    try:
        images = labelled_set(rep.images, rep.labels, cfg.calibration.extensions, rep.max_images)
    except DataError as exc:
        if rep.labels != "folders" or "subfolder per class" not in str(exc):
            raise
        images = labelled_set(rep.images, "none", cfg.calibration.extensions, rep.max_images)
        notes.append(f"{rep.images} has no class subfolders: no labels, so only agreement with FP32 "
                     "(no accuracy) is reported")
    if rep.labels == "none":
        notes.append("report.labels is 'none': only agreement with FP32 (no accuracy) is reported")
    return images, notes


def _size_key(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _pool(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), np.float32)


def count_ort_fusions(model: onnx.ModelProto) -> dict[str, int]:
    """Op types in ONNX Runtime's optimized graph that run on integer data (QLinear*, int8 ops)."""
    import tempfile

    import onnxruntime as ort

    from sppquant.spp.onnx import rewrite_for_onnxruntime

    with tempfile.TemporaryDirectory(prefix="sppquant-ort-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = path
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # serialisable level, same QDQ fusions
        ort.InferenceSession(rewrite_for_onnxruntime(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        opt = onnx.load(path)
    counts: dict[str, int] = {}
    for n in opt.graph.node:
        if n.op_type.startswith("QLinear") or n.op_type in ("QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear") \
                or (n.op_type in ("MaxPool",) and any("quantized" in i for i in n.input)):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    counts["QuantizeLinear (left)"] = sum(n.op_type == "QuantizeLinear" for n in opt.graph.node)
    counts["DequantizeLinear (left)"] = sum(n.op_type == "DequantizeLinear" for n in opt.graph.node)
    return counts


def build_report(
    cfg: Config,
    output_dir: str | Path | None = None,
    backend: str | None = None,
    algorithms: Sequence[str] | None = None,
    table: str | Path | None = None,
    layer_images: int = LAYER_IMAGES,
    progress: bool = True,
) -> ReportResult:
    """Evaluate FP32/FP16/INT8 and write report.md, report.json and plots into ``output_dir``."""
    from sppquant.backends.onnxruntime import activation_names, load_model
    from sppquant.quantize.fp16 import ort_fp16_model
    from sppquant.quantize.qdq import build_qdq_model, check_qdq_model, check_table_matches

    start = time.perf_counter()
    out_dir = Path(output_dir) if output_dir is not None else cfg.report.output_dir
    check_writable(out_dir / "report.json", "report")
    algorithms = list(dict.fromkeys(algorithms or cfg.report.algorithms))
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown or not algorithms:
        raise UserError(f"--algorithms: unknown algorithm(s) {', '.join(unknown) or '(none given)'}; "
                        f"expected a comma list of {', '.join(ALGORITHMS)}")
    chosen = choose_backend(backend or cfg.backend)

    model = load_model(cfg.model.path, cfg.model.input_name)
    names = activation_names(model)
    images, notes = _eval_set(cfg)  # fail on data problems before any calibration work
    input_name = cfg.model.input_name

    # -- tables and models ---------------------------------------------------------------
    tables: dict[str, TableChoice] = {}
    qdq: dict[str, tuple[onnx.ModelProto, Any]] = {}
    for i, algo in enumerate(algorithms):
        choice = resolve_table(cfg, algo, out_dir, Path(table) if (table is not None and i == 0) else None, progress)
        check_table_matches(choice.table, names, str(choice.path), str(cfg.model.path))
        tables[algo] = choice
        model_q, info = build_qdq_model(model, choice.table)
        check_qdq_model(model_q, f"INT8 Q/DQ model ({algo})")
        qdq[algo] = (model_q, info)
        atomic_write_bytes(out_dir / f"model_int8_{algo}.qdq.onnx", model_q.SerializeToString())
    fp16_model, fp16_kept, fp16_moved = ort_fp16_model(model)

    variants: dict[str, Any]
    variant_info: dict[str, dict[str, Any]] = {"fp32": {"precision": "fp32"}, "fp16": {"precision": "fp16"}}
    if chosen == "tensorrt":
        variants, engines = _tensorrt_variants(cfg, algorithms, model.graph.output[0].name)
        for key in variants:
            variant_info.setdefault(key, {"precision": key})["engine"] = engines[key]
        variant_info["int8"]["algorithm"] = algorithms[0]
    else:
        variants = {"fp32": _Ort(model, input_name), "fp16": _Ort(fp16_model, input_name)}
        for i, algo in enumerate(algorithms):
            key = "int8" if i == 0 else f"int8_{algo}"
            variants[key] = _Ort(qdq[algo][0], input_name)
            variant_info[key] = {"precision": "int8", "algorithm": algo, "model": f"model_int8_{algo}.qdq.onnx"}

    # -- main pass -----------------------------------------------------------------------
    sizes = list(cfg.input.sizes)
    outputs = {k: {s: [] for s in sizes} for k in variants}
    seconds = {k: {s: 0.0 for s in sizes} for k in variants}
    timed = {k: {s: 0 for s in sizes} for k in variants}
    labels: list[int] = []
    bad = BadFiles()
    warm = set()
    rep = cfg.report
    for batch in iter_batches(images, cfg.preprocess, sizes, rep.batch_size, "keep", rep.bad_files,
                              cfg.calibration.workers, bad=bad, progress=progress, desc="report"):
        if batch.labels is not None:
            labels.extend(batch.labels)
        for s, x in zip(sizes, batch.inputs):
            for key, runner in variants.items():
                if (key, s) not in warm:
                    runner.logits(x)  # warm-up: allocations and first-run costs are not latency
                    warm.add((key, s))
                t0 = time.perf_counter()
                y = runner.logits(x)
                seconds[key][s] += time.perf_counter() - t0
                timed[key][s] += x.shape[0]
                outputs[key][s].append(y.reshape(y.shape[0], -1))
    for runner in variants.values():
        if hasattr(runner, "close"):
            runner.close()
    lab = np.asarray(labels, dtype=np.int64) if images.labels is not None else None
    num_classes = int(_pool(outputs["fp32"][sizes[0]]).shape[1])
    if lab is not None and lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise DataError(f"{rep.images}: labels span {lab.min()}..{lab.max()} but the model has {num_classes} outputs")

    precisions: dict[str, Any] = {}
    for key in variants:
        per_size = {}
        for s in sizes:
            ref, y = _pool(outputs["fp32"][s]), _pool(outputs[key][s])
            m = output_metrics(ref, y, lab, num_classes)
            m["latency_ms_per_image"] = 1000.0 * seconds[key][s] / max(1, timed[key][s])
            per_size[_size_key(s)] = m
        ref_all = np.concatenate([_pool(outputs["fp32"][s]) for s in sizes])
        y_all = np.concatenate([_pool(outputs[key][s]) for s in sizes])
        lab_all = np.concatenate([lab] * len(sizes)) if lab is not None else None
        pooled = output_metrics(ref_all, y_all, lab_all, num_classes)
        pooled["images"] = int(y_all.shape[0] // len(sizes))
        pooled["evaluations"] = int(y_all.shape[0])
        pooled["latency_ms_per_image"] = 1000.0 * sum(seconds[key].values()) / max(1, sum(timed[key].values()))
        precisions[key] = {**variant_info[key], **pooled, "per_size": per_size}

    # -- per layer -----------------------------------------------------------------------
    primary = algorithms[0]
    layers, histograms, layer_count = per_layer_analysis(cfg, model, names, tables[primary].table, qdq[primary],
                                                         images, layer_images, progress)

    # -- assemble ------------------------------------------------------------------------
    import onnxruntime as ort

    if chosen == "tensorrt":
        from sppquant.backends import tensorrt_version
        from sppquant.backends.tensorrt._trt import gpu_name

        backend_info = {"name": chosen, "runtime": f"TensorRT {tensorrt_version()}", "provider": "engines from "
                        "sppquant build", "graph_optimizations": "TensorRT builder"}
        device = {"kind": "gpu", "name": gpu_name(), "threads": None, "cores": os.cpu_count(),
                  "batch_size": rep.batch_size,
                  "latency": "wall time per batch incl. host<->device copies / images, after one warm-up run; GPU"}
    else:
        backend_info = {"name": chosen, "runtime": f"ONNX Runtime {ort.__version__}",
                        "provider": "CPUExecutionProvider", "graph_optimizations": "all (ORT_ENABLE_ALL)"}
        device = {"kind": "cpu", "name": cpu_name(), "threads": variants["fp32"].threads, "cores": os.cpu_count(),
                  "batch_size": rep.batch_size,
                  "latency": "wall time per batch / images, after one warm-up run; CPU, not GPU"}
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "sppquant_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": str(cfg.source) if cfg.source else None,
        "model": {"path": str(cfg.model.path), "input_name": input_name, "outputs": num_classes},
        "backend": backend_info,
        "device": device,
        "dataset": {
            "root": str(rep.images),
            "labelled": lab is not None,
            "labels": rep.labels if lab is not None else "none",
            "listed": len(images),
            "evaluated": int(_pool(outputs["fp32"][sizes[0]]).shape[0]),
            "bad_files": [{"path": p, "reason": r} for p, r in bad.items],
            "classes": num_classes,
        },
        "sizes": [list(s) for s in sizes],
        "algorithms": algorithms,
        "tables": {a: {"path": str(c.path), "source": c.source, "header": c.table.header,
                       "tensors": len(c.table.scales), "reasons": c.reasons,
                       "tie_scales": c.tie_scales} for a, c in tables.items()},
        "precisions": precisions,
        "fp16": {"ort_fp32_ops": fp16_kept, "ort_precision_free_fp32_ops": fp16_moved,
                 "note": "weights and activations in FP16; ops without an FP16 kernel in ONNX Runtime's CPU "
                         "provider compute in FP32 between explicit Casts (their inputs/outputs stay FP16-rounded)"},
        "int8": {a: {"model": f"model_int8_{a}.qdq.onnx",
                     "quantized_activations": sorted(qdq[a][1].activations),
                     "quantized_weights": {w: axis for w, (_, axis) in qdq[a][1].weights.items()},
                     "ort_integer_kernels": count_ort_fusions(qdq[a][0])} for a in algorithms},
        "layers_algorithm": primary,
        "layers_backend": "onnxruntime (FP32 model and the Q/DQ model; a table analysis, whatever the backend)",
        "layers_images": layer_count,
        "layers": layers,
        "notes": notes,
    }
    from sppquant.report.render import render_markdown, render_plots

    plots = render_plots(report, histograms, {a: tables[a].table for a in algorithms}, out_dir)
    report["plots"] = [p.name for p in plots]
    report["seconds"] = round(time.perf_counter() - start, 2)
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    atomic_write_text(json_path, json.dumps(jsonable(report), indent=2, allow_nan=False) + "\n")
    atomic_write_text(md_path, render_markdown(report))
    log.info("wrote %s (%.1f s)", md_path, report["seconds"])
    return ReportResult(out_dir, report, md_path, json_path, plots, report["seconds"])


def per_layer_analysis(
    cfg: Config,
    model: onnx.ModelProto,
    names: list[str],
    table: CalibrationTable,
    qdq_pair: tuple[onnx.ModelProto, Any],
    images: ImageSet,
    limit: int,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Histogram], int]:
    """LOCAL, ACCUMULATED and OUTPUT SQNR per table tensor, on the first ``limit`` images at every size."""
    from sppquant.quantize.qdq import build_qdq_model, fake_quantize

    qmodel, info = qdq_pair
    input_name = cfg.model.input_name
    graph_outputs = {o.name for o in model.graph.output}
    fp32 = _Ort(model, input_name, extra_outputs=names)
    int8_read = {n: info.activations.get(n, n) for n in names}  # the INT8 value consumers see
    int8 = _Ort(qmodel, input_name, extra_outputs=list(int8_read.values()))
    singles = {n: _Ort(build_qdq_model(model, {n: table.scales[n]}, only=[n], quantize_weights=False)[0], input_name)
               for n in names if n not in graph_outputs}
    local = {n: SqnrAccumulator() for n in names}
    accum = {n: SqnrAccumulator() for n in names}
    output = {n: SqnrAccumulator() for n in names}
    hists = {n: Histogram() for n in names}
    zeros = dict.fromkeys(names, 0)
    subset = replace(images, paths=images.paths[:limit],
                     labels=images.labels[:limit] if images.labels is not None else None)
    count = 0
    fp32_outs = [n for n in names if n != input_name]
    for batch in iter_batches(subset, cfg.preprocess, cfg.input.sizes, cfg.report.batch_size, "keep", "skip",
                              cfg.calibration.workers, bad=BadFiles(), progress=progress, desc="layers"):
        count += batch.inputs[0].shape[0]
        for x in batch.inputs:
            ref = fp32.run(x, fp32_outs)
            ref[input_name] = x
            q = int8.run(x, [t for t in dict.fromkeys(int8_read.values()) if t != input_name])
            logits_ref = ref[fp32.output]
            for n in names:
                a = ref[n]
                hists[n].update(a)
                zeros[n] += int(np.count_nonzero(a == 0))
                fq = fake_quantize(a, table.scales[n])
                local[n].add(a, fq)
                accum[n].add(a, q[int8_read[n]] if int8_read[n] != input_name else a)  # unquantized input: exact
                if n in singles:
                    output[n].add(logits_ref, singles[n].logits(x))
                else:  # a graph output: quantizing it alone changes the output by exactly its local error
                    output[n].add(a, fq)
    rows = []
    for n in names:
        rows.append({
            "name": n,
            "quantized": n in info.activations,
            "amax": table.amax(n),
            "scale": table.scales[n],
            "max_abs": hists[n].max_abs,
            "clipped_fraction": _clipped_fraction(hists[n], table.amax(n)),
            "zero_fraction": zeros[n] / hists[n].count if hists[n].count else 0.0,
            "local_sqnr_db": local[n].db,
            "accumulated_sqnr_db": accum[n].db,
            "output_sqnr_db": output[n].db,
        })
    rows.sort(key=lambda r: (not r["quantized"], _rank_key(r["output_sqnr_db"]), _rank_key(r["local_sqnr_db"])))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows, hists, count


def _rank_key(v: float) -> float:
    return v if not math.isnan(v) else math.inf


def _clipped_fraction(hist: Histogram, amax: float) -> float:
    """Fraction of values with |x| beyond amax (bin resolution)."""
    if hist.count == 0 or hist.bin_width == 0.0:
        return 0.0
    counts = hist.counts
    first = int(math.ceil(amax / hist.bin_width))
    return float(counts[first:].sum()) / hist.count if first < counts.size else 0.0
