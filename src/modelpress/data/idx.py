"""MNIST and Fashion-MNIST from IDX files (raw or .gz), with magic number and count checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type byte -> numpy big-endian dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) into an array, checking magic and sizes."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(f"{path} is not an IDX file: bad magic number {data[:4].hex()}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: IDX header truncated")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: header says {dims} ({expected} bytes of data) but the file holds "
            f"{len(data) - header}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _locate(root: Path, stem: str) -> Path:
    for name in (
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ):
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"missing {root / stem}[.gz]: expected the four IDX files "
        f"({', '.join(FILES.values())}, raw or .gz) in {root}"
    )


def load_idx_raw(root: str | Path, fashion: bool = False):
    """(train_x, train_y, test_x, test_y, labels) with images as (N, 1, H, W) in [0, 1]."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist: put the MNIST-style IDX files there")
    arrays = {key: read_idx(_locate(root, stem)) for key, stem in FILES.items()}
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(
                f"{split} IDX files have shapes {images.shape}/{labels.shape}; expected (N,H,W)/(N,)"
            )
        if len(images) != len(labels):
            raise DataError(f"{split}: {len(images)} images but {len(labels)} labels in {root}")
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        out += [images.astype(np.float32)[:, None] / scale, labels.astype(np.int64)]
    labels = FASHION_LABELS if fashion else [str(i) for i in range(10)]
    n_cls = int(max(out[1].max(), out[3].max())) + 1
    if n_cls > len(labels):
        raise DataError(f"labels go up to {n_cls - 1} in {root}; expected 0..{len(labels) - 1}")
    return (*out, labels)
