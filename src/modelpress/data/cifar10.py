"""CIFAR-10 from the official *binary* batches (never the pickle version).

Layout: a folder (or its ``cifar-10-batches-bin`` child) holding ``data_batch_1.bin`` ..
``data_batch_5.bin`` and ``test_batch.bin``; each record is 1 label byte + 3,072 pixel bytes
(R, G, B planes of 32x32). ``batches.meta.txt`` names the classes when present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

RECORD = 1 + 3 * 32 * 32
DEFAULT_LABELS = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
EXPECTED = "data_batch_1.bin .. data_batch_5.bin and test_batch.bin (the CIFAR-10 binary version)"


def _find_root(root: Path) -> Path:
    for cand in (root, root / "cifar-10-batches-bin"):
        if (cand / "test_batch.bin").is_file():
            return cand
    raise DataError(
        f"CIFAR-10 not found under {root}: expected {EXPECTED}; download and extract it there"
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch -> (N, 3, 32, 32) float32 in [0, 1], int64 labels."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(
            f"{path} is {raw.size} bytes, not a whole number of {RECORD}-byte CIFAR-10 records; "
            "the file is truncated or not the binary version"
        )
    rec = raw.reshape(-1, RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(
            f"{path} has label {labels.max()} (expected 0..9); not a CIFAR-10 binary batch"
        )
    images = rec[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return images, labels


def load_cifar10_raw(root: str | Path):
    """(train_x, train_y, test_x, test_y, labels) from the binary batches under ``root``."""
    base = _find_root(Path(root))
    train_files = sorted(base.glob("data_batch_*.bin"))
    if not train_files:
        raise DataError(f"no data_batch_*.bin under {base}: expected {EXPECTED}")
    parts = [read_batch(p) for p in train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_batch(base / "test_batch.bin")
    labels = DEFAULT_LABELS
    meta = base / "batches.meta.txt"
    if meta.is_file():
        names = [ln.strip() for ln in meta.read_text().splitlines() if ln.strip()]
        if len(names) == 10:
            labels = names
    return train_x, train_y, test_x, test_y, list(labels)
