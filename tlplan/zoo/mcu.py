"""The three tiny-training MCU models (MCUNet-5fps, MobileNetV2-w0.35, ProxylessNAS-w0.3).

These are the int8 deployment graphs with batch norm folded into the convolutions: every Conv2d has
a bias and there are no norm layers. Input 128×128. Layout:

* ``first_conv``: 3→16, 3×3, stride 2, ReLU6 (conv index 0);
* ``blocks.0 .. blocks.N``: inverted bottlenecks; each has ``inverted_bottleneck`` (1×1 expand +
  ReLU6; absent in ``blocks.0``), ``depth_conv`` (k×k depthwise + ReLU6) and ``point_linear``
  (1×1 projection, no activation), registered and run in that order, so the convs' forward order
  is tiny-training's conv index (``manual_weight_idx``) order;
* no final 1×1 feature-mix conv: global average pool, then ``classifier`` = Linear(last width).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "MCUBlock",
    "MCUNet",
    "MCUNET_5FPS",
    "MBV2_W035",
    "PROXYLESS_W03",
    "mcunet_5fps",
    "mbv2_w035",
    "proxyless_w03",
]

# (in, expanded, out, kernel, stride); expanded == in means "no expansion" (depthwise first).
BlockConfig = Tuple[int, int, int, int, int]

MCUNET_5FPS: Tuple[BlockConfig, ...] = (
    (16, 16, 8, 3, 1),
    (8, 32, 16, 3, 2),
    (16, 48, 16, 3, 1),
    (16, 48, 24, 7, 2),
    (24, 120, 24, 3, 1),
    (24, 120, 40, 3, 2),
    (40, 160, 40, 7, 1),
    (40, 160, 48, 5, 1),
    (48, 144, 48, 3, 1),
    (48, 192, 48, 3, 1),
    (48, 240, 96, 7, 2),
    (96, 384, 96, 5, 1),
    (96, 384, 96, 5, 1),
    (96, 576, 160, 3, 1),
)

MBV2_W035: Tuple[BlockConfig, ...] = (
    (16, 16, 8, 3, 1),
    (8, 48, 8, 3, 2),
    (8, 48, 8, 3, 1),
    (8, 48, 16, 3, 2),
    (16, 96, 16, 3, 1),
    (16, 96, 16, 3, 1),
    (16, 96, 24, 3, 2),
    (24, 144, 24, 3, 1),
    (24, 144, 24, 3, 1),
    (24, 144, 24, 3, 1),
    (24, 144, 32, 3, 1),
    (32, 192, 32, 3, 1),
    (32, 192, 32, 3, 1),
    (32, 192, 56, 3, 2),
    (56, 336, 56, 3, 1),
    (56, 336, 56, 3, 1),
    (56, 336, 112, 3, 1),
)

PROXYLESS_W03: Tuple[BlockConfig, ...] = (
    (16, 16, 8, 3, 1),
    (8, 24, 16, 5, 2),
    (16, 48, 16, 3, 1),
    (16, 48, 16, 7, 2),
    (16, 48, 16, 3, 1),
    (16, 48, 16, 5, 1),
    (16, 48, 16, 5, 1),
    (16, 96, 24, 7, 2),
    (24, 72, 24, 5, 1),
    (24, 72, 24, 5, 1),
    (24, 72, 24, 5, 1),
    (24, 144, 32, 5, 1),
    (32, 96, 32, 5, 1),
    (32, 96, 32, 5, 1),
    (32, 96, 32, 5, 1),
    (32, 192, 64, 7, 2),
    (64, 384, 64, 7, 1),
    (64, 192, 64, 7, 1),
    (64, 192, 64, 7, 1),
    (64, 384, 96, 7, 1),
)


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
    act: bool = True,
) -> nn.Sequential:
    """``conv`` (bias=True: batch norm folded in) → [``act`` = ReLU6]; padding (k−1)//2."""
    layers: "OrderedDict[str, nn.Module]" = OrderedDict(
        conv=nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
            groups=groups, bias=True,
        )
    )
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class MCUBlock(nn.Module):
    """Folded-BN inverted bottleneck: [1×1 expand + ReLU6] → k×k depthwise + ReLU6 → 1×1 linear
    projection; identity residual when stride is 1 and in == out."""

    def __init__(self, in_channels: int, expanded: int, out_channels: int, kernel_size: int,
                 stride: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.inverted_bottleneck = (
            _conv(in_channels, expanded, 1) if expanded != in_channels else None
        )
        self.depth_conv = _conv(expanded, expanded, kernel_size, stride, groups=expanded)
        self.point_linear = _conv(expanded, out_channels, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.inverted_bottleneck is not None:
            out = self.inverted_bottleneck(out)
        out = self.point_linear(self.depth_conv(out))
        if self.use_res_connect:
            out = out + x
        return out


class MCUNet(nn.Module):
    """A tiny-training MCU network built from a block table (see the module docstring)."""

    def __init__(self, config: Sequence[BlockConfig], num_classes: int = 1000,
                 stem_channels: int = 16) -> None:
        super().__init__()
        if config[0][0] != stem_channels:
            raise ValueError("the first block must take the stem's channels")
        self.first_conv = _conv(3, stem_channels, 3, stride=2)
        self.blocks = nn.Sequential(*(MCUBlock(*row) for row in config))
        self.global_avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(config[-1][2], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

        self.tlplan_blocks: tuple[str, ...] = tuple(f"blocks.{i}" for i in range(len(config)))
        self.tlplan_classifier: str = "classifier"

    def forward(self, x: Tensor) -> Tensor:
        x = self.first_conv(x)
        x = self.blocks(x)
        x = self.global_avg_pooling(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mcunet_5fps(num_classes: int = 1000) -> MCUNet:
    """MCUNet-5fps (tiny-training, 128×128): 14 blocks, 42 convs, final width 160."""
    return MCUNet(MCUNET_5FPS, num_classes=num_classes)


def mbv2_w035(num_classes: int = 1000) -> MCUNet:
    """MobileNetV2-w0.35 (tiny-training variant, 128×128): 17 blocks, 51 convs, final width 112."""
    return MCUNet(MBV2_W035, num_classes=num_classes)


def proxyless_w03(num_classes: int = 1000) -> MCUNet:
    """ProxylessNAS-w0.3 (tiny-training, 128×128): 20 blocks, 60 convs, final width 96."""
    return MCUNet(PROXYLESS_W03, num_classes=num_classes)

