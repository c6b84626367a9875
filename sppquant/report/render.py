"""Render a report dict (see ``sppquant.report.evaluate``) as Markdown and PNG plots (matplotlib, Agg).

The Markdown links the plots relatively, so the folder reads well on GitHub or copied
elsewhere. PNGs are written atomically (rendered to memory, then temp file + rename).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sppquant.atomic import atomic_write_bytes
from sppquant.calibration.histogram import Histogram
from sppquant.calibration.table import CalibrationTable

HIST_PLOTS = 4  # most sensitive quantized tensors shown in histograms.png
PRECISION_COLORS = {"fp32": "#4c72b0", "fp16": "#55a868", "int8": "#c44e52"}
EXTRA_COLORS = ["#dd8452", "#8172b3", "#937860"]


def _label(key: str, entry: Mapping[str, Any]) -> str:
    if entry.get("precision") == "int8":
        return f"INT8 ({entry.get('algorithm')})"
    return key.upper()


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100.0 * v:.2f}%"


def _db(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isinf(v) and v > 0):
        return "inf"
    return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.1f}"


def _num(v: Any, fmt: str = ".3g") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


# --------------------------------------------------------------------------- markdown


def _precision_table(rows: list[tuple[str, Mapping[str, Any]]], labelled: bool, top5: bool,
                     device: str = "CPU") -> list[str]:
    head = ["precision"] + (["top-1"] + (["top-5"] if top5 else []) if labelled else []) + [
        "agreement w/ FP32", "cosine", "SQNR (dB)", "max abs err", "mean abs err", "p99 abs err", f"ms/image ({device})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows:
        cells = [name]
        if labelled:
            cells.append(_pct(m.get("top1")))
            if top5:
                cells.append(_pct(m.get("top5")))
        cells += [_pct(m.get("agreement")), _num(m.get("cosine"), ".6f"), _db(m.get("sqnr_db")),
                  _num(m.get("max_abs_err")), _num(m.get("mean_abs_err")), _num(m.get("p99_abs_err")),
                  _num(m.get("latency_ms_per_image"), ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    prec = report["precisions"]
    ds, dev, be = report["dataset"], report["device"], report["backend"]
    labelled = ds["labelled"]
    top5 = labelled and report["model"]["outputs"] >= 5
    sizes = [f"{h}x{w}" for h, w in report["sizes"]]
    model_name = Path(report["model"]["path"]).name
    out = [f"# Precision report: {model_name}", ""]
    bad = ds["bad_files"]
    labels = f"{ds['labels']} ({ds['classes']} classes)" if labelled else "none: agreement-only metrics"
    out.append(f"{ds['evaluated']} images evaluated at {len(sizes)} size(s) ({', '.join(sizes)}) from `{ds['root']}` "
               f"({ds['listed']} listed, {len(bad)} unreadable skipped); labels: {labels}.")
    if dev["kind"] == "cpu":
        out.append(f"Backend: {be['runtime']} {be['provider']}, graph optimizations {be['graph_optimizations']}. "
                   f"Device: **CPU** {dev['name']}, {dev['threads']} thread(s), batch {dev['batch_size']}; latency is "
                   f"CPU wall time per image ({dev['latency'].split(';')[0]}), not GPU time.")
    else:
        out.append(f"Backend: {be['runtime']} ({be['provider']}). Device: **GPU** {dev['name']}, batch "
                   f"{dev['batch_size']}; latency: {dev['latency']}. Per-layer analysis: ONNX Runtime on the CPU.")
    out.append("")
    for note in report.get("notes", []):
        out.append(f"> **Note:** {note}")
        out.append("")
    rows = [(_label(k, v), v) for k, v in prec.items()]
    out += ["## Summary (all sizes pooled)", ""]
    out.append("Each image counts once per size. FP32 agreement/cosine/SQNR are against itself (SQNR inf).")
    out.append("")
    out += _precision_table(rows, labelled, top5, dev["kind"].upper())
    out.append("")
    out += ["## Per input size", ""]
    for s in sizes:
        out += [f"### {s}", ""]
        out += _precision_table([(_label(k, v), v["per_size"][s]) for k, v in prec.items()], labelled, top5,
                                dev["kind"].upper())
        out.append("")
    if "accuracy.png" in report.get("plots", []):
        out += ["![top-1 accuracy and agreement by precision](accuracy.png)", ""]

    out += ["## Calibration tables", ""]
    for algo, t in report["tables"].items():
        src = {"config": "the config's table (valid per its provenance)",
               "calibrated": "calibrated now into the report folder",
               "report folder (reused)": "reused from an earlier report run (still valid)",
               "given": "given with --table"}.get(t["source"], t["source"])
        line = f"- **{algo}**: `{t['path']}` ({t['header']}, {t['tensors']} tensors): {src}"
        if t["reasons"] and t["source"] == "given":
            line += f"; its provenance check says: {'; '.join(t['reasons'])}"
        elif t["reasons"]:
            line += f"; the config's table was not used because: {'; '.join(t['reasons'])}"
        if t.get("tie_scales") is not None:
            line += f"; tie_scales={str(t['tie_scales']).lower()}"
        out.append(line)
    out.append("")

    out += ["## INT8 (Q/DQ) models", ""]
    if be["name"] == "tensorrt":
        out.append(f"INT8 numbers come from the TensorRT INT8 engine `{prec['int8'].get('engine')}` (built by "
                   "`sppquant build` from the table). The Q/DQ models below are the explicit-quantization form of "
                   "the same tables, for TensorRT 11; the per-layer view runs them in ONNX Runtime.")
    else:
        out.append("INT8 numbers come from the explicit-quantization model in this folder (the same form "
                   "`sppquant export-qdq` writes for TensorRT 10/11): Q/DQ on the inputs of Conv/Gemm/MaxPool/SPP with "
                   "the table's per-tensor scales, per-channel weight scales max|w|/127, zero point 0, SPP kept as the "
                   "plugin node (ONNX Runtime runs its standard-op rewrite).")
    out.append("")
    for info in report["int8"].values():
        fused = {k: v for k, v in info["ort_integer_kernels"].items() if "left" not in k}
        left = info["ort_integer_kernels"]
        fused_text = ", ".join(f"{k} x{v}" for k, v in fused.items()) or "none"
        out.append(f"- `{info['model']}`: {len(info['quantized_activations'])} activations quantized "
                   f"({', '.join(info['quantized_activations'])}), {len(info['quantized_weights'])} weights per-channel. "
                   f"ONNX Runtime integer kernels after its QDQ fusion: {fused_text}; "
                   f"{left.get('DequantizeLinear (left)', 0)} DequantizeLinear remain, i.e. those ops run as exact "
                   "fake-quant in FP32 arithmetic (ORT fuses only DQ->op->Q groups; Conv->Relu->Q is not one).")
    out.append("")
    fp16 = report["fp16"]
    out += ["## FP16", ""]
    if be["name"] == "tensorrt":
        out.append(f"FP16 numbers come from the TensorRT FP16 engine `{prec['fp16'].get('engine')}`. For reference, "
                   "ONNX Runtime's FP16 form (not used for the numbers above):")
    out.append(f"FP16 = the model converted by `sppquant.quantize.fp16` ({fp16['note']}). "
               f"Kept FP32 because ONNX Runtime's CPU provider has no FP16 kernel: "
               f"{', '.join(fp16['ort_fp32_ops']) or 'none'}. ONNX Runtime additionally moves "
               f"{', '.join(fp16['ort_precision_free_fp32_ops']) or 'nothing'} to FP32 on its own (inputs already exact). "
               "TensorRT FP16 engines will differ in detail.")
    out.append("")

    layers = report["layers"]
    out += [f"## Per layer ({report['layers_algorithm']}, first {report['layers_images']} images x {len(sizes)} size(s))",
            ""]
    out.append("LOCAL = the tensor fake-quantized alone vs FP32; ACCUMULATED = the tensor in the whole INT8 Q/DQ model "
               "vs FP32; OUTPUT = model output SQNR with only this tensor quantized (its sensitivity). Ranked by OUTPUT "
               "SQNR, lowest (most sensitive) first; tensors the Q/DQ model does not quantize (TensorRT fuses them "
               "into the previous layer) are listed last. Clipped = share of |x| above amax on these images; zeros = share "
               "of exact zeros (ReLU outputs: a large zero share skews the entropy search, see the histograms).")
    out.append("")
    out.append("| rank | tensor | in Q/DQ | amax | max abs | clipped | zeros | local SQNR dB | accumulated SQNR dB | "
               "output SQNR dB |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in layers:
        out.append(f"| {r['rank']} | `{r['name']}` | {'yes' if r['quantized'] else 'no'} | {_num(r['amax'], '.4g')} | "
                   f"{_num(r['max_abs'], '.4g')} | {_pct(r['clipped_fraction'])} | {_pct(r.get('zero_fraction'))} | "
                   f"{_db(r['local_sqnr_db'])} | "
                   f"{_db(r['accumulated_sqnr_db'])} | {_db(r['output_sqnr_db'])} |")
    out.append("")
    for name, alt in (("layer_sqnr.png", "per-layer SQNR"), ("histograms.png", "activation histograms with thresholds")):
        if name in report.get("plots", []):
            out += [f"![{alt}]({name})", ""]
    out.append(f"_sppquant {report['sppquant_version']}, {report['created']}, {report.get('seconds', 0):.1f} s._")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- plots


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _color(key: str, i: int) -> str:
    return PRECISION_COLORS.get(key, EXTRA_COLORS[i % len(EXTRA_COLORS)])


def plot_accuracy(report: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prec = report["precisions"]
    keys = list(prec)
    groups = ["all sizes"] + [f"{h}x{w}" for h, w in report["sizes"]]
    metrics = (["top1"] if report["dataset"]["labelled"] else []) + ["agreement"]
    titles = {"top1": "top-1 accuracy", "agreement": "top-1 agreement with FP32"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.0), squeeze=False)
    width = 0.8 / len(keys)
    for ax, metric in zip(axes[0], metrics):
        values_all = []
        for i, key in enumerate(keys):
            vals = [prec[key].get(metric)] + [prec[key]["per_size"][g].get(metric) for g in groups[1:]]
            vals = [100.0 * v if v is not None else np.nan for v in vals]
            values_all += vals
            xs = np.arange(len(groups)) + (i - (len(keys) - 1) / 2) * width
            bars = ax.bar(xs, vals, width, label=_label(key, prec[key]), color=_color(key, i))
            for b, v in zip(bars, vals):
                ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7,
                            rotation=90 if len(keys) > 3 else 0, xytext=(0, 2), textcoords="offset points")
        finite = [v for v in values_all if np.isfinite(v)]
        low = max(0.0, math.floor((min(finite) if finite else 0.0) - 5.0))
        ax.set_ylim(low, 100.0 + (100.0 - low) * 0.12)
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_ylabel("%" + (f" (axis starts at {low:.0f})" if low > 0 else ""))
        ax.set_title(titles[metric])
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(keys), fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"{Path(report['model']['path']).name}: {report['dataset']['evaluated']} images, "
                 f"{report['backend']['runtime']} ({report['device']['kind'].upper()})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_layer_sqnr(report: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
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
    ax.set_title(f"Per-layer INT8 SQNR ({report['layers_algorithm']}), most sensitive first", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.4 / max(1, len(layers))), ncol=3, fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_histograms(report: Mapping[str, Any], histograms: Mapping[str, Histogram],
                    tables: Mapping[str, CalibrationTable], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r["name"] for r in report["layers"] if r["quantized"] and histograms[r["name"]].count][:HIST_PLOTS]
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
        row = next(r for r in report["layers"] if r["name"] == name)
        ax.set_title(f"#{row['rank']} {name}: output SQNR {_db(row['output_sqnr_db'])} dB, "
                     f"{100 * row.get('zero_fraction', 0.0):.1f}% zeros (bin 0)", fontsize=9)
        ax.set_xlabel("|x|", fontsize=8)
        ax.set_ylabel("count (log)", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"FP32 activation histograms (|x|, first {report['layers_images']} images x "
                 f"{len(report['sizes'])} size(s)) with calibrated thresholds", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def render_plots(report: Mapping[str, Any], histograms: Mapping[str, Histogram],
                 tables: Mapping[str, CalibrationTable], out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    plots = [plot_accuracy(report, out_dir / "accuracy.png"), plot_layer_sqnr(report, out_dir / "layer_sqnr.png")]
    hist = plot_histograms(report, histograms, tables, out_dir / "histograms.png")
    return plots + ([hist] if hist else [])
