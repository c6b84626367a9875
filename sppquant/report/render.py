"""Render a typed `Report` (``sppquant.report.model``) as Markdown and PNG plots (matplotlib, Agg).

The Markdown links the plots relatively, so the folder reads well on GitHub or copied
elsewhere. PNGs are written atomically (rendered to memory, then temp file + rename).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from sppquant.atomic import atomic_save_figure
from sppquant.calibration.histogram import Histogram
from sppquant.calibration.table import CalibrationTable
from sppquant.report.model import Report
from sppquant.tasks import Column

HIST_PLOTS = 4  # most sensitive quantized tensors shown in histograms.png
PRECISION_COLORS = {"fp32": "#4c72b0", "fp16": "#55a868", "int8": "#c44e52"}
EXTRA_COLORS = ["#dd8452", "#8172b3", "#937860"]


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100.0 * v:.2f}%"


def _db(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isinf(v) and v > 0):
        return "inf"
    return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.1f}"


def _num(v: Any, fmt: str = ".3g") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


# --------------------------------------------------------------------------- markdown


def _cell(col: Column, value: Any) -> str:
    return {"pct": _pct, "db": _db, "f6": lambda v: _num(v, ".6f")}.get(col.fmt, _num)(value)


def _precision_table(rows: list[tuple[str, Mapping[str, Any]]], columns: list[Column], device: str = "CPU") -> list[str]:
    head = ["precision"] + [c.header for c in columns] + [f"ms/image ({device})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows:
        cells = [name] + [_cell(c, m.get(c.key)) for c in columns] + [_num(m.get("latency_ms_per_image"), ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _shown_columns(report: Report) -> list[Column]:
    """The task's columns that some precision has a value for (top-5 needs >= 5 classes)."""
    return [c for c in report.columns if any(c.key in p.metrics for p in report.precisions.values())]


def _header(report: Report) -> list[str]:
    ds, dev, be = report.dataset, report.device, report.backend
    sizes = [f"{h}x{w}" for h, w in report.sizes]
    out = [f"# Precision report: {Path(report.model['path']).name}", ""]
    labels = f"{ds.labels} ({ds.classes} classes)" if ds.labelled else "none: agreement-only metrics"
    out.append(f"{ds.evaluated} images evaluated at {len(sizes)} size(s) ({', '.join(sizes)}) from `{ds.root}` "
               f"({ds.listed} listed, {len(ds.bad_files)} unreadable skipped); labels: {labels}; task: {report.task}.")
    if be.name != "tensorrt":
        out.append(f"Backend: {be.runtime} {be.provider}, graph optimizations {be.graph_optimizations}. "
                   f"Device: **{dev.kind.upper()}** {dev.name}, {dev.threads} thread(s), batch {dev.batch_size}; "
                   f"latency is wall time per image ({dev.latency.split(';')[0]}), "
                   f"{'not GPU time' if dev.kind == 'cpu' else dev.latency.split(';')[-1].strip()}.")
    else:
        out.append(f"Backend: {be.runtime} ({be.provider}). Device: **GPU** {dev.name}, batch "
                   f"{dev.batch_size}; latency: {dev.latency}. Per-layer analysis: ONNX Runtime on the CPU.")
    out.append("")
    for note in report.notes:
        out += [f"> **Note:** {note}", ""]
    return out


def _summary(report: Report) -> list[str]:
    cols, kind = _shown_columns(report), report.device.kind.upper()
    rows = [(p.label, {**p.metrics, "latency_ms_per_image": p.latency_ms_per_image}) for p in report.precisions.values()]
    out = ["## Summary (all sizes pooled)", ""]
    out += ["Each image counts once per size. FP32 agreement/cosine/SQNR are against itself (SQNR inf).", ""]
    out += _precision_table(rows, cols, kind) + ["", "## Per input size", ""]
    for h, w in report.sizes:
        s = f"{h}x{w}"
        out += [f"### {s}", ""]
        out += _precision_table([(p.label, p.per_size[s]) for p in report.precisions.values()], cols, kind) + [""]
    if "accuracy.png" in report.plots:
        out += ["![top-1 accuracy and agreement by precision](accuracy.png)", ""]
    return out


_SOURCES = {"config": "the config's table (valid per its provenance), reused",
            "calibrated": "none was valid: calibrated now and written there for later commands",
            "given": "given with --table"}


def _tables(report: Report) -> list[str]:
    out = ["## Calibration tables", ""]
    for algo, t in report.tables.items():
        line = f"- **{algo}**: `{t.path}` ({t.header}, {t.tensors} tensors): {_SOURCES.get(t.source, t.source)}"
        if t.reasons and t.source == "given":
            line += f"; its provenance check says: {'; '.join(t.reasons)}"
        elif t.reasons:
            line += f"; the config's table was not used because: {'; '.join(t.reasons)}"
        if t.tie_scales is not None:
            line += f"; tie_scales={str(t.tie_scales).lower()}"
        out.append(line)
    return out + [""]


def _int8(report: Report) -> list[str]:
    out = ["## INT8 (Q/DQ) models", ""]
    if report.backend.name == "tensorrt":
        out.append(f"INT8 numbers come from the TensorRT INT8 engine `{report.precisions['int8'].engine}` (built by "
                   "`sppquant build` from the table). The Q/DQ models below are the explicit-quantization form of "
                   "the same tables, for TensorRT 11; the per-layer view runs them in ONNX Runtime.")
    else:
        out.append("INT8 numbers come from the explicit-quantization model in this folder, the file "
                   "`sppquant export-qdq` writes for TensorRT 10/11 (ONNX Runtime runs plugin nodes through their "
                   "standard-op rewrites, as float math on dequantized values).")
    out.append("")
    for info in report.int8.values():
        left = info.ort_integer_kernels
        fused = ", ".join(f"{k} x{v}" for k, v in left.items() if "left" not in k) or "none"
        out.append(f"- `{info.model}`: placement: {info.placement or 'n/a'}.")
        out.append(f"  {len(info.quantized_activations)} activations quantized "
                   f"({', '.join(info.quantized_activations)}), {len(info.quantized_weights)} weights per-channel. "
                   "sppquant runs it with ONNX Runtime's QDQ fusions off: exact quantization, float math between "
                   "the pairs, as TensorRT's exact int32 accumulation gives. Plain ONNX Runtime would fuse into its "
                   f"integer kernels: {fused} (their x86 arithmetic can saturate; they are not TensorRT's).")
    return out + [""]


def _fp16(report: Report) -> list[str]:
    fp16, out = report.fp16, ["## FP16", ""]
    if report.backend.name == "tensorrt":
        out.append(f"FP16 numbers come from the TensorRT FP16 engine `{report.precisions['fp16'].engine}`.")
    else:
        out.append(f"FP16 = the model converted by `sppquant.quantize.fp16` ({fp16.note}). "
                   f"Kept FP32 because ONNX Runtime's provider has no FP16 kernel: "
                   f"{', '.join(fp16.ort_fp32_ops) or 'none'}. ONNX Runtime additionally moves "
                   f"{', '.join(fp16.ort_precision_free_fp32_ops) or 'nothing'} to FP32 on its own (inputs already "
                   "exact). TensorRT FP16 engines will differ in detail.")
    return out + [""]


def _layers(report: Report) -> list[str]:
    out = [f"## Per layer ({report.layers_algorithm}, first {report.layers_images} images x {len(report.sizes)} "
           "size(s))", ""]
    out.append("LOCAL = the tensor fake-quantized alone vs FP32; ACCUMULATED = the tensor in the whole INT8 Q/DQ model "
               "vs FP32; OUTPUT = model output SQNR with only this tensor quantized (its sensitivity). Ranked by OUTPUT "
               "SQNR, lowest (most sensitive) first; tensors the Q/DQ model does not quantize (TensorRT fuses them "
               "into the previous layer) are listed last. Clipped = share of |x| above amax on these images; zeros = "
               "share of exact zeros (ReLU outputs: a large zero share skews the entropy search, see the histograms).")
    out += ["", "| rank | tensor | in Q/DQ | amax | max abs | clipped | zeros | local SQNR dB | accumulated SQNR dB | "
            "output SQNR dB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.layers:
        out.append(f"| {r.rank} | `{r.name}` | {'yes' if r.quantized else 'no'} | {_num(r.amax, '.4g')} | "
                   f"{_num(r.max_abs, '.4g')} | {_pct(r.clipped_fraction)} | {_pct(r.zero_fraction)} | "
                   f"{_db(r.local_sqnr_db)} | {_db(r.accumulated_sqnr_db)} | {_db(r.output_sqnr_db)} |")
    out.append("")
    for name, alt in (("layer_sqnr.png", "per-layer SQNR"), ("histograms.png", "activation histograms with thresholds")):
        if name in report.plots:
            out += [f"![{alt}]({name})", ""]
    return out


_GENERIC_PLOTS = ("accuracy.png", "layer_sqnr.png", "histograms.png")


def _task_plots(report: Report) -> list[str]:
    """Plots the task's hook added, linked under one heading."""
    names = [p for p in report.plots if p not in _GENERIC_PLOTS]
    return ["## Task plots", ""] + [f"![{Path(n).stem.replace('_', ' ')}]({n})\n" for n in names] if names else []


def _per_class_ap(report: Report) -> list[str]:
    """Detection: AP@[.5:.95] per class (rows) and precision (columns); "-" where a class has no object."""
    per = {p.label: p.metrics["per_class_ap"] for p in report.precisions.values() if "per_class_ap" in p.metrics}
    if not per:
        return []
    classes = list(next(iter(per.values())))
    out = ["## Per-class AP@[.5:.95] (COCO)", "", "| class | " + " | ".join(per) + " |",
           "|---|" + "---|" * len(per)]
    for c in classes:
        cells = [("-" if ap.get(c) is None else f"{100 * ap[c]:.1f}") for ap in per.values()]
        out.append(f"| {c} | " + " | ".join(cells) + " |")
    return out + [""]


def render_markdown(report: Report) -> str:
    out = _header(report) + _summary(report) + _per_class_ap(report) + _tables(report) + _int8(report)
    out += _fp16(report) + _layers(report) + _task_plots(report)
    out.append(f"_sppquant {report.sppquant_version}, {report.created}, {report.seconds:.1f} s._")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- plots




def _color(key: str, i: int) -> str:
    return PRECISION_COLORS.get(key, EXTRA_COLORS[i % len(EXTRA_COLORS)])


def _bar_metrics(report: Report) -> list[tuple[str, str, bool]]:
    """(key, title, is_percent): the task's percent columns except top-5, else SQNR."""
    pct = [(c.key, c.header, True) for c in _shown_columns(report) if c.fmt == "pct" and c.key != "top5"]
    return pct[:2] or [("sqnr_db", "output SQNR vs FP32 (dB)", False)]


def plot_accuracy(report: Report, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prec = report.precisions
    keys = list(prec)
    groups = ["all sizes"] + [f"{h}x{w}" for h, w in report.sizes]
    metrics = _bar_metrics(report)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.0), squeeze=False)
    width = 0.8 / len(keys)
    for ax, (metric, title, percent) in zip(axes[0], metrics):
        values_all = []
        for i, key in enumerate(keys):
            vals = [prec[key].metrics.get(metric)] + [prec[key].per_size[g].get(metric) for g in groups[1:]]
            vals = [(100.0 if percent else 1.0) * v if v is not None and math.isfinite(v) else np.nan for v in vals]
            values_all += vals
            xs = np.arange(len(groups)) + (i - (len(keys) - 1) / 2) * width
            bars = ax.bar(xs, vals, width, label=prec[key].label, color=_color(key, i))
            for b, v in zip(bars, vals):
                ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7,
                            rotation=90 if len(keys) > 3 else 0, xytext=(0, 2), textcoords="offset points")
        finite = [v for v in values_all if np.isfinite(v)]
        top = 100.0 if percent else max(finite + [1.0])
        low = max(0.0, math.floor((min(finite) if finite else 0.0) - 5.0)) if percent else 0.0
        ax.set_ylim(low, top + (top - low) * 0.12)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_ylabel(("%" if percent else "dB") + (f" (axis starts at {low:.0f})" if low > 0 else ""))
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(keys), fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"{Path(report.model['path']).name}: {report.dataset.evaluated} images, "
                 f"{report.backend.runtime} ({report.device.kind.upper()})", fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def plot_layer_sqnr(report: Report, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [asdict(r) for r in report.layers]
    names = [r["name"] + ("" if r["quantized"] else " (not in Q/DQ)") for r in layers]
    series = [("output_sqnr_db", "output (only this tensor quantized)", "#c44e52"),
              ("accumulated_sqnr_db", "accumulated (whole INT8 model)", "#4c72b0"),
              ("local_sqnr_db", "local (this tensor alone)", "#55a868")]
    finite = [r[k] for r in layers for k, _, _ in series if r[k] is not None and math.isfinite(r[k])]
    cap = (max(finite) if finite else 60.0) + 10.0
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.55 * len(layers)))
    height = 0.8 / len(series)
    ys = np.arange(len(layers))
    for i, (key, label, color) in enumerate(series):
        vals = [r[key] for r in layers]
        shown = [cap if (v is None or math.isinf(v)) else v for v in vals]
        bars = ax.barh(ys + (i - 1) * height, shown, height, label=label, color=color)
        for b, v in zip(bars, vals):
            text = "inf" if v is None or math.isinf(v) else f"{v:.1f}"
            ax.annotate(text, (b.get_width(), b.get_y() + b.get_height() / 2), va="center", fontsize=7,
                        xytext=(2, 0), textcoords="offset points")
    ax.set_yticks(ys, names, fontsize=8)
    ax.invert_yaxis()  # most sensitive on top
    ax.set_xlabel("SQNR vs FP32 (dB, higher is better; 'inf' = identical)")
    ax.set_xlim(0, cap * 1.12)
    ax.set_title(f"Per-layer INT8 SQNR ({report.layers_algorithm}), most sensitive first", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.4 / max(1, len(layers))), ncol=3, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def plot_histograms(report: Report, histograms: Mapping[str, Histogram],
                    tables: Mapping[str, CalibrationTable], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r.name for r in report.layers if r.quantized and histograms[r.name].count][:HIST_PLOTS]
    if not chosen:
        return None
    cols = min(2, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(chosen):]:
        ax.axis("off")
    for ax, name in zip(axes.ravel(), chosen):
        h = histograms[name]
        counts = h.counts.reshape(256, -1).sum(axis=1)  # 2048 -> 256 bins for readability
        width = h.bin_width * 8
        last = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 1
        amaxes = {a: t.amax(name) for a, t in tables.items()}
        xmax = max([last * width] + list(amaxes.values())) * 1.08
        edges = np.arange(counts.size + 1) * width
        ax.stairs(np.maximum(counts, 0.5), edges, fill=True, color="#9db4d6", baseline=0.5)
        ax.set_yscale("log")
        ax.set_xlim(0, xmax)
        ax.set_ylim(0.5, None)
        for i, (algo, amax) in enumerate(amaxes.items()):
            ax.axvline(amax, color=["#c44e52", "#dd8452", "#8172b3"][i % 3], ls="--", lw=1.4,
                       label=f"{algo} amax {amax:.3g}")
        ax.axvline(h.max_abs, color="k", ls=":", lw=1.0, label=f"max |x| {h.max_abs:.3g}")
        row = next(r for r in report.layers if r.name == name)
        ax.set_title(f"#{row.rank} {name}: output SQNR {_db(row.output_sqnr_db)} dB, "
                     f"{100 * row.zero_fraction:.1f}% zeros (bin 0)", fontsize=9)
        ax.set_xlabel("|x|", fontsize=8)
        ax.set_ylabel("count (log)", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"FP32 activation histograms (|x|, first {report.layers_images} images x "
                 f"{len(report.sizes)} size(s)) with calibrated thresholds", fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def render_plots(report: Report, histograms: Mapping[str, Histogram],
                 tables: Mapping[str, CalibrationTable], out_dir: Path,
                 task_plots: Callable[[Path], list[Path]] | None = None) -> list[Path]:
    """The generic plots, then whatever the task's hook draws into ``out_dir`` (e.g. detection PR curves)."""
    out_dir = Path(out_dir)
    plots = [plot_accuracy(report, out_dir / "accuracy.png"), plot_layer_sqnr(report, out_dir / "layer_sqnr.png")]
    hist = plot_histograms(report, histograms, tables, out_dir / "histograms.png")
    return plots + ([hist] if hist else []) + (task_plots(out_dir) if task_plots is not None else [])
