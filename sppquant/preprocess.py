"""The one preprocessing implementation: decode -> channels -> [0, 1] -> resize/pad -> normalize -> CHW.

Calibration, inference (`predict`), reports and the TensorRT calibrator all call
`preprocess_image` (through `sppquant.data`), so the tensors a calibration table was
computed from are byte-identical to the ones the deployed model sees.

Order of operations, and why:
1. Decode with OpenCV, keeping the file's bit depth (``IMREAD_UNCHANGED``).
2. Bring the channels to the network's order. Grayscale is replicated to 3 channels
   (or kept for a 1-channel model); BGRA drops alpha (transparent pixels keep their
   stored colour, which is what OpenCV's own ``IMREAD_COLOR`` does).
3. Scale to [0, 1] by the dtype's full scale (255 or 65535), so an 8-bit and a 16-bit
   copy of one picture give the same tensor up to rounding, and ``mean``/``std`` mean
   the same thing for both.
4. Resize in float32 (no rounding to 8 bits in between), then pad with ``pad_value``
   (full-scale units, before mean/std). Where the image goes is pure arithmetic on
   (source size, target size, config): `plan` computes it, `preprocess_image` follows
   it, and `output_size` / `output_size_range` / `group_by_shape` let the data and
   TensorRT layers know the tensor shapes without touching pixels. Policies
   (``docs/preprocessing.md`` has the full rules and hand-worked examples):

   - ``letterbox``: keep the ratio, fit inside the target ``[H, W]``;
   - ``stretch``: fill the target exactly;
   - ``fixed_height``: height = target H, width = rule(H * (w / h)) at most target W
     (PaddleOCR text recognizers and classifiers);
   - ``long_side``: ``r = min(S / short, L / long)`` with ``S, L`` = min/max of the
     target: the long side becomes ``N`` for a target ``[N, N]`` (DBNet, YOLO).

   Resized lengths use ``rounding`` (``round``/``ceil``/``floor``) on the float64
   value the reference pipelines compute; ``snap`` rounds them to a ``multiple``
   (PaddleOCR DBNet's round-to-32); ``pad_to`` chooses the canvas (``fixed`` target,
   the next ``multiple``, or ``none``).
5. ``(x - mean) / std`` per channel, HWC -> CHW, contiguous float32.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from sppquant.errors import ConfigError, DataError

COLORS = ("rgb", "bgr", "gray")
RESIZES = ("letterbox", "stretch", "fixed_height", "long_side")
PAD_POSITIONS = ("center", "top_left")
ROUNDINGS = ("round", "ceil", "floor")
SNAPS = ("none", "round", "ceil", "floor")
PAD_TOS = ("fixed", "multiple", "none")
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
# Fields that existed before issue 11. Later fields enter the fingerprint only when they
# differ from their default, so tables calibrated before they existed stay valid.
_LEGACY_FIELDS = ("color", "resize", "interpolation", "pad_value", "pad_position", "mean", "std")


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become network input. Every field enters the fingerprint.

    Combinations that would silently do nothing (``rounding`` with ``stretch``, a
    ``multiple`` nothing uses, ...) raise ConfigError here, so a config means one thing.
    """

    color: str = "rgb"
    resize: str = "letterbox"
    interpolation: str = "linear"
    pad_value: float = 0.0
    pad_position: str = "center"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    rounding: Literal["round", "ceil", "floor"] = "round"
    scale_up: bool = True
    snap: Literal["none", "round", "ceil", "floor"] = "none"
    multiple: int | None = None
    pad_to: Literal["fixed", "multiple", "none"] = "fixed"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            key, msg = problems[0]
            raise ConfigError(f"preprocess.{key}: {msg}")

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for every combination of the policy fields that is invalid or has no effect."""
        if self.resize not in RESIZES:
            return []  # the config validator names unknown choices (with the file)
        out: list[tuple[str, str]] = []
        for name, choices in (("rounding", ROUNDINGS), ("snap", SNAPS), ("pad_to", PAD_TOS)):
            if getattr(self, name) not in choices:
                out.append((name, f"expected one of {', '.join(choices)}, got {getattr(self, name)!r}"))
        if out:
            return out
        if self.resize == "stretch":
            for name, default in (("rounding", "round"), ("scale_up", True), ("snap", "none"), ("pad_to", "fixed")):
                if getattr(self, name) != default:
                    out.append((name, "has no effect with resize: stretch (the image fills the target); remove it"))
        if self.resize == "fixed_height" and not self.scale_up:
            out.append(("scale_up", "has no effect with resize: fixed_height (the height is always the target's)"))
        if self.resize == "long_side" and self.pad_to == "fixed":
            out.append(("pad_to", "fixed is not available with resize: long_side (use resize: letterbox for a "
                                  "fixed canvas, or pad_to: multiple or none)"))
        if self.snap != "none" and self.pad_to != "none":
            out.append(("snap", f"snap resizes the image to a multiple, so pad_to must be none, got {self.pad_to!r}"))
        needs_multiple = self.pad_to == "multiple" or self.snap != "none"
        if needs_multiple and self.multiple is None:
            out.append(("multiple", "required with pad_to: multiple or snap (e.g. 32)"))
        elif self.multiple is not None and not needs_multiple:
            out.append(("multiple", "has no effect unless pad_to is multiple or snap is set; remove it"))
        elif self.multiple is not None and (isinstance(self.multiple, bool) or self.multiple < 1):
            out.append(("multiple", f"expected a positive integer, got {self.multiple!r}"))
        return out

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @property
    def dynamic(self) -> bool:
        """True when the tensor size depends on the image (not always the target size)."""
        return self.pad_to != "fixed"

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of this config (ties tables to preprocessing).

        Fields added after the first release are left out while at their default, so
        the fingerprint of a config that does not use them is the one it always had.
        """
        data = asdict(self)
        for f in fields(self):
            if f.name not in _LEGACY_FIELDS and data[f.name] == f.default:
                del data[f.name]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Geometry:
    """Where a source image lands in the network input: pure arithmetic, no pixels.

    The image is resized to ``content`` and placed at ``offset`` (y, x) in a tensor of
    ``canvas`` (H, W); the rest is padding. Scales are exact: content / source per axis.
    Source coordinates: ``x_src = (x_net - offset_x) / scale_x`` (same for y).
    """

    source: tuple[int, int]
    content: tuple[int, int]
    canvas: tuple[int, int]
    offset: tuple[int, int]

    @property
    def scale_x(self) -> float:
        return self.content[1] / self.source[1]

    @property
    def scale_y(self) -> float:
        return self.content[0] / self.source[0]

    @property
    def source_size(self) -> tuple[int, int]:
        return self.source

    @property
    def offset_x(self) -> int:
        return self.offset[1]

    @property
    def offset_y(self) -> int:
        return self.offset[0]

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y

    def to_network(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale_x + self.offset_x, y * self.scale_y + self.offset_y


@dataclass(frozen=True)
class Preprocessed:
    """A network-ready CHW tensor and what maps its coordinates back to the source image.

    Source coordinates: ``x_src = (x_net - offset_x) / scale_x`` (same for y), in pixel
    edge coordinates (the content's right edge ``offset_x + content_w`` maps to ``W``).
    ``content_size`` is the (H, W) of the resized image inside the tensor (the rest is padding).
    """

    tensor: np.ndarray
    source_size: tuple[int, int]  # (H, W) of the decoded image
    scale_x: float
    scale_y: float
    offset_x: int
    offset_y: int
    content_size: tuple[int, int] | None = None

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y

    @property
    def geometry(self) -> Geometry:
        content = self.content_size or (round(self.source_size[0] * self.scale_y),
                                        round(self.source_size[1] * self.scale_x))
        return Geometry(self.source_size, content, (int(self.tensor.shape[1]), int(self.tensor.shape[2])),
                        (self.offset_y, self.offset_x))


# --------------------------------------------------------------------------- geometry


def _apply_rounding(value: float, rule: str) -> int:
    """``round`` is Python's round() (half to even); all three act on the float64 value."""
    if rule == "round":
        return round(value)
    return math.ceil(value) if rule == "ceil" else math.floor(value)


def _snap(length: int, cfg: PreprocessConfig) -> int:
    """Length -> a multiple of ``cfg.multiple`` by ``cfg.snap``, at least one multiple (PaddleOCR DBNet)."""
    if cfg.snap == "none":
        return length
    m = int(cfg.multiple or 1)
    if cfg.snap == "round":
        k = round(length / m)  # length / m is exact for any length < 2**53 when m is a power of two
    elif cfg.snap == "ceil":
        k = -(-length // m)
    else:
        k = length // m
    return max(k, 1) * m


def _up_to_multiple(length: int, m: int | None) -> int:
    m = int(m or 1)
    return -(-length // m) * m


def _content_size(cfg: PreprocessConfig, source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """(H, W) the image is resized to. The float64 expressions are those of the reference pipelines."""
    h, w = source
    th, tw = target
    if cfg.resize == "stretch":
        return th, tw
    if cfg.resize == "fixed_height":
        # PaddleOCR rec/cls: ratio = w / float(h); resized_w = min(ceil(imgH * ratio), imgW)
        cw = max(1, min(tw, _apply_rounding(th * (w / h), cfg.rounding)))
        return th, _snap(cw, cfg)
    if cfg.resize == "letterbox":
        lim_h, lim_w = th, tw  # r = min(th / h, tw / w): this project since v1, YOLOv5's letterbox
    else:  # long_side: orientation-free; [N, N] -> long side N; [S, L] -> short side S, long side <= L
        s, lng = min(th, tw), max(th, tw)
        lim_h, lim_w = (lng if h > w else s), (lng if w > h else s)
    r = min(lim_h / h, lim_w / w)
    if not cfg.scale_up:
        r = min(r, 1.0)
    # Deliberately float64 like the reference pipelines, also on the side that sets r:
    # floor(2552 * (640 / 2552)) = floor(639.99999999999989) = 639, as PaddleOCR's int(h * ratio).
    ch = max(1, min(lim_h, _apply_rounding(h * r, cfg.rounding)))
    cw = max(1, min(lim_w, _apply_rounding(w * r, cfg.rounding)))
    return _snap(ch, cfg), _snap(cw, cfg)


def plan(cfg: PreprocessConfig, source_hw: tuple[int, int], target: tuple[int, int]) -> Geometry:
    """Content size, canvas size and offset for one image: the single geometry rule."""
    h, w = int(source_hw[0]), int(source_hw[1])
    th, tw = int(target[0]), int(target[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"source size must be positive, got {source_hw}")
    if th <= 0 or tw <= 0:
        raise ValueError(f"target size must be positive, got {target}")
    ch, cw = _content_size(cfg, (h, w), (th, tw))
    if cfg.pad_to == "fixed":
        canvas = (th, tw)
    elif cfg.pad_to == "multiple":
        # fixed_height keeps its height: only the width is padded to the multiple
        canvas_h = ch if cfg.resize == "fixed_height" else _up_to_multiple(ch, cfg.multiple)
        canvas = (canvas_h, _up_to_multiple(cw, cfg.multiple))
    else:
        canvas = (ch, cw)
    if cfg.pad_position == "center":
        offset = ((canvas[0] - ch) // 2, (canvas[1] - cw) // 2)
    else:
        offset = (0, 0)
    return Geometry((h, w), (ch, cw), canvas, offset)


def output_size(cfg: PreprocessConfig, source_hw: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of the tensor for a source image of ``source_hw`` at ``target`` (an ``input.sizes`` entry).

    Pure: the data layer calls it with the decoded (or header) size to group images of
    equal tensor shape into batches (`group_by_shape`).
    """
    return plan(cfg, source_hw, target).canvas


def _dim_range(cfg: PreprocessConfig, lo: int, hi: int, axis_fixed: bool) -> tuple[int, int]:
    """Canvas range of one axis whose content length spans lo..hi (every step is monotonic)."""
    if axis_fixed:  # fixed_height's height: never snapped or padded to the multiple
        return lo, hi
    lo, hi = _snap(lo, cfg), _snap(hi, cfg)
    if cfg.pad_to == "multiple":
        lo, hi = _up_to_multiple(lo, cfg.multiple), _up_to_multiple(hi, cfg.multiple)
    return lo, hi


def output_size_range(
    cfg: PreprocessConfig, targets: Iterable[tuple[int, int]]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((min H, min W), (max H, max W)) of every tensor the config can produce at these targets.

    For a TensorRT optimization profile: every source image of any size lands inside
    (``tests/test_preprocess_policies.py`` checks it against `output_size` by brute force).
    """
    mins: list[tuple[int, int]] = []
    maxs: list[tuple[int, int]] = []
    for th, tw in targets:
        if cfg.pad_to == "fixed":  # letterbox, stretch, fixed_height on a fixed canvas
            mins.append((th, tw))
            maxs.append((th, tw))
            continue
        if cfg.resize == "fixed_height":
            (h0, h1), (w0, w1) = (th, th), _dim_range(cfg, 1, tw, False)
        elif cfg.resize == "long_side":  # either orientation: each side up to the long limit
            lng = max(th, tw)
            (h0, h1), (w0, w1) = _dim_range(cfg, 1, lng, False), _dim_range(cfg, 1, lng, False)
        else:  # letterbox
            (h0, h1), (w0, w1) = _dim_range(cfg, 1, th, False), _dim_range(cfg, 1, tw, False)
        mins.append((h0, w0))
        maxs.append((h1, w1))
    if not mins:
        raise ValueError("output_size_range needs at least one target size")
    return (min(m[0] for m in mins), min(m[1] for m in mins)), (max(m[0] for m in maxs), max(m[1] for m in maxs))


def group_by_shape(sizes: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Indices of equal (H, W) tensor sizes, groups in order of first appearance, indices ascending.

    Deterministic (a function of the listing order only), so batches cut from the
    groups do not depend on thread timing.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault((int(size[0]), int(size[1])), []).append(i)
    return list(groups.values())


def decode_image(data: bytes | np.ndarray, source: str) -> np.ndarray:
    """Decode encoded image bytes, keeping bit depth and alpha; DataError names ``source``."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise DataError(f"{source}: empty file (0 bytes), expected an image")
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. more pixels than OpenCV's limit (CV_IO_MAX_IMAGE_PIXELS)
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "OpenCV error"
        raise DataError(f"{source}: OpenCV cannot decode this image ({reason})") from None
    if image is None:
        raise DataError(f"{source}: not a decodable image (truncated or not an image file)")
    if image.dtype not in _FULL_SCALE:
        raise DataError(f"{source}: unsupported pixel type {image.dtype}, expected 8-bit or 16-bit")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise DataError(f"{source}: unsupported image shape {image.shape}, expected gray, BGR or BGRA")
    return image


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode a file (``np.fromfile`` so non-ASCII paths work)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read image: {exc.strerror or exc}") from exc
    return decode_image(data, str(path))


def _to_channels(image: np.ndarray, color: str) -> np.ndarray:
    """Decoded gray/BGR/BGRA -> HxWxC in the network's channel order (same dtype)."""
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]  # BGRA -> BGR: alpha dropped, see module docstring
    if color == "gray":
        if image.ndim == 3:
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)
        return image[:, :, None]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image[:, :, ::-1] if color == "rgb" else image


def _resize(img: np.ndarray, cfg: PreprocessConfig, geo: Geometry) -> np.ndarray:
    """Float32 HxWxC -> the canvas of ``geo``: resize to the content size, pad around it."""
    ch, cw = geo.content
    if (ch, cw) == geo.source:
        resized = img  # cv2.resize to the same size is a copy; skipping it changes no value
    else:
        resized = cv2.resize(img, (cw, ch), interpolation=INTERPOLATIONS[cfg.interpolation])
    resized = resized.reshape(ch, cw, -1)
    if geo.canvas == geo.content:
        return resized
    oy, ox = geo.offset
    out = np.full((geo.canvas[0], geo.canvas[1], img.shape[2]), cfg.pad_value, dtype=np.float32)
    out[oy : oy + ch, ox : ox + cw] = resized
    return out


def preprocess_image(image: np.ndarray, cfg: PreprocessConfig, size: tuple[int, int]) -> Preprocessed:
    """Decoded image -> normalized contiguous float32 CHW tensor for target ``size`` (H, W).

    The tensor is ``size`` for ``pad_to: fixed``; otherwise `output_size` gives its shape.
    """
    if image.dtype not in _FULL_SCALE:
        raise DataError(f"unsupported pixel type {image.dtype}, expected uint8 or uint16")
    th, tw = int(size[0]), int(size[1])
    if th <= 0 or tw <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    geo = plan(cfg, (image.shape[0], image.shape[1]), (th, tw))
    hwc = _to_channels(image, cfg.color)
    x = hwc.astype(np.float32) * np.float32(1.0 / _FULL_SCALE[image.dtype])
    x = _resize(x, cfg, geo)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(cfg.std, dtype=np.float32)
    x = (x - mean) * inv_std
    tensor = np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)
    return Preprocessed(tensor, geo.source, geo.scale_x, geo.scale_y, geo.offset[1], geo.offset[0], geo.content)


def stack_batch(tensors: list[np.ndarray]) -> np.ndarray:
    """CHW tensors of one size -> contiguous NCHW float32 batch.

    Sizes differ only under a dynamic policy (``pad_to`` multiple or none); batches must
    then be cut from `group_by_shape` groups, and a mixed batch is a one-line error.
    """
    other = next((t.shape for t in tensors if t.shape != tensors[0].shape), None)
    if other is not None:
        raise ConfigError(f"preprocess: images of one batch have different tensor sizes ({tensors[0].shape[1:]} and "
                          f"{other[1:]}): this pipeline cannot batch a dynamic policy (preprocess.pad_to: "
                          "multiple or none) unless it groups images with group_by_shape")
    return np.ascontiguousarray(np.stack(tensors, axis=0), dtype=np.float32)
