"""Per-layer quantization sensitivity: quantize one layer at a time, measure what breaks.

Each weighted layer (conv, linear, GRU/LSTM, embedding) in turn gets int8 fake quantization of
its weights (per output channel, symmetric) and of its input activations (per tensor, ranges
calibrated on training data), while every other layer stays float. The accuracy drop and the
output divergence (KL of the float model's predictions to the quantized one's) rank the layers;
the top of the ranking names the layers best kept in float (``QATConfig(keep_float=...)``).
Not analysed: attention matmuls, LayerNorm and recurrent hidden states, which have no weights
of their own to quantize here.

>>> from modelpress.compress.sensitivity import sensitivity              # doctest: +SKIP
>>> report = sensitivity(artifact, data)
>>> report.keep_float, report.layers[0].drop
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..artifact import Artifact
from ..compute import check_device_spelling, describe_device, module_device, resolve_device
from ..data.base import DataBundle
from ..errors import ConfigError
from ..metrics import accuracy
from ..train import predict_logits

LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.RNNBase, nn.Embedding)
SPLITS = ("val", "test")


@dataclass(frozen=True)
class SensitivityConfig:
    split: str = "val"  # where accuracy is measured (val: a choice, not a reported number)
    calibration: int = 256  # training samples that set the activation ranges
    activations: str = "symmetric"  # int8 with zero point 0 | asymmetric: uint8
    top_k: int = 3  # how many layers to name as best kept in float
    seed: int = 0
    device: str = "auto"  # where the model runs: auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"SensitivityConfig.split {self.split!r} is unknown; use {SPLITS}")
        if self.activations not in ("symmetric", "asymmetric"):
            raise ConfigError(
                f"SensitivityConfig.activations {self.activations!r} is unknown; "
                "use 'symmetric' or 'asymmetric'"
            )
        if self.calibration < 1 or self.top_k < 0:
            raise ConfigError("SensitivityConfig: calibration must be >= 1 and top_k >= 0")
        check_device_spelling(self.device)


@dataclass
class LayerSensitivity:
    name: str
    kind: str  # module type
    accuracy: float  # with only this layer quantized
    drop: float  # base accuracy - accuracy, in percentage points
    divergence: float  # mean KL(float || quantized) of the predicted distributions


@dataclass
class SensitivityReport:
    split: str
    base_accuracy: float
    layers: list[LayerSensitivity]  # most sensitive first
    keep_float: list[str] = field(default_factory=list)
    device: str = "cpu"  # where it was measured, in words

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        rows = [
            f"| {i} | `{r.name}` | {r.kind} | {100 * r.accuracy:.2f} | {r.drop:+.2f} | {r.divergence:.2e} |"
            for i, r in enumerate(self.layers, 1)
        ]
        head = [
            f"Base {self.split} accuracy {100 * self.base_accuracy:.2f} %. "
            f"Best kept in float: {', '.join(self.keep_float) or 'none'}.",
            "",
            "| rank | layer | type | accuracy % | drop (points) | KL |",
            "|---:|---|---|---:|---:|---:|",
        ]
        return "\n".join(head + rows)


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 per output channel (dim 0): round to 255 levels and back to float."""
    flat = w.reshape(w.shape[0], -1)
    scale = (flat.abs().amax(dim=1, keepdim=True) / 127).clamp_min(1e-12)
    return (torch.round(flat / scale).clamp(-127, 127) * scale).reshape(w.shape)


def fake_quant_activation(x: torch.Tensor, lo: float, hi: float, symmetric: bool) -> torch.Tensor:
    """Per-tensor int8 (symmetric) or uint8 (asymmetric) over the calibrated range [lo, hi]."""
    if symmetric:
        scale = max(abs(lo), abs(hi), 1e-12) / 127
        return torch.round(x / scale).clamp(-128, 127) * scale
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255
    zero = round(-lo / scale)
    return (torch.round(x / scale + zero).clamp(0, 255) - zero) * scale


def quantizable_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and isinstance(m, LAYER_TYPES)]


def _input_ranges(
    model: nn.Module, names: list[str], x: np.ndarray
) -> dict[str, tuple[float, float]]:
    ranges: dict[str, tuple[float, float]] = {}

    def hook(name: str):
        def record(mod: nn.Module, args: tuple) -> None:
            t = args[0]
            if t.is_floating_point():
                lo, hi = ranges.get(name, (float("inf"), float("-inf")))
                ranges[name] = (min(lo, t.min().item()), max(hi, t.max().item()))

        return record

    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        predict_logits(model, x)
    finally:
        for h in handles:
            h.remove()
    return ranges


@contextmanager
def quantized_layer(
    module: nn.Module, in_range: tuple[float, float] | None, symmetric: bool = True
) -> Iterator[None]:
    """Within the block, ``module``'s weights and float input are int8 fake-quantized."""
    saved = {k: p.detach().clone() for k, p in module.named_parameters(recurse=False)}
    handle = None
    with torch.no_grad():
        for key, p in module.named_parameters(recurse=False):
            if key.startswith("weight"):
                p.copy_(fake_quant_weight(p))
    if in_range is not None:

        def quant_input(mod: nn.Module, args: tuple) -> tuple:
            return (fake_quant_activation(args[0], *in_range, symmetric), *args[1:])

        handle = module.register_forward_pre_hook(quant_input)
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()
        with torch.no_grad():
            for key, p in module.named_parameters(recurse=False):
                p.copy_(saved[key])
        if isinstance(module, nn.RNNBase):
            module.flatten_parameters()


def _kl(ref: np.ndarray, out: np.ndarray) -> float:
    p = F.log_softmax(torch.from_numpy(ref), dim=-1)
    q = F.log_softmax(torch.from_numpy(out), dim=-1)
    return F.kl_div(q, p, log_target=True, reduction="batchmean").item()


def sensitivity(
    source: Artifact | nn.Module, data: DataBundle, cfg: SensitivityConfig | None = None
) -> SensitivityReport:
    """Rank the model's layers by the damage int8 quantization of each one alone does.

    The model runs on ``cfg.device`` (``auto``: CUDA when torch sees a GPU); a model given in
    comes back where it was.

    >>> report = sensitivity(artifact, data, SensitivityConfig(top_k=2))  # doctest: +SKIP
    >>> print(report.to_markdown())
    """
    from .base import load_model

    cfg = cfg or SensitivityConfig()
    model = load_model(source)[0] if isinstance(source, Artifact) else source
    names = quantizable_layers(model)
    if not names:
        raise ConfigError(
            f"{type(model).__name__} has no conv, linear, recurrent or embedding layer to analyse"
        )
    device, home = resolve_device(cfg.device), module_device(model)
    model.to(device)
    try:
        report = _rank_layers(model, names, data, cfg)
    finally:
        model.to(home)  # a model given in comes back where it was
    report.device = describe_device(device)
    return report


def _rank_layers(
    model: nn.Module, names: list[str], data: DataBundle, cfg: SensitivityConfig
) -> SensitivityReport:
    """:func:`sensitivity` with ``model`` on its device already."""
    split = getattr(data, cfg.split)
    ranges = _input_ranges(model, names, data.calibration(cfg.calibration, seed=cfg.seed))
    ref = predict_logits(model, split.x)
    base = accuracy(ref, split.y)
    modules = dict(model.named_modules())
    rows = []
    for name in names:
        with quantized_layer(modules[name], ranges.get(name), cfg.activations == "symmetric"):
            out = predict_logits(model, split.x)
        acc = accuracy(out, split.y)
        rows.append(
            LayerSensitivity(
                name, type(modules[name]).__name__, acc, 100 * (base - acc), _kl(ref, out)
            )
        )
    rows.sort(key=lambda r: (r.drop, r.divergence), reverse=True)
    return SensitivityReport(cfg.split, base, rows, [r.name for r in rows[: cfg.top_k]])
