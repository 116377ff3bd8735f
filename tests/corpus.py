"""The conformance corpus: small models shaped the way users write them, one or more per op spec.

Each factory returns a fresh model (seeded) for 3×16×16 inputs and 5 classes. Together they cover
every registered op kind (``test_conformance.test_corpus_covers_every_spec`` checks it) and the
ways users reach them: functional calls with their own parameters, Conv2d subclasses with and
without a forward of their own, depthwise convs with a channel multiplier, dilated and grouped
convs, every norm, SE blocks, concatenations, transposed convs, shared modules, conv classifiers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

CLASSES = 5
SHAPE = (2, 3, 16, 16)


class FunctionalNet(nn.Module):
    """Convs and a head written with F.* and parameters of its own (no Conv2d modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.2)
        self.b1 = nn.Parameter(torch.zeros(8))
        self.dw = nn.Parameter(torch.randn(8, 1, 3, 3) * 0.2)  # functional depthwise: groups from the call
        self.fc_w = nn.Parameter(torch.randn(CLASSES, 8) * 0.2)
        self.fc_b = nn.Parameter(torch.zeros(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.conv2d(x, self.w1, self.b1, stride=2, padding=1))
        x = F.hardtanh(F.conv2d(x, self.dw, None, 1, 1, 1, 8))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return F.linear(x, self.fc_w, self.fc_b)


class SameConv(nn.Conv2d):
    """A subclass that only sets "same" padding (as timm's create_conv2d does): the runtime swaps it."""

    def __init__(self, cin: int, cout: int, k: int, **kw) -> None:
        super().__init__(cin, cout, k, padding="same", **kw)


class StdConv2d(nn.Conv2d):
    """Weight standardisation, as BiT writes it: a forward of its own (measured, never swapped)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, m = torch.var_mean(self.weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
        w = (self.weight - m) / torch.sqrt(v + 1e-10)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SubclassNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = SameConv(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.std = StdConv2d(8, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.reflect = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.stem(x)))
        x = self.act(self.gn(self.std(x)))
        x = self.act(self.reflect(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class ConvZooNet(nn.Module):
    """Depthwise with a channel multiplier, dilated, grouped and strided convs, max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True)),
            nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=8), nn.BatchNorm2d(16), nn.ReLU(inplace=True)),  # ×2
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.BatchNorm2d(16), nn.Hardswish()),
            nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=4), nn.BatchNorm2d(16), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6()),  # depthwise
        )
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Identity(), nn.Dropout(0.2), nn.Linear(16 * 4 * 4, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class SEBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(c, c // 4, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(c // 4, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class Branchy(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c // 2, 1)
        self.b = nn.Conv2d(c, c // 2, 3, padding=1)
        self.norm = nn.InstanceNorm2d(c, affine=True)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.norm(torch.cat([self.a(x), self.b(x)], dim=1)))


class SENet(nn.Module):
    """Squeeze-and-excitation, concatenation, residual adds, SiLU / GELU / sigmoid / h-sigmoid / tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.SiLU())
        self.se = SEBlock(16)
        self.branch = Branchy(16)
        self.tail = nn.Sequential(nn.Conv2d(16, 16, 1), nn.Hardsigmoid(), nn.AvgPool2d(2), nn.Tanh())
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.branch(self.se(self.stem(x)))
        x = self.tail(x)
        return self.fc(x.mean((2, 3)))


class LayerNormNet(nn.Module):
    """ConvNeXt's pattern: a depthwise conv, LayerNorm over channels in NHWC, a pointwise MLP; then
    ViT's: tokens as a transposed view into a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.dw = nn.Conv2d(16, 16, 7, padding=3, groups=16)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.token = nn.Linear(16, 16)
        self.side = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        x = x + self.mlp(y).permute(0, 3, 1, 2)
        # ViT's tokens: a transposed view, which a Linear on 3-d input copies before keeping it
        # (while a conv keeps the same tensor as it is)
        tokens = self.token(x.flatten(2).transpose(1, 2))
        return self.head(tokens.mean(1) + self.side(x).mean((2, 3)))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.e1 = nn.Conv2d(squeeze, expand, 1)
        self.e3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.squeeze(x))
        return torch.cat([self.act(self.e1(x)), self.act(self.e3(x))], 1)


class SqueezeNetLike(nn.Module):
    """A conv classifier: the logits come from a 1×1 conv and a global pool (SqueezeNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True),
            Fire(16, 4, 8), Fire(16, 4, 8),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(16, CLASSES, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class DecoderNet(nn.Module):
    """A transposed conv upsampling, nearest interpolation, a sub and an adaptive max pool."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.mix = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = torch.relu(self.down(x))
        u = self.up(d) - F.interpolate(d, scale_factor=2.0, mode="nearest")
        return self.fc(torch.flatten(F.adaptive_max_pool2d(self.mix(u), 1), 1))


class SharedNet(nn.Module):
    """One conv and one ReLU module called twice (weights shared across calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        x = self.act(self.shared(x))
        x = self.act(self.shared(x))
        return self.fc(x.mean((2, 3)))


class ParametrizedNet(nn.Module):
    """weight_norm and spectral_norm (a computed weight), leaky ReLU in place and not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3, padding=1))
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.LeakyReLU(0.2)
        self.fc = nn.utils.parametrizations.spectral_norm(nn.Linear(8, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act(self.conv(x))))
        return self.fc(x.mean((2, 3)))


class ConvBN(nn.Conv2d):
    """A Conv2d subclass holding a module of its own: traced into (its norm is a layer of its own)."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(super().forward(x))


class OddCallsNet(nn.Module):
    """In-place and rarely seen calls: an even kernel padded "same" (PyTorch pads a copy), batch norm
    on running statistics called functionally, torch.relu_, Tensor.sigmoid_, torch.concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(3, 8, 3)
        self.w = nn.Parameter(torch.randn(8, 8, 4, 4) * 0.1)
        self.register_buffer("mean", torch.zeros(8))
        self.register_buffer("var", torch.ones(8))
        self.gamma = nn.Parameter(torch.ones(8))
        self.beta = nn.Parameter(torch.zeros(8))
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu_(self.stem(x))
        y = F.conv2d(x, self.w, padding="same")
        y = F.batch_norm(y, self.mean, self.var, self.gamma, self.beta, training=False)
        z = torch.concat([x, y.sigmoid_()], dim=1)
        return self.fc(z.mean((2, 3)))


class UpsampleNet(nn.Module):
    """A TinyTL-style lite branch: 2×2 average pooling, a grouped conv, group norm, bilinear
    interpolation back to the input's size (``size=`` from its shape) and an add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AvgPool2d(2, 2)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.norm = nn.GroupNorm(1, 8)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        lite = self.norm(self.conv(self.pool(x)))
        x = x + F.interpolate(lite, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


CORPUS = {
    "functional": FunctionalNet,
    "subclass": SubclassNet,
    "conv-zoo": ConvZooNet,
    "se": SENet,
    "layernorm": LayerNormNet,
    "squeezenet": SqueezeNetLike,
    "decoder": DecoderNet,
    "shared": SharedNet,
    "parametrized": ParametrizedNet,
    "odd-calls": OddCallsNet,
    "upsample": UpsampleNet,
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return CORPUS[name]()
