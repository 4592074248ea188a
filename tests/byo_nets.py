"""A model defined only here, not in modelpress's registry: the bring-your-own-model tests."""

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8)
        return self.head(self.features(x).mean(dim=(2, 3)))


def build_model(width: int = 16, classes: int = 10) -> nn.Module:
    return TinyNet(width, classes)
