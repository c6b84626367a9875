"""The demo SPP-net detector in PyTorch: one feature map per image, RoI pyramid pooling, Fast R-CNN heads.

He et al. (2014) computed the convolutional features once per image and pooled each
proposal's window with a spatial pyramid into a fixed-length vector; that is the
speed-up over R-CNN and the reason the RoI SPP op exists. `roi_spp` is exactly the
deployed op's rule (`sppquant.ops.roi_spp.onnx`): integer corners and bins, clipped to
the map, empty bins 0, so the exported model computes what was trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sppquant.demo.model import ConvBlock  # the classifier demo's conv + BN + ReLU block

LEVELS = (1, 2, 4)
STRIDE = 4
SPATIAL_SCALE = 1.0 / STRIDE
CHANNELS = (3, 16, 32, 64, 64)
HIDDEN = 256
NUM_CLASSES = 11  # background (0) + digits 0..9 (1..10)
BACKGROUND = 0
# Fast R-CNN target normalisation; folded into the exported box layer, so ONNX outputs raw deltas.
DELTA_STD = (0.1, 0.1, 0.2, 0.2)


def roi_regions(rois: np.ndarray, spatial_scale: float) -> np.ndarray:
    """(R, 5) rois -> (R, 5) int64 ``[batch, x0, y0, roi_w, roi_h]`` of the op's rule."""
    rois = np.asarray(rois, np.float32).reshape(-1, 5)
    prod = rois[:, 1:5] * np.float32(spatial_scale)  # float32 product, as the op
    fl = np.floor(prod)
    frac = prod - fl  # rounding half away from zero, done on the float32 value
    corners = fl.astype(np.int64) + ((frac > 0.5) | ((frac == 0.5) & (prod >= 0))).astype(np.int64)
    w = np.maximum(corners[:, 2] - corners[:, 0] + 1, 1)
    h = np.maximum(corners[:, 3] - corners[:, 1] + 1, 1)
    return np.stack([rois[:, 0].astype(np.int64), corners[:, 0], corners[:, 1], w, h], axis=1)


def _bins(start: np.ndarray, length: np.ndarray, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(R,) region starts and lengths -> (R, n) exact bin [start, end) clipped to [0, size]."""
    i = np.arange(n, dtype=np.int64)[None, :]
    lo = start[:, None] + (i * length[:, None]) // n
    hi = start[:, None] - ((-(i + 1) * length[:, None]) // n)
    return np.clip(lo, 0, size), np.clip(hi, 0, size)


def _argmax_table(x: torch.Tensor, max_len: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Range-max table along dim 1 with positions: ``vals[k][:, j] = max(x[:, j : j + 2**k])`` (exact).

    Built only up to the longest range queried (``max_len``)."""
    pos = torch.arange(x.shape[1], device=x.device).view(1, -1, *([1] * (x.dim() - 2))).expand_as(x)
    vals, idx = [x], [pos]
    while 2 ** len(vals) <= min(x.shape[1], max_len):
        half = 2 ** (len(vals) - 1)
        left = vals[-1][:, :-half] >= vals[-1][:, half:]
        vals.append(torch.where(left, vals[-1][:, :-half], vals[-1][:, half:]))
        idx.append(torch.where(left, idx[-1][:, :-half], idx[-1][:, half:]))
    return vals, idx


def _range_argmax(table: tuple[list[torch.Tensor], list[torch.Tensor]], rows: np.ndarray, lo: np.ndarray,
                  hi: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Max and its position over ``x[rows[m], lo[m]:hi[m]]`` for every query m (hi > lo): two table lookups."""
    vals, idx = table
    dev = vals[0].device
    k = np.floor(np.log2(np.maximum(hi - lo, 1))).astype(np.int64)
    out_v, out_i, order = [], [], []
    for level in np.unique(k):
        m = np.flatnonzero(k == level)
        r = torch.from_numpy(rows[m]).to(dev)
        a, b = torch.from_numpy(lo[m]).to(dev), torch.from_numpy(hi[m] - 2 ** int(level)).to(dev)
        va, vb = vals[level][r, a], vals[level][r, b]
        left = va >= vb
        out_v.append(torch.where(left, va, vb))
        out_i.append(torch.where(left, idx[level][r, a], idx[level][r, b]))
        order.append(m)
    inverse = torch.from_numpy(np.argsort(np.concatenate(order), kind="stable")).to(dev)
    return torch.cat(out_v)[inverse], torch.cat(out_i)[inverse]


def roi_spp(features: torch.Tensor, rois: np.ndarray, levels: Sequence[int] = LEVELS,
            spatial_scale: float = SPATIAL_SCALE) -> torch.Tensor:
    """RoI spatial pyramid max pooling, (R, C * sum(n*n)), level-major / channel / bin row-major.

    Bins are computed exactly as the op does (integer corners and edges, clipped, empty
    bins 0). Each bin's argmax comes from range-max (sparse) tables, first along W for
    every column bin, then along H, without gradient; the pooled values are then gathered
    from ``features`` at those positions, so autograd sends each bin's gradient to its
    maximum as max pooling does, and hundreds of regions cost a few tensor ops.
    """
    n_img, c, h, w = features.shape
    dev = features.device
    reg = roi_regions(rois, spatial_scale)
    r = len(reg)
    if r == 0:
        return features.new_zeros((0, c * sum(n * n for n in levels)))
    longest = int(max(reg[:, 3].max(), reg[:, 4].max()))
    with torch.no_grad():
        cols_table = _argmax_table(features.detach().permute(0, 3, 1, 2).contiguous(), longest)  # (N, W, C, H)
    flat_features = features.reshape(-1)
    out = []
    for n in levels:
        xs, xe = _bins(reg[:, 1], reg[:, 3], n, w)
        ys, ye = _bins(reg[:, 2], reg[:, 4], n, h)
        with torch.no_grad():
            cv, ci = _range_argmax(cols_table, np.repeat(reg[:, 0], n), np.minimum(xs.ravel(), w - 1),
                                   np.clip(np.maximum(xe.ravel(), xs.ravel() + 1), None, w))  # (R*n, C, H)
            rows_table = _argmax_table(cv.view(r, n, c, h).permute(0, 3, 1, 2).contiguous(),
                                       int((ye - ys).max()))  # (R, H, n_cols, C)
            _, yi = _range_argmax(rows_table, np.repeat(np.arange(r), n), np.minimum(ys.ravel(), h - 1),
                                  np.clip(np.maximum(ye.ravel(), ys.ravel() + 1), None, h))  # (R*n_rows, n_cols, C)
            yi = yi.view(r, n, n, c)
            rr = torch.arange(r, device=dev).view(r, 1, 1, 1)
            jj = torch.arange(n, device=dev).view(1, 1, n, 1)
            cc = torch.arange(c, device=dev).view(1, 1, 1, c)
            xi = ci.reshape(-1)[((rr * n + jj) * c + cc) * h + yi]
            bb = torch.from_numpy(reg[:, 0]).to(dev).view(r, 1, 1, 1)
            flat = ((bb * c + cc) * h + yi) * w + xi
            ok = torch.from_numpy((ye > ys)[:, :, None] & (xe > xs)[:, None, :])[..., None].to(dev)
        grid = torch.where(ok, flat_features[flat], torch.zeros((), dtype=features.dtype, device=dev))
        out.append(grid.permute(0, 3, 1, 2).reshape(r, c * n * n))
    return torch.cat(out, dim=1)


class SppNetDetector(nn.Module):
    """conv(3->16) pool conv(16->32) pool conv(32->64) conv(64->64) -> RoI SPP(1,2,4) -> BN -> FC 256 x2 -> heads.

    ``channels`` / ``hidden`` change the widths (the export reads them from the layers)."""

    def __init__(self, channels: Sequence[int] = CHANNELS, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(channels[:-1], channels[1:]))
        self.pool_after = (0, 1)  # 2x2 max pool after these blocks: stride 4
        features = channels[-1] * sum(n * n for n in LEVELS)
        # Pooled maxima are all positive with a large common mean: a BatchNorm keeps fc1's
        # ReLUs alive in training and folds into fc1 at export (as in the classifier demo).
        self.roi_bn = nn.BatchNorm1d(features)
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.cls = nn.Linear(hidden, NUM_CLASSES)
        self.bbox = nn.Linear(hidden, 4 * NUM_CLASSES)

    def backbone(self, image: torch.Tensor) -> torch.Tensor:
        x = image
        for k, block in enumerate(self.blocks):
            x = block(x)
            if k in self.pool_after:
                x = F.max_pool2d(x, 2)
        return x

    def heads(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.fc1(self.roi_bn(pooled)))
        x = F.relu(self.fc2(x))
        return self.cls(x), self.bbox(x)

    def forward(self, image: torch.Tensor, rois: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (R, 11) and normalised box deltas (R, 44) for ``rois`` (R, 5) in input pixels."""
        return self.heads(roi_spp(self.backbone(image), rois))
