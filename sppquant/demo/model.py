"""The demo network in PyTorch: three conv blocks -> SPP(1, 2, 4) -> two fully connected layers.

SPP makes the feature length independent of H and W, which is what lets one model
serve several input sizes (the demo calibrates and evaluates at 32x32 and 48x48).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LEVELS = (1, 2, 4)
CHANNELS = (3, 32, 64, 64)
HIDDEN = 128
CLASSES = 10


class SpatialPyramidPooling(nn.Module):
    """Per level adaptive max pooling, flattened and concatenated: Caffe's SPP layout."""

    def __init__(self, levels: tuple[int, ...] = LEVELS) -> None:
        super().__init__()
        self.levels = tuple(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in self.levels], dim=1)


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SppNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = ConvBlock(CHANNELS[0], CHANNELS[1])
        self.block2 = ConvBlock(CHANNELS[1], CHANNELS[2])
        self.block3 = ConvBlock(CHANNELS[2], CHANNELS[3])
        self.spp = SpatialPyramidPooling(LEVELS)
        features = CHANNELS[3] * sum(n * n for n in LEVELS)
        # SPP features are maxima of ReLU outputs: all positive with a large common mean,
        # which kills fc1's ReLUs within a few steps. A BatchNorm here trains well and
        # folds into fc1 at export, so the deployed graph is unchanged: SPP -> Gemm.
        self.spp_bn = nn.BatchNorm1d(features)
        self.fc1 = nn.Linear(features, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.block1(x), 2)
        x = F.max_pool2d(self.block2(x), 2)
        x = self.spp_bn(self.spp(self.block3(x)))
        return self.fc2(F.relu(self.fc1(x)))
