"""The UCI optical digits set shipped with scikit-learn (1,797 8x8 images, 10 classes)."""

from __future__ import annotations

import numpy as np


def load_digits_raw() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N, 1, 8, 8) float32 images in [0, 1], int64 labels, class names. No download."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, d.target.astype(np.int64), [str(c) for c in d.target_names]
