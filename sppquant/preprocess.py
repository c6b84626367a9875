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
4. Resize in float32 (no rounding to 8 bits in between). ``letterbox`` keeps the
   aspect ratio and pads with ``pad_value`` (full-scale units, before mean/std);
   ``stretch`` fills the target.
5. ``(x - mean) / std`` per channel, HWC -> CHW, contiguous float32.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from sppquant.errors import DataError

COLORS = ("rgb", "bgr", "gray")
RESIZES = ("letterbox", "stretch")
PAD_POSITIONS = ("center", "top_left")
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become network input. Every field enters the fingerprint."""

    color: str = "rgb"
    resize: str = "letterbox"
    interpolation: str = "linear"
    pad_value: float = 0.0
    pad_position: str = "center"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of this config (ties tables to preprocessing)."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Geometry:
    """Where a network-input pixel came from: ``x_src = (x_net - offset_x) / scale_x`` (same for y)."""

    source_size: tuple[int, int]  # (H, W) of the decoded image
    scale_x: float
    scale_y: float
    offset_x: int
    offset_y: int

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y

    def to_network(self, x: float, y: float) -> tuple[float, float]:
        return x * self.scale_x + self.offset_x, y * self.scale_y + self.offset_y


@dataclass(frozen=True)
class Preprocessed:
    """A network-ready CHW tensor and what maps its coordinates back to the source image.

    Source coordinates: ``x_src = (x_net - offset_x) / scale_x`` (same for y).
    """

    tensor: np.ndarray
    source_size: tuple[int, int]  # (H, W) of the decoded image
    scale_x: float
    scale_y: float
    offset_x: int
    offset_y: int

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.source_size, self.scale_x, self.scale_y, self.offset_x, self.offset_y)


def decode_image(data: bytes | np.ndarray, source: str) -> np.ndarray:
    """Decode encoded image bytes, keeping bit depth and alpha; DataError names ``source``."""
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if buf.size == 0:
        raise DataError(f"{source}: empty file (0 bytes), expected an image")
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
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


def _resize(img: np.ndarray, cfg: PreprocessConfig, size: tuple[int, int]) -> tuple[np.ndarray, float, float, int, int]:
    """Float32 HxWxC -> target size; returns the image and (scale_x, scale_y, off_x, off_y)."""
    th, tw = size
    h, w = img.shape[:2]
    interp = INTERPOLATIONS[cfg.interpolation]
    if cfg.resize == "stretch":
        out = cv2.resize(img, (tw, th), interpolation=interp)
        return out.reshape(th, tw, -1), tw / w, th / h, 0, 0
    r = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * r))), max(1, min(tw, round(w * r)))
    resized = img if (nh, nw) == (h, w) else cv2.resize(img, (nw, nh), interpolation=interp)
    resized = resized.reshape(nh, nw, -1)
    if cfg.pad_position == "center":
        oy, ox = (th - nh) // 2, (tw - nw) // 2
    else:
        oy, ox = 0, 0
    out = np.full((th, tw, img.shape[2]), cfg.pad_value, dtype=np.float32)
    out[oy : oy + nh, ox : ox + nw] = resized
    return out, nw / w, nh / h, ox, oy


def preprocess_image(image: np.ndarray, cfg: PreprocessConfig, size: tuple[int, int]) -> Preprocessed:
    """Decoded image -> normalized contiguous float32 CHW tensor of ``size`` (H, W)."""
    if image.dtype not in _FULL_SCALE:
        raise DataError(f"unsupported pixel type {image.dtype}, expected uint8 or uint16")
    th, tw = int(size[0]), int(size[1])
    if th <= 0 or tw <= 0:
        raise ValueError(f"target size must be positive, got {size}")
    hwc = _to_channels(image, cfg.color)
    x = hwc.astype(np.float32) * np.float32(1.0 / _FULL_SCALE[image.dtype])
    x, sx, sy, ox, oy = _resize(x, cfg, (th, tw))
    mean = np.asarray(cfg.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(cfg.std, dtype=np.float32)
    x = (x - mean) * inv_std
    tensor = np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)
    return Preprocessed(tensor, (image.shape[0], image.shape[1]), sx, sy, ox, oy)


def stack_batch(tensors: list[np.ndarray]) -> np.ndarray:
    """CHW tensors of one size -> contiguous NCHW float32 batch."""
    return np.ascontiguousarray(np.stack(tensors, axis=0), dtype=np.float32)
