"""Train the demo SPP-net detector: ``python -m sppquant.demo.train_detector``.

Needs the ``demo`` extra (torch, scikit-learn) and scikit-image. Seeded end to end; on the
CPU (2 threads) bit-reproducible, on a GPU (``--device cuda``) not bit for bit (atomic
adds in the backward pass). Training scenes use the train scans only; each goes through
`sppquant.preprocess.preprocess_image` (the one preprocessing) and `propose` (the
deployed proposal hook), so the detector learns to score exactly the regions it will
be given. Per image and step, 32 regions are sampled Fast R-CNN style (a quarter
foreground at IoU >= 0.5 with ground-truth boxes added as regions, the rest background;
``--hard-background F`` draws a fraction F of it from IoU [0.1, 0.5), as Fast R-CNN did).
``--jpeg`` sends training scenes through the JPEG encoding the shipped scenes have.
``--fresh`` renders new scenes every epoch (scene ``(seed, stream, index, epoch)``) instead of
showing the same ``--scenes`` again: more distinct digits, placements and backgrounds.
"""

from __future__ import annotations

import argparse
import copy
import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sppquant.demo.proposals import propose
from sppquant.demo.scenes import SEED, STREAM_TRAIN, encode_jpeg, load_scene_split, make_scene
from sppquant.demo.train import DEMO_PREPROCESS
from sppquant.preprocess import decode_image, preprocess_image
from sppquant.tasks.detection_post import box_iou, encode_boxes

log = logging.getLogger(__name__)

DET_SIZE = (128, 128)  # network input (H, W); letterbox
DETECTOR_MODEL = Path(__file__).with_name("sppnet_digits_det.onnx")
ROIS_PER_IMAGE, FG_FRACTION, FG_IOU = 32, 0.25, 0.5
HARD_BG_IOU = 0.1  # background with IoU in [0.1, 0.5): digit fragments, near misses


@dataclass(frozen=True)
class TrainImage:
    tensor: np.ndarray  # CHW float32 network input
    gt_boxes: np.ndarray  # (G, 4) network-input pixels
    gt_labels: np.ndarray  # (G,) digits 0..9
    proposals: np.ndarray  # (K, 4)


_SPLIT_CACHE: dict = {}  # per process (workers are forked)


def _make_train_image(args: tuple[int, int, bool, int]) -> TrainImage:
    index, seed, jpeg, epoch = args
    split = _SPLIT_CACHE.setdefault(seed, load_scene_split(seed))
    scene = make_scene(split, STREAM_TRAIN, index, seed, epoch)
    # With jpeg: the same encoding and project decoder as the shipped scenes, so the network
    # and the proposals see the artefacts they will see at evaluation.
    image = decode_image(encode_jpeg(scene.image), f"train scene {index}") if jpeg else scene.image
    pre = preprocess_image(image, DEMO_PREPROCESS, DET_SIZE)
    gt = scene.boxes.astype(np.float64).copy()
    gt[:, 0::2] = gt[:, 0::2] * pre.scale_x + pre.offset_x
    gt[:, 1::2] = gt[:, 1::2] * pre.scale_y + pre.offset_y
    return TrainImage(pre.tensor, gt.astype(np.float32), scene.labels, propose(pre.tensor))


def build_training_set(count: int, seed: int = SEED, workers: int = 2, jpeg: bool = False) -> list[TrainImage]:
    """``count`` training scenes with their proposals (the slow part: MSER), in ``workers`` processes."""
    jobs = [(i, seed, jpeg, 0) for i in range(count)]
    if workers <= 1:
        return [_make_train_image(j) for j in tqdm(jobs, desc="train scenes")]
    with get_context("fork").Pool(workers) as pool:
        return list(tqdm(pool.imap(_make_train_image, jobs, chunksize=16), total=count, desc="train scenes"))


def fresh_epochs(pool, count: int, epochs: int, seed: int = SEED, jpeg: bool = False) -> Iterator[list[TrainImage]]:
    """Epoch e's ``count`` scenes are scenes ``(seed, train, i, e)``: new every epoch, rendered and
    proposed by ``pool`` (a fork pool made before CUDA starts) ahead of training; ordered, so the
    stream is deterministic."""
    jobs = ((i, seed, jpeg, e) for e in range(epochs) for i in range(count))
    results = pool.imap(_make_train_image, jobs, chunksize=8)
    for _ in range(epochs):
        yield [next(results) for _ in range(count)]


def _sample_background(best_iou: np.ndarray, count: int, rng: np.random.Generator,
                       hard_fraction: float | None) -> np.ndarray:
    """Up to ``count`` background regions: uniformly (``hard_fraction`` None), or that fraction hard.

    Hard = IoU in [0.1, 0.5) with a digit, as Fast R-CNN. Digit fragments (a loop of an 8,
    the bar of a 7) are MSER's most frequent false positives; uniform sampling mostly
    shows the head clutter with IoU 0.
    """
    if hard_fraction is None:
        bg = np.flatnonzero(best_iou < FG_IOU)
        return rng.choice(bg, min(len(bg), count), replace=False) if len(bg) else bg
    hard = np.flatnonzero((best_iou >= HARD_BG_IOU) & (best_iou < FG_IOU))
    easy = np.flatnonzero(best_iou < HARD_BG_IOU)
    n_hard = min(len(hard), int(round(count * hard_fraction)))
    n_easy = min(len(easy), count - n_hard)
    n_hard = min(len(hard), count - n_easy)
    return np.concatenate([rng.choice(hard, n_hard, replace=False), rng.choice(easy, n_easy, replace=False)])


def sample_rois(item: TrainImage, rng: np.random.Generator,
                hard_fraction: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regions, class targets (0 background, 1 + digit) and normalised delta targets for one image."""
    from sppquant.demo.detector import DELTA_STD

    regions = np.concatenate([item.proposals, item.gt_boxes]) if len(item.gt_boxes) else item.proposals
    iou = box_iou(regions, item.gt_boxes) if len(item.gt_boxes) else np.zeros((len(regions), 1))
    best = iou.argmax(axis=1)
    best_iou = iou.max(axis=1)
    fg = np.flatnonzero(best_iou >= FG_IOU)
    n_fg = min(len(fg), int(ROIS_PER_IMAGE * FG_FRACTION))
    fg = rng.choice(fg, n_fg, replace=False) if n_fg else fg[:0]
    bg = _sample_background(best_iou, ROIS_PER_IMAGE - n_fg, rng, hard_fraction)
    keep = np.concatenate([fg, bg]).astype(np.int64)
    labels = np.zeros(len(keep), np.int64)
    labels[:n_fg] = item.gt_labels[best[fg]] + 1
    deltas = np.zeros((len(keep), 4), np.float32)
    if n_fg:
        deltas[:n_fg] = encode_boxes(regions[fg], item.gt_boxes[best[fg]]) / np.asarray(DELTA_STD, np.float32)
    return regions[keep].astype(np.float32), labels, deltas


def _step_loss(model, batch: list[TrainImage], rng: np.random.Generator, hard_fraction: float | None):
    import torch
    from torch.nn import functional as F

    dev = next(model.parameters()).device
    images = torch.from_numpy(np.stack([b.tensor for b in batch])).to(dev)
    rois, labels, deltas = [], [], []
    for k, item in enumerate(batch):
        r, lab, d = sample_rois(item, rng, hard_fraction)
        rois.append(np.concatenate([np.full((len(r), 1), k, np.float32), r], axis=1))
        labels.append(lab)
        deltas.append(d)
    labels_t = torch.from_numpy(np.concatenate(labels)).to(dev)
    logits, pred = model(images, np.concatenate(rois))
    cls_loss = F.cross_entropy(logits, labels_t)
    fg = torch.nonzero(labels_t > 0).squeeze(1)
    pred_fg = pred.view(len(labels_t), -1, 4)[fg, labels_t[fg]]
    box_loss = F.smooth_l1_loss(pred_fg, torch.from_numpy(np.concatenate(deltas)).to(dev)[fg], beta=1.0,
                                reduction="sum") / max(len(labels_t), 1)
    acc = (logits.argmax(1) == labels_t).float().mean()
    return cls_loss + box_loss, cls_loss.detach(), box_loss.detach(), acc


@dataclass(frozen=True)
class TrainOptions:
    epochs: int
    steps_per_epoch: int
    seed: int = SEED
    batch_size: int = 8
    lr: float = 2e-3
    hard_fraction: float | None = None
    device: str = "cpu"
    channels: tuple[int, ...] | None = None  # None: the detector's defaults
    hidden: int | None = None
    stop_after: int | None = None  # stop after this many epochs of the ``epochs``-long schedule


def _new_model(opts: TrainOptions):
    import torch

    from sppquant.demo.detector import CHANNELS, HIDDEN, SppNetDetector

    torch.manual_seed(opts.seed)
    if opts.device == "cpu":
        torch.set_num_threads(2)
    return SppNetDetector(opts.channels or CHANNELS, opts.hidden or HIDDEN).to(opts.device)


def train(epoch_data: Iterator[list[TrainImage]], opts: TrainOptions, checkpoint: Path | None = None):
    """AdamW one-cycle over ``opts.epochs`` epochs of ``epoch_data``; ``checkpoint``: ONNX after every epoch."""
    import torch

    model = _new_model(opts)
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opts.lr, total_steps=opts.epochs * opts.steps_per_epoch,
                                                pct_start=0.1)
    rng = np.random.default_rng([opts.seed, 7])
    for epoch, data in zip(range(opts.epochs), epoch_data):
        model.train()
        t0, stats = time.perf_counter(), []
        order = rng.permutation(len(data))
        steps = min(opts.steps_per_epoch, len(data) // opts.batch_size)  # a --cache may hold fewer scenes
        for s in tqdm(range(steps), desc=f"epoch {epoch + 1}/{opts.epochs}", leave=False):
            batch = [data[i] for i in order[s * opts.batch_size:(s + 1) * opts.batch_size]]
            loss, *parts = _step_loss(model, batch, rng, opts.hard_fraction)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            stats.append(torch.stack(parts))
        cls_l, box_l, acc = torch.stack(stats).mean(0).tolist()
        log.info("epoch %d/%d: cls %.3f box %.3f roi acc %.3f (%.0f s)", epoch + 1, opts.epochs, cls_l, box_l, acc,
                 time.perf_counter() - t0)
        if checkpoint is not None:
            from sppquant.demo.export_detector import save

            save(copy.deepcopy(model).cpu().eval(), checkpoint)
        if opts.stop_after is not None and epoch + 1 >= opts.stop_after:
            break
    return model.cpu().eval()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DETECTOR_MODEL, help="ONNX model to write")
    parser.add_argument("--scenes", type=int, default=1200, help="training scenes (per epoch with --fresh)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fresh", action="store_true", help="render new scenes every epoch")
    parser.add_argument("--hard-background", type=float, default=None,
                        help="fraction of background regions drawn from IoU [0.1, 0.5) (default: uniform)")
    parser.add_argument("--jpeg", action="store_true", help="JPEG round trip for training scenes, like the shipped ones")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering scenes and computing proposals")
    parser.add_argument("--batch-size", type=int, default=8, help="images per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="one-cycle peak learning rate")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (cuda if available)")
    parser.add_argument("--channels", default=None, help="backbone widths, e.g. 3,16,32,64,64 (the default)")
    parser.add_argument("--hidden", type=int, default=None, help="FC width (default 256)")
    parser.add_argument("--checkpoint", action="store_true", help="write --output after every epoch")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many epochs (the learning-rate schedule still spans --epochs)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="pickle of the training scenes + proposals: read if present, else written (not --fresh)")
    return parser


def _fixed_epochs(args: argparse.Namespace) -> Iterator[list[TrainImage]]:
    """The same ``--scenes`` scenes every epoch (from ``--cache`` when it exists)."""
    t0 = time.perf_counter()
    if args.cache is not None and args.cache.exists():
        data = pickle.loads(args.cache.read_bytes())[: args.scenes]
    else:
        data = build_training_set(args.scenes, args.seed, args.workers, args.jpeg)
        if args.cache is not None:
            args.cache.write_bytes(pickle.dumps(data))
    log.info("%d training scenes, %d digits, %.0f proposals/scene (%.0f s)", len(data),
             sum(len(d.gt_labels) for d in data), np.mean([len(d.proposals) for d in data]), time.perf_counter() - t0)
    while True:
        yield data


def _checked_device_and_widths(args: argparse.Namespace) -> tuple[str, tuple[int, ...] | None, str | None]:
    """``--device`` resolved (auto: cuda if available) and ``--channels`` parsed, or the problem in one line."""
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        return device, None, f"--device {args.device}: expected cpu, cuda, cuda:N or auto"
    if device != "cpu" and not torch.cuda.is_available():
        return device, None, f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device"
    try:
        channels = tuple(int(c) for c in args.channels.split(",")) if args.channels else None
    except ValueError:
        channels = ()
    if channels is not None and (len(channels) != 5 or channels[0] != 3 or min(channels) < 1):
        return device, None, f"--channels {args.channels}: expected 5 positive integer widths starting with 3"
    if args.hidden is not None and args.hidden < 1:
        return device, None, f"--hidden {args.hidden}: expected a positive width"
    return device, channels, None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device, channels, problem = _checked_device_and_widths(args)
    if problem:
        log.error("train_detector: %s", problem)
        return 2
    t0 = time.perf_counter()
    opts = TrainOptions(args.epochs, args.scenes // args.batch_size, args.seed, args.batch_size, args.lr,
                        args.hard_background, device, channels, args.hidden, args.stop_after)
    checkpoint = args.output if args.checkpoint else None
    if args.fresh:
        with get_context("fork").Pool(max(args.workers, 1)) as pool:
            model = train(fresh_epochs(pool, args.scenes, args.epochs, args.seed, args.jpeg), opts, checkpoint)
    else:
        model = train(_fixed_epochs(args), opts, checkpoint)
    from sppquant.demo.export_detector import save

    save(model, args.output)
    log.info("trained (%s) and exported %s in %.0f s", device, args.output, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
