"""Image preprocessing shared by the image data sets: split, resize, normalise, view.

Raw images come in as (N, C, H, W) floats in [0, 1] (uint8 pixels divided by 255). They are
resized, then normalised as ``(x - mean) / std`` per channel, like torchvision's ``Normalize``:
``mean`` / ``std`` are the user's own numbers where the data config gives them, else statistics
computed on the train split only. The same :func:`apply_preprocessing` turns raw images into model
inputs at train time and at deploy time, driven by the JSON-able dict stored with every checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .base import DataBundle, InputSpec, Split
from .normalise import convert_channels, per_channel

IMAGE_VIEWS = ("image", "sequence")


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of each class held out, seeded.

    Falls back to a plain seeded shuffle where the data is too small to hold out every class.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"split fraction must be in (0, 1), got {fraction}")
    idx = np.arange(len(y))
    n_held = int(np.ceil(fraction * len(y)))
    if n_held < 1 or n_held >= len(y):
        raise DataError(
            f"{len(y)} samples are too few to hold out {fraction:.0%} of them; add data"
        )
    counts = np.bincount(y)
    stratify = y if n_held >= np.count_nonzero(counts) and counts[counts > 0].min() >= 2 else None
    keep, held = train_test_split(idx, test_size=n_held, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(held)


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of (N, C, H, W) images to (N, C, size, size)."""
    import torch
    import torch.nn.functional as F

    if size <= 0:
        raise ConfigError(f"resize must be a positive image side, got {size}")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).numpy()


def apply_preprocessing(raw: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """Turn raw (N, C, H, W) images in [0, 1] into model inputs as described by ``pre``.

    ``pre`` keys: ``channels`` (1 or 3: grey / RGB conversion of other channel counts; absent:
    as given), ``resize`` (int or None), ``mean`` / ``std`` (per channel), ``view``
    (``image`` -> (N, C, H, W); ``sequence`` -> rows as time steps, (N, H, C*W)).
    """
    x = np.asarray(raw, dtype=np.float32)
    if pre.get("channels") in (1, 3):
        x = convert_channels(x, int(pre["channels"]))
    if pre.get("resize"):
        x = resize_images(x, int(pre["resize"]))
    mean = np.asarray(pre["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(pre["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    x = (x - mean) / std
    if pre.get("view", "image") == "sequence":
        n, c, h, w = x.shape
        x = x.transpose(0, 2, 1, 3).reshape(n, h, c * w)  # (N, T=H, F=C*W)
    return np.ascontiguousarray(x, dtype=np.float32)


def build_image_bundle(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray | None,
    test_y: np.ndarray | None,
    labels: list[str],
    *,
    view: str = "image",
    resize: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
) -> DataBundle:
    """Split (when no official test split exists), normalise, apply the view.

    ``mean`` / ``std``: the user's numbers (one, or one per channel), used instead of the train
    statistics and saved in ``preprocessing`` so a deployed model sees the same inputs.
    """
    if view not in IMAGE_VIEWS:
        raise ConfigError(f"view {view!r} is unknown for image data; expected one of {IMAGE_VIEWS}")
    if test_x is None:
        keep, held = stratified_split(train_y, test_fraction, seed)
        test_x, test_y = train_x[held], train_y[held]
        train_x, train_y = train_x[keep], train_y[keep]
    keep, held = stratified_split(train_y, val_fraction, seed + 1)
    val_x, val_y = train_x[held], train_y[held]
    train_x, train_y = train_x[keep], train_y[keep]

    channels = int(train_x.shape[1])
    if mean is not None and std is not None:
        mean_c, std_c = per_channel(mean, channels, "mean"), per_channel(std, channels, "std")
        source = "user"
    else:
        stats_src = resize_images(train_x, resize) if resize else train_x.astype(np.float32)
        mean_c = [float(v) for v in stats_src.mean(axis=(0, 2, 3))]
        std_c = [float(v) for v in stats_src.std(axis=(0, 2, 3)) + 1e-6]
        source = "train"
    lo, hi = float(train_x.min()), float(train_x.max())
    pre = {
        "dataset": name,
        "view": view,
        "resize": resize,
        "channels": channels,
        "mean": mean_c,
        "std": std_c,
        "normalisation": source,  # user: the data config's mean/std; train: train statistics
        "input_range": [0.0, 1.0] if lo >= 0.0 and hi <= 1.0 else [lo, hi],
        "layout": "NCHW",
    }
    splits = [
        Split(apply_preprocessing(x, pre), y)
        for x, y in ((train_x, train_y), (val_x, val_y), (test_x, test_y))
    ]
    sample = splits[0].x.shape[1:]
    spec = InputSpec(kind=view, shape=tuple(sample), dtype="float32")  # type: ignore[arg-type]
    return DataBundle(name, *splits, labels=labels, input_spec=spec, preprocessing=pre)
