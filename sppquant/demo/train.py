"""Train the demo SPP network and regenerate its data: ``python -m sppquant.demo.train``.

Needs the ``demo`` extra (torch, scikit-learn). Seeded end to end. Every training
image is rendered fresh per epoch (new size, aspect ratio, colours, file format) and
goes through `sppquant.preprocess.preprocess_image` — the same function calibration
and inference use — at one of several input sizes, so the network is trained on
exactly what it will be fed.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from sppquant.demo import DEMO_MODEL
from sppquant.demo.render import (
    SEED,
    STREAM_TRAIN,
    choose_format,
    image_rng,
    load_split,
    render_digit,
    to_format,
    write_datasets,
)
from sppquant.preprocess import PreprocessConfig, preprocess_image

log = logging.getLogger(__name__)

# Must equal configs/sppnet_digits.yaml's preprocess section (a test checks it).
DEMO_PREPROCESS = PreprocessConfig(color="rgb", resize="letterbox", interpolation="linear", pad_value=0.0,
                                   pad_position="center", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
TRAIN_SIZES = ((32, 32), (40, 40), (48, 48), (28, 36), (56, 44))
REPO = Path(__file__).resolve().parents[2]


def epoch_data(split, epoch: int, seed: int) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """All training digits rendered anew for ``epoch``, grouped by input size."""
    groups: dict[tuple[int, int], tuple[list, list]] = {s: ([], []) for s in TRAIN_SIZES}
    for idx in split.train:
        rng = image_rng(seed, STREAM_TRAIN, int(idx), epoch)
        pixels = to_format(render_digit(split.images[idx], rng), choose_format(rng))
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            pixels = pixels[:, :, :3]  # decode_image would keep BGRA; preprocess drops alpha anyway
        size = TRAIN_SIZES[int(rng.integers(len(TRAIN_SIZES)))]
        xs, ys = groups[size]
        xs.append(preprocess_image(pixels, DEMO_PREPROCESS, size).tensor)
        ys.append(int(split.labels[idx]))
    return {s: (np.stack(x), np.array(y)) for s, (x, y) in groups.items() if x}


def train(epochs: int = 90, seed: int = SEED, batch_size: int = 32, lr: float = 1.5e-3):
    import torch
    from torch.nn import functional as F

    from sppquant.demo.model import SppNet

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    split = load_split(seed)
    model = SppNet()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = len(split.train) // batch_size  # upper bound on full batches
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    rng = np.random.default_rng([seed, 99])
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        batches = []
        for size, (x, y) in epoch_data(split, epoch, seed).items():
            order = rng.permutation(len(y))
            # full batches only (BatchNorm needs > 1 sample); the rest is re-rendered next epoch
            batches += [(size, x[order[i:i + batch_size]], y[order[i:i + batch_size]])
                        for i in range(0, len(y) - batch_size + 1, batch_size)]
        total, correct, loss_sum = 0, 0, 0.0
        for k in rng.permutation(len(batches)):
            _, xb, yb = batches[k]
            xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)
            logits = model(xt)
            loss = F.cross_entropy(logits, yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += len(yb)
            correct += int((logits.argmax(1) == yt).sum())
            loss_sum += float(loss.detach()) * len(yb)
        log.info("epoch %d/%d: loss %.3f, train acc %.3f (%.1f s)", epoch + 1, epochs, loss_sum / total,
                 correct / total, time.perf_counter() - t0)
    return model.eval()


def evaluate_onnx(model_path: Path, eval_dir: Path, sizes=((32, 32), (48, 48))) -> dict[str, float]:
    """Top-1 of the exported ONNX model in ONNX Runtime on the evaluation folder, per size."""
    from sppquant.backends.onnxruntime import OrtRunner, load_model
    from sppquant.data import iter_batches, labelled_set

    runner = OrtRunner(load_model(model_path, "image"))
    images = labelled_set(eval_dir)
    acc = {}
    for size in sizes:
        hits = 0
        for batch in iter_batches(images, DEMO_PREPROCESS, [size], 64, progress=False):
            logits = runner.run({"image": batch.inputs[0]}, ["logits"])["logits"]
            hits += int((logits.argmax(1) == np.array(batch.labels)).sum())
        acc[f"{size[0]}x{size[1]}"] = hits / len(images)
    return acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEMO_MODEL, help="ONNX model to write")
    parser.add_argument("--data-out", type=Path, default=REPO / "calib_data", help="folder for digits/ and digits-eval/")
    parser.add_argument("--epochs", type=int, default=90)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    counts = write_datasets(args.data_out, args.seed)
    log.info("images written: %s", counts)
    model = train(args.epochs, args.seed)
    from sppquant.demo.export import save

    save(model, args.output)
    log.info("trained and exported %s in %.0f s", args.output, time.perf_counter() - t0)
    for size, acc in evaluate_onnx(args.output, args.data_out / "digits-eval").items():
        log.info("ONNX Runtime top-1 at %s: %.2f%%", size, 100 * acc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
