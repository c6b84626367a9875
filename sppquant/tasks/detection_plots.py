"""Detection report plots: precision-recall at IoU 0.5 per precision, sample images with FP32 and INT8 boxes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sppquant.atomic import atomic_save_figure
from sppquant.preprocess import load_image

SAMPLES = 8




def plot_pr_curves(results: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str], path: Path) -> Path | None:
    """Class-averaged precision vs recall at IoU 0.5 (COCO's 101 recall points), one line per precision."""
    curves = {k: r["pr_curve_50"] for k, r in results.items() if "pr_curve_50" in r}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for key, c in curves.items():
        ax.plot(c["recall"], c["precision"], label=f"{labels.get(key, key)} (AP50 {100 * results[key]['map50']:.1f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (mean over classes)")
    ax.set_title("precision-recall at IoU 0.5")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return atomic_save_figure(fig, path)


def plot_samples(ref: Any, out: Any, out_label: str, paths: Mapping[int, Path], path: Path) -> Path | None:
    """The first images (by id): FP32 boxes green, INT8 boxes red, labels above."""
    ids = [i for i in sorted(ref.detections) if i in paths][:SAMPLES]
    if not ids:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(ids))
    rows = (len(ids) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), ids):
        img = load_image(paths[i])
        ax.imshow(img[..., ::-1] if img.ndim == 3 else img, cmap="gray")
        for dets, color, dy in ((ref.detections[i], "#2ca02c", -2), (out.detections.get(i), "#d62728", 9)):
            if dets is None:
                continue
            for b, s, lab in zip(dets.boxes, dets.scores, dets.labels):
                if s < 0.5:
                    continue
                ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color=color, lw=1))
                ax.text(b[0], b[1] + dy, f"{lab}", color=color, fontsize=7)
        ax.set_title(Path(paths[i]).name, fontsize=8)
    fig.suptitle(f"FP32 (green) vs {out_label} (red), score >= 0.5", fontsize=9)
    fig.tight_layout()
    return atomic_save_figure(fig, path)

