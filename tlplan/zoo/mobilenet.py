"""MobileNetV2, MobileNetV3 (large/small) with torchvision's structure, and ProxylessNAS-Mobile.

Residual adds are out of place (``out = x + block(x)``) so every block output is a fresh tensor in
the fx graph; numerically identical to the published definitions.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "Conv2dNormActivation",
    "InvertedResidual",
    "MobileNetV2",
    "SqueezeExcitation",
    "InvertedResidualV3",
    "MobileNetV3",
    "ProxylessNASMobile",
    "MOBILENET_V2_WIDTHS",
    "mobilenet_v2",
    "mobilenet_v2_140",
    "mobilenet_v2_width",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "proxylessnas_mobile",
]


def _make_divisible(v: float, divisor: int, min_value: Optional[int] = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor``, never going more than 10% below ``v``."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """Conv2d (``bias`` only when there is no norm) → norm → activation, as torchvision's."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
        activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU,
        dilation: int = 1,
        inplace: bool = True,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        layers: List[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=groups,
                bias=norm_layer is None,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer(inplace=inplace))
        super().__init__(*layers)
        self.out_channels = out_channels


def _init_weights(model: nn.Module) -> None:
    """torchvision's MobileNet initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1×1 expand] → 3×3 depthwise → 1×1 linear projection (+ identity)."""

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride should be 1 or 2, got {stride}")
        self.stride = stride
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(
                Conv2dNormActivation(
                    inp, hidden_dim, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6
                )
            )
        layers.extend(
            [
                Conv2dNormActivation(
                    hidden_dim,
                    hidden_dim,
                    stride=stride,
                    groups=hidden_dim,
                    norm_layer=norm_layer,
                    activation_layer=nn.ReLU6,
                ),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                norm_layer(oup),
            ]
        )
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision-compatible MobileNetV2: ``features.0`` stem, ``features.1..17`` inverted
    residuals, ``features.18`` the 1×1 head conv, ``classifier`` = Dropout(0.2) + Linear."""

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        round_nearest: int = 8,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d
        input_channel = 32
        last_channel = 1280
        # t (expansion), c (channels), n (repeats), s (stride of the first repeat)
        settings = [
            [1, 16, 1, 1],
            [6, 24, 2, 2],
            [6, 32, 3, 2],
            [6, 64, 4, 2],
            [6, 96, 3, 1],
            [6, 160, 3, 2],
            [6, 320, 1, 1],
        ]
        input_channel = _make_divisible(input_channel * width_mult, round_nearest)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        features: List[nn.Module] = [
            Conv2dNormActivation(
                3, input_channel, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU6
            )
        ]
        for t, c, n, s in settings:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                stride = s if i == 0 else 1
                features.append(
                    InvertedResidual(input_channel, output_channel, stride, t, norm_layer)
                )
                input_channel = output_channel
        features.append(
            Conv2dNormActivation(
                input_channel,
                self.last_channel,
                kernel_size=1,
                norm_layer=norm_layer,
                activation_layer=nn.ReLU6,
            )
        )
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes)
        )
        _init_weights(self)

        self.tlplan_blocks: tuple[str, ...] = tuple(
            f"features.{i}" for i in range(1, len(self.features))
        )
        self.tlplan_classifier: str = "classifier.1"

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 (3,504,872 parameters at width 1.0 and 1000 classes); any ``width_mult``."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult)


#: the width multipliers the MobileNetV2 paper and its official checkpoints publish at 224 (the
#: zoo names ``mobilenet_v2-<width>``), each as it is spelled in a name
MOBILENET_V2_WIDTHS: dict[float, str] = {
    0.35: "0.35", 0.5: "0.5", 0.75: "0.75", 1.0: "1.0", 1.3: "1.3", 1.4: "1.4",
}


def mobilenet_v2_width(width: float) -> Callable[..., MobileNetV2]:
    """The factory of ``mobilenet_v2-<width>``: MobileNetV2 at a published ``width``, taking
    only ``num_classes`` (the width is the name's, so a ``width_mult`` argument is refused)."""
    if width not in MOBILENET_V2_WIDTHS:
        raise ValueError(
            f"MobileNetV2 width {width!r} is not a published one "
            f"({', '.join(MOBILENET_V2_WIDTHS.values())})"
        )

    def factory(num_classes: int = 1000) -> MobileNetV2:
        return MobileNetV2(num_classes=num_classes, width_mult=width)

    spelled = MOBILENET_V2_WIDTHS[width]
    factory.__name__ = factory.__qualname__ = f"mobilenet_v2_{round(width * 100):03d}"
    factory.__doc__ = f"MobileNetV2 at width {spelled} (``mobilenet_v2-{spelled}``)."
    return factory


#: MobileNetV2-1.4, TinyTL's Table 3 network (6,108,776 parameters at 1000 classes)
mobilenet_v2_140 = mobilenet_v2_width(1.4)


# ----------------------------------------------------------------------------------- MobileNetV3


class SqueezeExcitation(nn.Module):
    """SE as torchvision's: avgpool → fc1 (1×1, bias) → ReLU → fc2 (1×1, bias) → Hardsigmoid,
    then ``scale * input``."""

    def __init__(
        self,
        input_channels: int,
        squeeze_channels: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x: Tensor) -> Tensor:
        scale = self.avgpool(x)
        scale = self.activation(self.fc1(scale))
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self._scale(x) * x


@dataclass(frozen=True)
class _V3Config:
    input_channels: int
    kernel: int
    expanded_channels: int
    out_channels: int
    use_se: bool
    use_hs: bool
    stride: int


class InvertedResidualV3(nn.Module):
    """MobileNetV3 block: [1×1 expand] → k×k depthwise → [SE] → 1×1 linear projection (+ id)."""

    def __init__(self, cnf: _V3Config, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        if cnf.stride not in (1, 2):
            raise ValueError("illegal stride value")
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        activation_layer = nn.Hardswish if cnf.use_hs else nn.ReLU
        layers: List[nn.Module] = []
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(
                Conv2dNormActivation(
                    cnf.input_channels,
                    cnf.expanded_channels,
                    kernel_size=1,
                    norm_layer=norm_layer,
                    activation_layer=activation_layer,
                )
            )
        layers.append(
            Conv2dNormActivation(
                cnf.expanded_channels,
                cnf.expanded_channels,
                kernel_size=cnf.kernel,
                stride=cnf.stride,
                groups=cnf.expanded_channels,
                norm_layer=norm_layer,
                activation_layer=activation_layer,
            )
        )
        if cnf.use_se:
            squeeze_channels = _make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(SqueezeExcitation(cnf.expanded_channels, squeeze_channels))
        layers.append(
            Conv2dNormActivation(
                cnf.expanded_channels,
                cnf.out_channels,
                kernel_size=1,
                norm_layer=norm_layer,
                activation_layer=None,
            )
        )
        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels
        self._is_cn = cnf.stride > 1

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return self.block(x) + x
        return self.block(x)


# (input, kernel, expanded, out, SE, hard-swish, stride), from the MobileNetV3 paper's tables 1-2
_V3_LARGE = [
    (16, 3, 16, 16, False, False, 1),
    (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1),
    (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2),
    (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1),
    (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2),
    (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
]
_V3_SMALL = [
    (16, 3, 16, 16, True, False, 2),
    (16, 3, 72, 24, False, False, 2),
    (24, 3, 88, 24, False, False, 1),
    (24, 5, 96, 40, True, True, 2),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 240, 40, True, True, 1),
    (40, 5, 120, 48, True, True, 1),
    (48, 5, 144, 48, True, True, 1),
    (48, 5, 288, 96, True, True, 2),
    (96, 5, 576, 96, True, True, 1),
    (96, 5, 576, 96, True, True, 1),
]


class MobileNetV3(nn.Module):
    """torchvision-compatible MobileNetV3: ``features.0`` stem, inverted residuals, the 1×1 head
    conv as the last ``features.N``; ``classifier`` = Linear → Hardswish → Dropout → Linear."""

    def __init__(
        self,
        setting: Sequence[tuple],
        last_channel: int,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        configs = [_V3Config(*row) for row in setting]
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        first_out = configs[0].input_channels
        layers: List[nn.Module] = [
            Conv2dNormActivation(
                3, first_out, stride=2, norm_layer=norm_layer, activation_layer=nn.Hardswish
            )
        ]
        layers.extend(InvertedResidualV3(cnf, norm_layer) for cnf in configs)
        last_in = configs[-1].out_channels
        last_out = 6 * last_in
        layers.append(
            Conv2dNormActivation(
                last_in,
                last_out,
                kernel_size=1,
                norm_layer=norm_layer,
                activation_layer=nn.Hardswish,
            )
        )
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_out, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )
        _init_weights(self)

        self.tlplan_blocks: tuple[str, ...] = tuple(
            f"features.{i}" for i in range(1, len(self.features))
        )
        self.tlplan_classifier: str = "classifier.3"

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def mobilenet_v3_large(num_classes: int = 1000) -> MobileNetV3:
    """MobileNetV3-Large (5,483,032 parameters at 1000 classes)."""
    return MobileNetV3(_V3_LARGE, last_channel=1280, num_classes=num_classes)


def mobilenet_v3_small(num_classes: int = 1000) -> MobileNetV3:
    """MobileNetV3-Small (2,542,856 parameters at 1000 classes)."""
    return MobileNetV3(_V3_SMALL, last_channel=1024, num_classes=num_classes)


# ----------------------------------------------------------------------------- ProxylessNAS-Mobile


def _conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    act: bool = True,
) -> nn.Sequential:
    """``conv`` (no bias) → ``bn`` → [``act`` = ReLU6], with named children as in ProxylessNAS."""
    layers: "OrderedDict[str, nn.Module]" = OrderedDict(
        conv=nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            (kernel_size - 1) // 2,
            groups=groups,
            bias=False,
        ),
        bn=nn.BatchNorm2d(out_channels, eps=1e-3),
    )
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """ProxylessNAS mobile inverted bottleneck: [``inverted_bottleneck`` 1×1] → ``depth_conv``
    k×k → ``point_linear`` 1×1 (no activation), identity residual when the shapes match."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        mid = round(in_channels * expand_ratio)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.inverted_bottleneck = (
            _conv_bn_act(in_channels, mid, 1) if expand_ratio != 1 else None
        )
        self.depth_conv = _conv_bn_act(mid, mid, kernel_size, stride, groups=mid)
        self.point_linear = _conv_bn_act(mid, out_channels, 1, act=False)

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.inverted_bottleneck is not None:
            out = self.inverted_bottleneck(out)
        out = self.point_linear(self.depth_conv(out))
        if self.use_res_connect:
            out = out + x
        return out


# (out channels, kernel, expansion, stride): the ProxylessNAS "mobile" cell sequence. The
# tiny-training proxyless-w0.3 table is this sequence at width 0.3.
_PROXYLESS_MOBILE = [
    (16, 3, 1, 1),
    (32, 5, 3, 2),
    (32, 3, 3, 1),
    (40, 7, 3, 2),
    (40, 3, 3, 1),
    (40, 5, 3, 1),
    (40, 5, 3, 1),
    (80, 7, 6, 2),
    (80, 5, 3, 1),
    (80, 5, 3, 1),
    (80, 5, 3, 1),
    (96, 5, 6, 1),
    (96, 5, 3, 1),
    (96, 5, 3, 1),
    (96, 5, 3, 1),
    (192, 7, 6, 2),
    (192, 7, 6, 1),
    (192, 7, 3, 1),
    (192, 7, 3, 1),
    (320, 7, 6, 1),
]


class ProxylessNASMobile(nn.Module):
    """ProxylessNAS-Mobile (the TinyTL backbone): ``first_conv`` → ``blocks.0..19`` →
    ``feature_mix_layer`` (1×1 320→1280) → global average pool → ``classifier`` (Linear)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.first_conv = _conv_bn_act(3, 32, 3, stride=2)
        blocks: List[nn.Module] = []
        in_channels = 32
        for out_channels, k, e, s in _PROXYLESS_MOBILE:
            blocks.append(MBConv(in_channels, out_channels, k, s, e))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.feature_mix_layer = _conv_bn_act(in_channels, 1280, 1)
        self.global_avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)
        _init_weights(self)

        self.tlplan_blocks: tuple[str, ...] = tuple(
            f"blocks.{i}" for i in range(len(self.blocks))
        ) + ("feature_mix_layer",)
        self.tlplan_classifier: str = "classifier"

    def forward(self, x: Tensor) -> Tensor:
        x = self.first_conv(x)
        x = self.blocks(x)
        x = self.feature_mix_layer(x)
        x = self.global_avg_pooling(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def proxylessnas_mobile(num_classes: int = 1000) -> ProxylessNASMobile:
    """ProxylessNAS-Mobile at width 1.0 (≈4.1 M parameters, ≈0.32 G MACs at 224)."""
    return ProxylessNASMobile(num_classes=num_classes)
