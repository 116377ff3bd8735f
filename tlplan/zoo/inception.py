"""Inception v3 with torchvision's structure and module names (``Conv2d_1a_3x3`` … ``Mixed_7c``).

Written from the architecture of Szegedy et al., "Rethinking the Inception Architecture for
Computer Vision" (2016), as torchvision lays it out: every convolution is a ``BasicConv2d``
(conv without bias → BatchNorm(eps=0.001) → ReLU); the stem runs five of them and two 3×3/2 max
pools; then eleven mixed blocks: three 35×35 ``InceptionA`` (Mixed_5b/c/d), the grid reduction
``InceptionB`` (Mixed_6a), four 17×17 ``InceptionC`` with factorised 7×7 convs (Mixed_6b…e), the
grid reduction ``InceptionD`` (Mixed_7a) and two 8×8 ``InceptionE`` with expanded 1×3 / 3×1
filter banks (Mixed_7b/c); global average pool, dropout 0.5, ``fc``.

The auxiliary classifier (``AuxLogits``, on Mixed_6e's output) is left out by default, as
torchvision's ``aux_logits=False``: it is an ImageNet-training regulariser, not part of the
network that is deployed and fine-tuned, and only without it is the output a single tensor, which
tlplan's profiler and trainer take. ``aux_logits=True`` adds it with torchvision's parameter count
(27,161,264 at 1000 classes, against 23,834,568 without); in training mode the model then returns
``(logits, aux)``, as torchvision's does.

Inputs must be at least 75×75 (at 74 the 3×3/2 convolutions of Mixed_7a get a 2×2 grid).
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "BasicConv2d",
    "InceptionA",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "InceptionAux",
    "Inception3",
    "inception_v3",
    "MIN_RESOLUTION",
]

#: the smallest input height / width Inception v3 runs at
MIN_RESOLUTION = 75

_Size = Union[int, Tuple[int, int]]


class BasicConv2d(nn.Module):
    """``conv`` (no bias) → ``bn`` (eps 0.001) → ReLU (in place)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: _Size, stride: int = 1,
        padding: _Size = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


def _pool_3x3_same(x: Tensor) -> Tensor:
    """The 3×3 average pool (stride 1, padding 1, padding counted) in front of a pool branch."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


def _reduce_3x3(x: Tensor) -> Tensor:
    """The 3×3/2 max pool (no padding) of a grid-reduction block's pool branch."""
    return F.max_pool2d(x, kernel_size=3, stride=2)


class InceptionA(nn.Module):
    """35×35 block: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avgpool→1×1 (64 + 64 + 96 + pool_features)."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_pool_3x3_same(x))
        return torch.cat([a, b, c, d], 1)


class InceptionB(nn.Module):
    """35→17 grid reduction: 3×3/2 | 1×1→3×3→3×3/2 | maxpool/2 (384 + 96 + in_channels)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = _reduce_3x3(x)
        return torch.cat([a, b, c], 1)


class InceptionC(nn.Module):
    """17×17 block with 7×7 convs factorised into 1×7 and 7×1 (``channels_7x7`` wide inside):
    1×1 | 1×1→1×7→7×1 | 1×1→7×1→1×7→7×1→1×7 | avgpool→1×1, each branch 192 wide (768 out)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row, col = (1, 7), (7, 1)
        row_pad, col_pad = (0, 3), (3, 0)
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, row, padding=row_pad)
        self.branch7x7_3 = BasicConv2d(c7, 192, col, padding=col_pad)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, col, padding=col_pad)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, row, padding=row_pad)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, col, padding=col_pad)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, row, padding=row_pad)
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_1(x)
        c = self.branch7x7dbl_3(self.branch7x7dbl_2(c))
        c = self.branch7x7dbl_5(self.branch7x7dbl_4(c))
        d = self.branch_pool(_pool_3x3_same(x))
        return torch.cat([a, b, c, d], 1)


class InceptionD(nn.Module):
    """17→8 grid reduction: 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | maxpool/2 (320 + 192 + in)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_2(self.branch7x7x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(b))
        c = _reduce_3x3(x)
        return torch.cat([a, b, c], 1)


class InceptionE(nn.Module):
    """8×8 block with expanded filter banks: 1×1 (320) | 1×1→[1×3, 3×1] (2×384) |
    1×1→3×3→[1×3, 3×1] (2×384) | avgpool→1×1 (192): 2048 out."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        d = self.branch_pool(_pool_3x3_same(x))
        return torch.cat([a, b, c, d], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17×17 grid: avgpool 5×5/3 → 1×1 (128) → 5×5 (768) →
    global average pool → ``fc``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(x, kernel_size=5, stride=3)
        x = self.conv1(self.conv0(x))
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return self.fc(torch.flatten(x, 1))


#: the mixed blocks in forward order: tlplan's blocks (``blocks:K`` trains the last K)
_MIXED = (
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)


class Inception3(nn.Module):
    """torchvision-compatible Inception v3 (``transform_input=False``): stem ``Conv2d_1a_3x3`` …
    ``Conv2d_4a_3x3`` with ``maxpool1`` / ``maxpool2``, ``Mixed_5b`` … ``Mixed_7c``, ``avgpool``,
    ``dropout`` (0.5), ``fc``; ``AuxLogits`` only with ``aux_logits=True``."""

    def __init__(
        self, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)  # 256 out
        self.Mixed_5c = InceptionA(256, pool_features=64)  # 288
        self.Mixed_5d = InceptionA(288, pool_features=64)  # 288
        self.Mixed_6a = InceptionB(288)  # 768
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits: Optional[InceptionAux] = (
            InceptionAux(768, num_classes) if aux_logits else None
        )
        self.Mixed_7a = InceptionD(768)  # 1280
        self.Mixed_7b = InceptionE(1280)  # 2048
        self.Mixed_7c = InceptionE(2048)  # 2048
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        self._init_weights()

        self.tlplan_blocks: tuple[str, ...] = _MIXED
        self.tlplan_classifier: str = "fc"

    def _init_weights(self) -> None:
        """torchvision's: conv and linear weights normal with std 0.1 (0.01 for the aux 5×5
        conv, 0.001 for the aux ``fc``) truncated to [-2, 2], biases zero; batch norm ones and
        zeros.

        The bounds are absolute (±20 σ and more), so a normal draw clamped to them is in practice
        ``trunc_normal_``'s distribution, and several times faster to draw for 24 M weights.
        """
        special: dict[nn.Module, float] = {}
        if self.AuxLogits is not None:
            special = {self.AuxLogits.conv1.conv: 0.01, self.AuxLogits.fc: 0.001}
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.weight.normal_(0.0, special.get(m, 0.1)).clamp_(-2.0, 2.0)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        """The stem and the mixed blocks up to and including ``Mixed_6e`` (17×17×768 at 299)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.maxpool1(x)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = self.maxpool2(x)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)
        return self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))

    def head(self, x: Tensor) -> Tensor:
        """``Mixed_7a`` … ``Mixed_7c``, global average pool, dropout, ``fc``."""
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))

    def forward(self, x: Tensor) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        x = self.features(x)
        if self.AuxLogits is not None and self.training:
            aux = self.AuxLogits(x)
            return self.head(x), aux
        return self.head(x)


def inception_v3(num_classes: int = 1000, aux_logits: bool = False) -> Inception3:
    """Inception v3 (23,834,568 parameters at 1000 classes; 27,161,264 with ``aux_logits``)."""
    return Inception3(num_classes=num_classes, aux_logits=aux_logits)
