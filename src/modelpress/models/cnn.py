"""Convolutional baselines: ``resnet8`` (the MLPerf Tiny image-classification shape) and
``mobilenet`` (depthwise-separable blocks, edge style)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import ConfigError
from .base import PressModel, check_dropout, check_positive


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


@dataclass(frozen=True)
class ResNet8Config:
    in_channels: int = 1
    num_classes: int = 10
    channels: tuple[int, int, int] = (16, 32, 64)  # residual-stream width of each stage
    inner: tuple[int, int, int] = (16, 32, 64)  # width of the first conv inside each block
    strides: tuple[int, int, int] = (1, 2, 2)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "in_channels", "num_classes", "channels", "inner", "strides")
        if not len(self.channels) == len(self.inner) == len(self.strides) == 3:
            raise ConfigError("ResNet8Config: channels, inner and strides need 3 entries each")
        if self.strides[0] != 1:
            raise ConfigError(
                "ResNet8Config: the first stage keeps an identity shortcut, stride must be 1"
            )
        check_dropout(self)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, inner: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(cin, inner, 3, stride)
        self.conv2 = conv_bn(inner, cout, 3, 1)
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + self.shortcut(x))


class ResNet8(PressModel):
    family = "cnn"

    def __init__(self, config: ResNet8Config):
        super().__init__(config)
        c = config
        self.stem = conv_bn(c.in_channels, c.channels[0], 3, 1)
        cins = (c.channels[0], c.channels[0], c.channels[1])
        self.blocks = nn.Sequential(
            *(
                BasicBlock(cin, inner, cout, s)
                for cin, inner, cout, s in zip(cins, c.inner, c.channels, c.strides)
            )
        )
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(c.dropout)
        self.fc = nn.Linear(c.channels[2], c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        x = self.blocks(self.act(self.stem(x)))
        return self.fc(self.dropout(self.pool(x).flatten(1)))  # (B, classes)

    def current_config(self) -> ResNet8Config:
        blocks = list(self.blocks)
        return replace(
            self.config,
            in_channels=self.stem[0].in_channels,
            num_classes=self.fc.out_features,
            channels=tuple(b.conv2[0].out_channels for b in blocks),
            inner=tuple(b.conv1[0].out_channels for b in blocks),
        )


@dataclass(frozen=True)
class MobileNetConfig:
    in_channels: int = 1
    num_classes: int = 10
    stem: int = 16
    channels: tuple[int, ...] = (32, 64, 64, 128, 128)  # pointwise output width per block
    strides: tuple[int, ...] = (1, 2, 1, 2, 1)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "in_channels", "num_classes", "stem", "channels", "strides")
        if len(self.channels) != len(self.strides):
            raise ConfigError("MobileNetConfig: channels and strides need the same length")
        check_dropout(self)


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.depthwise = conv_bn(cin, cin, 3, stride, groups=cin)
        self.pointwise = conv_bn(cin, cout, 1, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.pointwise(self.act(self.depthwise(x))))


class MobileNet(PressModel):
    family = "cnn"

    def __init__(self, config: MobileNetConfig):
        super().__init__(config)
        c = config
        self.stem = conv_bn(c.in_channels, c.stem, 3, 1)
        cins = (c.stem, *c.channels[:-1])
        self.blocks = nn.Sequential(
            *(DepthwiseSeparable(cin, cout, s) for cin, cout, s in zip(cins, c.channels, c.strides))
        )
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(c.dropout)
        self.fc = nn.Linear(c.channels[-1], c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        x = self.blocks(self.act(self.stem(x)))
        return self.fc(self.dropout(self.pool(x).flatten(1)))  # (B, classes)

    def current_config(self) -> MobileNetConfig:
        return replace(
            self.config,
            in_channels=self.stem[0].in_channels,
            num_classes=self.fc.out_features,
            stem=self.stem[0].out_channels,
            channels=tuple(b.pointwise[0].out_channels for b in self.blocks),
        )
