"""User-shaped CNNs outside the zoo, for checking latency predictions on networks no profile saw.

Each is what a user might write: other widths, depths and block layouts than the zoo's, built
from plain ``torch.nn`` modules of the op kinds calibration times. Name them as
``user_networks:<factory>`` with this folder on ``PYTHONPATH`` (e.g. ``PYTHONPATH=benchmarks tlplan
calibrate --evaluate NAME --networks user_networks:vgg_small,user_networks:resnet_narrow``).
"""

from __future__ import annotations

import torch.nn as nn


def _cbr(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1, act: type = nn.ReLU) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out), act(inplace=True)]


def _head(c_in: int, num_classes: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]


def vgg_small(num_classes: int = 1000) -> nn.Module:
    """A plain VGG-style stack: conv-BN-ReLU, max-pooling between stages."""
    layers: list[nn.Module] = []
    c_in = 3
    for width, repeats in ((32, 1), (64, 2), (128, 2), (192, 2)):
        for _ in range(repeats):
            layers += _cbr(c_in, width)
            c_in = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, *_head(c_in, num_classes))


class _Residual(nn.Module):
    """``body(x) + short(x)`` then ReLU; the shortcut projects where the shape changes."""

    def __init__(self, body: nn.Module, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = body
        self.short = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                      if stride != 1 or c_in != c_out else nn.Identity())
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.short(x))


def _basic(c_in: int, c_out: int, stride: int) -> nn.Module:
    body = nn.Sequential(*_cbr(c_in, c_out, 3, stride), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
    return _Residual(body, c_in, c_out, stride)


def _bottleneck(c_in: int, mid: int, c_out: int, stride: int) -> nn.Module:
    body = nn.Sequential(*_cbr(c_in, mid, 1), *_cbr(mid, mid, 3, stride), nn.Conv2d(mid, c_out, 1, bias=False),
                         nn.BatchNorm2d(c_out))
    return _Residual(body, c_in, c_out, stride)


def _resnet(blocks: list[nn.Module], stem: int, c_last: int, num_classes: int) -> nn.Module:
    return nn.Sequential(*_cbr(3, stem, 7, 2), nn.MaxPool2d(3, 2, 1), *blocks, *_head(c_last, num_classes))


def resnet_narrow(num_classes: int = 1000) -> nn.Module:
    """Basic residual blocks [1, 2, 2, 1] at half ResNet-18's widths."""
    blocks, c = [], 32
    for width, repeats, stride in ((32, 1, 1), (64, 2, 2), (128, 2, 2), (256, 1, 2)):
        for i in range(repeats):
            blocks.append(_basic(c, width, stride if i == 0 else 1))
            c = width
    return _resnet(blocks, 32, c, num_classes)


def resnet_bottleneck_small(num_classes: int = 1000) -> nn.Module:
    """Bottleneck blocks [2, 2, 2, 2] at 3/8 of ResNet-50's widths."""
    blocks, c = [], 24
    for mid, repeats, stride in ((24, 2, 1), (48, 2, 2), (96, 2, 2), (192, 2, 2)):
        for i in range(repeats):
            blocks.append(_bottleneck(c, mid, 4 * mid, stride if i == 0 else 1))
            c = 4 * mid
    return _resnet(blocks, 24, c, num_classes)


class _Inverted(nn.Module):
    def __init__(self, c_in: int, c_out: int, expand: int, stride: int, act: type = nn.ReLU6):
        super().__init__()
        mid = c_in * expand
        layers = (_cbr(c_in, mid, 1, act=act) if expand != 1 else []) + _cbr(mid, mid, 3, stride, mid, act=act)
        self.body = nn.Sequential(*layers, nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def _mobile(setting, stem: int, last: int, num_classes: int, act: type = nn.ReLU6) -> nn.Module:
    layers: list[nn.Module] = [*_cbr(3, stem, 3, 2, act=act)]
    c = stem
    for expand, width, repeats, stride in setting:
        for i in range(repeats):
            layers.append(_Inverted(c, width, expand, stride if i == 0 else 1, act))
            c = width
    layers += _cbr(c, last, 1, act=act)
    return nn.Sequential(*layers, *_head(last, num_classes))


def mobilenet_custom(num_classes: int = 1000) -> nn.Module:
    """Inverted residuals with expansion 4 and a layout of their own (fewer, wider stages)."""
    setting = [(1, 16, 1, 1), (4, 32, 2, 2), (4, 48, 3, 2), (4, 96, 3, 2), (4, 160, 2, 1), (4, 256, 1, 2)]
    return _mobile(setting, 24, 640, num_classes)


def mobilenet_wide_shallow(num_classes: int = 1000) -> nn.Module:
    """MobileNetV2-like blocks, wide (×1.25) and shallow (one or two a stage), hardswish activations."""
    setting = [(1, 24, 1, 1), (6, 32, 1, 2), (6, 40, 1, 2), (6, 80, 2, 2), (6, 120, 1, 1), (6, 200, 1, 2)]
    return _mobile(setting, 40, 1024, num_classes, act=nn.Hardswish)


NETWORKS = ("vgg_small", "resnet_narrow", "resnet_bottleneck_small", "mobilenet_custom", "mobilenet_wide_shallow")
