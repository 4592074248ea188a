"""What every registered model shares: a frozen config dataclass and a way to read it back.

``current_config()`` re-derives the config from the module's actual tensor shapes, so a model
whose layers were pruned to new widths is saved and rebuilt from plain config + weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import nn

from ..errors import ConfigError


def check_positive(cfg: Any, *names: str) -> None:
    """Raise ConfigError unless every named int (or every int of a named tuple) is positive."""
    for name in names:
        value = getattr(cfg, name)
        values = value if isinstance(value, tuple) else (value,)
        if not values or any(not isinstance(v, int) or v <= 0 for v in values):
            raise ConfigError(
                f"{type(cfg).__name__}.{name} must be positive integer(s), got {value!r}"
            )


def check_dropout(cfg: Any) -> None:
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"{type(cfg).__name__}.dropout must be in [0, 1), got {cfg.dropout}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build config ``cls`` from a JSON dict; unknown keys fail with the valid ones listed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} must be a mapping, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s) {unknown}; valid keys: {sorted(fields)}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except TypeError as exc:
        raise ConfigError(f"invalid {cls.__name__}: {exc}") from exc


def scale(channels: int, width: float) -> int:
    """Apply a width multiplier to a channel count (at least 1)."""
    return max(1, int(round(channels * width)))


class PressModel(nn.Module):
    """Base of the registry's models: remembers its config and can re-derive it from shapes."""

    family: ClassVar[str]
    registry_name: str

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    def current_config(self) -> Any:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError
