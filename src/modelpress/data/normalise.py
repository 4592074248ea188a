"""The user's own preprocessing: mean / std checks and channel conversion.

Convention (as torchvision's ``ToTensor`` + ``Normalize``): pixels are first scaled to [0, 1]
(uint8 values divided by 255), then resized, then normalised as ``(x - mean) / std`` per channel.
Without a user ``mean`` / ``std`` the train split's own statistics are used.

>>> check_stats("std", [0.2, 0.25, 0.3])
(0.2, 0.25, 0.3)
>>> per_channel(0.5, 3, "mean")
[0.5, 0.5, 0.5]
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from ..errors import ConfigError

CHANNELS = (1, 3)
# ITU-R 601-2 luma, the weights Pillow uses for "L"
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_stats(what: str, value: object) -> float | tuple[float, ...]:
    """``value`` as one float or a tuple of floats (one per channel); ConfigError when it is not
    a finite number or a non-empty list of them, or (``what`` == "std") not > 0."""
    expected = f"{what} is one number or a list with one number per channel"
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values or not all(_number(v) for v in values):
        raise ConfigError(f"{expected}, got {value!r}; e.g. {what}: [0.5, 0.5, 0.5]")
    floats = [float(v) for v in values]  # type: ignore[arg-type]
    if not all(math.isfinite(v) for v in floats):
        raise ConfigError(f"{what} {value!r} is not finite; give finite numbers")
    if what == "std" and min(floats) <= 0:
        raise ConfigError(
            f"std {value!r} has a value <= 0; std divides the inputs, give positive numbers"
        )
    return tuple(floats) if isinstance(value, list | tuple) else floats[0]


def _length(value: float | tuple[float, ...]) -> int:
    return len(value) if isinstance(value, tuple) else 1


def check_user_stats(
    mean: object, std: object, channels: int | None
) -> tuple[float | tuple[float, ...] | None, float | tuple[float, ...] | None]:
    """Both or neither, each valid, their lengths compatible with each other and ``channels``."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        missing = "std" if std is None else "mean"
        raise ConfigError(
            f"mean and std go together: add {missing}: (one number or one per channel), "
            "or remove both to normalise with the train statistics"
        )
    m, s = check_stats("mean", mean), check_stats("std", std)
    lengths = {_length(m), _length(s)} - {1}
    if len(lengths) > 1:
        raise ConfigError(
            f"mean has {_length(m)} values but std has {_length(s)}; give one per channel to both"
        )
    if channels is not None and lengths and lengths != {channels}:
        raise ConfigError(
            f"mean/std have {lengths.pop()} values but channels is {channels}; "
            f"give {channels} values (one per channel) or a single number"
        )
    return m, s


def per_channel(value: float | tuple[float, ...] | list[float], c: int, what: str) -> list[float]:
    """``value`` spread over ``c`` channels: a single number repeats, a list must have ``c``."""
    values = list(value) if isinstance(value, list | tuple) else [value]
    if len(values) == 1:
        return [float(values[0])] * c
    if len(values) != c:
        raise ConfigError(
            f"{what} has {len(values)} values but the images have {c} channel(s); "
            f"give {c} values (one per channel) or a single number"
        )
    return [float(v) for v in values]


def convert_channels(x: np.ndarray, channels: int | None) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, ``channels``, H, W): grey repeats into RGB, RGB(A) becomes
    luma (alpha dropped), RGBA -> RGB drops alpha. ``None`` or the same count: unchanged."""
    c = x.shape[1]
    if channels is None or c == channels:
        return x
    if channels == 3 and c == 1:
        return np.repeat(x, 3, axis=1)
    if channels == 3 and c == 4:
        return np.ascontiguousarray(x[:, :3])
    if channels == 1 and c in (3, 4):
        grey = np.tensordot(x[:, :3].astype(np.float32), LUMA, axes=([1], [0]))
        return grey[:, None].astype(np.float32)
    raise ConfigError(
        f"cannot convert {c}-channel images to {channels} channel(s); "
        "channels: 1 (grey) or 3 (RGB) take 1-, 3- or 4-channel images"
    )
