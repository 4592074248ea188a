"""MNIST and Fashion-MNIST from IDX files (raw or .gz), with magic number and count checks."""

from __future__ import annotations

import gzip
import math
import zlib
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


def _where(path: Path, offset: int) -> str:
    inside = " of the decompressed data" if path.suffix == ".gz" else ""
    return f"{path}: byte offset {offset}{inside}"


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (optionally gzipped) into an array, checking magic and sizes."""
    path = Path(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(
            f"cannot read IDX file {path}: {exc}; the file is truncated or corrupt"
        ) from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataError(
            f"{_where(path, 0)}: not an IDX file: bad magic number {data[:4].hex()} "
            "(expected 00 00, a type byte, the number of dimensions)"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(
            f"{_where(path, 3)}: IDX header truncated: {ndim} dimension(s) need {header} bytes, "
            f"the file has {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{path}: header says {dims} ({expected} bytes of data) but the file holds "
            f"{len(data) - header}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _first_bad(bad: np.ndarray, path: Path, arr: np.ndarray, what: str) -> None:
    """DataError naming the byte offset of the first True of ``bad`` (one flag per sample)."""
    idx = np.flatnonzero(bad)
    if idx.size:
        i = int(idx[0])
        offset = 4 + 4 * arr.ndim + i * arr[0].nbytes
        raise DataError(f"{_where(path, offset)} (sample {i}): {what}")


def _check_split(images: np.ndarray, labels: np.ndarray, paths: tuple[Path, Path], n: int) -> None:
    """Shapes, counts, label range and finite pixels of one split (image file, label file)."""
    ipath, lpath = paths
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(
            f"{ipath} / {lpath} have shapes {images.shape} / {labels.shape}; expected (N, H, W) "
            "images and (N,) labels"
        )
    if min(images.shape) == 0:
        raise DataError(f"{ipath} holds no images (shape {images.shape}); expected N, H, W >= 1")
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels in {ipath} / {lpath}")
    if labels.dtype.kind not in "iu":
        raise DataError(
            f"{_where(lpath, 2)}: labels are {labels.dtype.name} (the type byte); expected "
            "integer class ids (type 0x08, unsigned byte)"
        )
    _first_bad((labels < 0) | (labels >= n), lpath, labels, f"a label outside 0..{n - 1}")
    if images.dtype.kind == "f":
        flat = images.reshape(len(images), -1)
        _first_bad(~np.isfinite(flat).all(axis=1), ipath, images, "a pixel that is not finite")


def load_idx_raw(root: str | Path, fashion: bool = False):
    """(train_x, train_y, test_x, test_y, labels) with images as (N, 1, H, W) in [0, 1]."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist: put the MNIST-style IDX files there")
    paths = {key: _locate(root, stem) for key, stem in FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items()}
    names = FASHION_LABELS if fashion else [str(i) for i in range(10)]
    out = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        _check_split(images, labels, (paths[f"{split}_images"], paths[f"{split}_labels"]), 10)
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        out += [images.astype(np.float32)[:, None] / scale, labels.astype(np.int64)]
    return (*out, names)
