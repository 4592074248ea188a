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


class _Returns(nn.Module):
    """TinyNet whose forward returns its logits wrapped the way ``form`` says."""

    def __init__(self, form: str, width: int = 8):
        super().__init__()
        self.form, self.net = form, TinyNet(width)

    def forward(self, x: torch.Tensor):
        logits = self.net(x)
        if self.form == "tuple":
            return logits, x.mean()
        if self.form == "list":
            return [logits]
        if self.form == "dict":
            return {"logits": logits, "features": x.flatten(1)}
        if self.form == "scores":  # a dict without "logits": the recipe names the key
            return {"scores": logits, "aux": logits.detach() * 0}
        if self.form == "model-output":
            from transformers.modeling_outputs import SequenceClassifierOutput

            return SequenceClassifierOutput(logits=logits)
        return logits


def build_returning(form: str = "tensor", width: int = 8) -> nn.Module:
    torch.manual_seed(0)  # the same weights whatever the form
    return _Returns(form, width)


def build_broken(width: int = 8) -> nn.Module:
    raise RuntimeError("this factory always fails")
