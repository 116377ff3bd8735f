"""A small transfer task: pretrain on one synthetic task, fine-tune on another.

Images are stripes (horizontal or vertical, of random period and phase) in one dominant colour,
with noise. The pretraining task is the colour; the downstream task is the orientation, which
features trained for colour do not need to keep. A classifier on frozen colour features learns
the orientation only as well as those features happen to carry it; training the upper convs
too lets the features adapt.

``make`` is a ``package.module:factory`` for tlplan (``transfer_task:make``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tlplan.data import Data

RESOLUTION = 32


def stripes(n: int, seed: int, task: str, resolution: int = RESOLUTION) -> Data:
    g = torch.Generator().manual_seed(seed)
    orientation = torch.randint(0, 2, (n,), generator=g)
    colour = torch.randint(0, 3, (n,), generator=g)
    period = torch.randint(3, 7, (n,), generator=g).float()
    phase = torch.rand(n, generator=g) * 2 * math.pi
    xs = torch.arange(resolution).float()
    wave = torch.sin(2 * math.pi * xs[None, :] / period[:, None] + phase[:, None])  # (n, resolution)
    pattern = torch.where(orientation[:, None, None] == 0, wave[:, None, :].expand(n, resolution, resolution),
                          wave[:, :, None].expand(n, resolution, resolution))
    base = torch.full((n, 3), 0.2)
    base[torch.arange(n), colour] = 1.0
    images = base[:, :, None, None] * (0.6 + 0.4 * pattern)[:, None] + 0.15 * torch.randn(n, 3, resolution, resolution, generator=g)
    labels = colour if task == "colour" else orientation
    return Data(images, labels, tuple(str(i) for i in range(int(labels.max()) + 1)), f"stripes ({task})")


class StripeNet(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()

        def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        self.features = nn.Sequential(block(3, 16, 1), block(16, 32, 2), block(32, 32, 1), block(32, 64, 2), block(64, 64, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def make(num_classes: int = 3) -> StripeNet:
    return StripeNet(num_classes)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, 1x1 projection (a residual where shapes
    allow). Its expanded tensors are what training its weights keeps, and what a lite residual
    branch beside it (which keeps only the pooled block input) avoids."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 6):
        super().__init__()
        mid = c_in * expand
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileStripeNet(nn.Module):
    """A small MobileNetV2: a stem, then inverted residual blocks (the TinyTL setting)."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.features = nn.Sequential(stem, InvertedResidual(16, 16, 1), InvertedResidual(16, 24, 2),
                                      InvertedResidual(24, 24, 1), InvertedResidual(24, 32, 2), InvertedResidual(32, 32, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)
        self.tlplan_blocks = tuple(f"features.{i}" for i in range(1, len(self.features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def make_mobile(num_classes: int = 3) -> MobileStripeNet:
    return MobileStripeNet(num_classes)


def pretrained(seed: int = 0, epochs: int = 3, n: int = 600, factory=None, resolution: int = RESOLUTION) -> dict:
    """A StripeNet (or ``factory``'s net) trained on the colour task (plain PyTorch): the backbone to transfer."""
    torch.manual_seed(seed)
    net = (factory or StripeNet)(3)
    data = stripes(n, seed + 1, "colour", resolution)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for i in range(0, n, 32):
            loss = F.cross_entropy(net(data.images[i : i + 32]), data.labels[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.state_dict()
