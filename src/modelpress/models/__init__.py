"""Model registry: plain factory functions and one ``create_model`` that knows them all.

>>> from modelpress.models import create_model
>>> from modelpress.data import InputSpec
>>> model = create_model("resnet8", input_spec=InputSpec("image", (1, 8, 8), "float32"), num_classes=10)
>>> type(model).__name__, model.config.channels
('ResNet8', (16, 32, 64))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from ..data.base import InputSpec
from ..errors import ConfigError
from .attention import SequenceTransformer, TransformerConfig, ViT, ViTConfig
from .base import PressModel, config_from_dict, config_to_dict, scale
from .cnn import MobileNet, MobileNetConfig, ResNet8, ResNet8Config
from .rnn import RNNClassifier, RNNConfig

__all__ = [
    "MODELS",
    "ModelEntry",
    "PressModel",
    "config_to_dict",
    "create_model",
    "model_from_config",
]


@dataclass(frozen=True)
class ModelEntry:
    family: str  # cnn | rnn | attention
    input_kinds: tuple[str, ...]  # which InputSpec kinds it accepts
    config_cls: type
    model_cls: type[PressModel]
    defaults: Callable[[InputSpec, float], dict[str, Any]]  # (input spec, width) -> config fields
    train_defaults: dict[str, Any] = field(
        default_factory=dict
    )  # TrainConfig overrides that suit it


def _resnet8(spec: InputSpec, w: float) -> dict[str, Any]:
    ch = tuple(scale(c, w) for c in (16, 32, 64))
    return {"in_channels": spec.shape[0], "channels": ch, "inner": ch}


def _mobilenet(spec: InputSpec, w: float) -> dict[str, Any]:
    return {
        "in_channels": spec.shape[0],
        "stem": scale(16, w),
        "channels": tuple(scale(c, w) for c in (32, 64, 64, 128, 128)),
    }


def _rnn(cell: str) -> Callable[[InputSpec, float], dict[str, Any]]:
    def defaults(spec: InputSpec, w: float) -> dict[str, Any]:
        out: dict[str, Any] = {"cell": cell, "hidden_size": scale(64, w)}
        if spec.kind == "tokens":
            out.update(vocab_size=0, embed_dim=scale(64, w))  # vocab_size comes from the data
        else:
            out["input_size"] = spec.shape[1]
        return out

    return defaults


def _vit(spec: InputSpec, w: float) -> dict[str, Any]:
    c, h, wd = spec.shape
    if h != wd:
        raise ConfigError(f"vit needs square images, got {h}x{wd}; resize the data (resize=...)")
    return {
        "in_channels": c,
        "image_size": h,
        "patch_size": (p := 2 if h <= 16 else 4),
        "patch_kernel": p + 1,
        "dim": scale(64, w),
        "heads": (4, 4),
        "head_dim": 16,
        "mlp_dims": (scale(128, w),) * 2,
    }


def _transformer(spec: InputSpec, w: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "max_len": spec.shape[0],
        "dim": scale(64, w),
        "heads": (4, 4),
        "head_dim": 16,
        "mlp_dims": (scale(128, w),) * 2,
    }
    if spec.kind == "sequence":
        out["input_size"] = spec.shape[1]
    return out


# Longer, hotter schedules for the models that measured better with them on digits (3 seeds).
_LONG = {"epochs": 60, "lr": 6e-3, "patience": 25}

MODELS: dict[str, ModelEntry] = {
    "resnet8": ModelEntry("cnn", ("image",), ResNet8Config, ResNet8, _resnet8),
    "mobilenet": ModelEntry("cnn", ("image",), MobileNetConfig, MobileNet, _mobilenet, _LONG),
    "gru": ModelEntry("rnn", ("sequence", "tokens"), RNNConfig, RNNClassifier, _rnn("gru"), _LONG),
    "lstm": ModelEntry(
        "rnn", ("sequence", "tokens"), RNNConfig, RNNClassifier, _rnn("lstm"), _LONG
    ),
    "vit": ModelEntry("attention", ("image",), ViTConfig, ViT, _vit, _LONG),
    "transformer": ModelEntry(
        "attention", ("sequence", "tokens"), TransformerConfig, SequenceTransformer, _transformer
    ),
}

DEFAULT_SPECS = {
    "image": InputSpec("image", (1, 8, 8), "float32"),
    "sequence": InputSpec("sequence", (8, 8), "float32"),
}


def get_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(
    name: str,
    *,
    input_spec: InputSpec | None = None,
    num_classes: int = 10,
    vocab_size: int | None = None,
    width: float = 1.0,
    **overrides: Any,
) -> nn.Module:
    """Build a fresh model of registry ``name`` for inputs like ``input_spec``.

    ``width`` scales every default channel / hidden / embedding width (teacher-student pairs of
    one family); ``overrides`` set config fields directly and win over the defaults.
    """
    entry = get_entry(name)
    spec = input_spec or DEFAULT_SPECS[entry.input_kinds[0]]
    if spec.kind not in entry.input_kinds:
        raise ConfigError(
            f"model {name!r} takes {' or '.join(entry.input_kinds)} input, but the data gives "
            f"{spec.kind!r}; use view={entry.input_kinds[0]!r} or pick another model"
        )
    if not width > 0:
        raise ConfigError(f"width must be > 0, got {width}")
    values = {**entry.defaults(spec, width), "num_classes": num_classes}
    if spec.kind == "tokens":
        if not vocab_size:
            raise ConfigError(
                f"model {name!r} on token input needs vocab_size (from the data's vocabulary)"
            )
        values["vocab_size"] = vocab_size
    valid = {f.name for f in fields(entry.config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for model {name!r}; valid: {sorted(valid)}")
    values.update(overrides)
    return model_from_config(name, values)


def model_from_config(name: str, config: dict[str, Any] | Any) -> PressModel:
    """Rebuild a registry model from its config (a dict from JSON or the config dataclass)."""
    entry = get_entry(name)
    cfg = (
        config
        if isinstance(config, entry.config_cls)
        else config_from_dict(entry.config_cls, config)
    )
    model = entry.model_cls(cfg)
    model.registry_name = name
    return model
