"""Images from class folders, read with Pillow: ``root/<class>/*.png|jpg|jpeg|bmp``, or
``root/train/<class>/...`` plus optionally ``root/test/<class>/...`` (the official test split).

Class names are the folder names, sorted. Grey files (and colour files whose three channels are
equal) read as one channel, others as RGB (alpha dropped); the data set is RGB when any image is
colour, else grey, unless ``channels`` says 1 or 3. Images of different sizes need ``resize``
(bilinear, the same resize a deployed model's preprocessing applies).

>>> from modelpress.data import load_dataset
>>> load_dataset("image-folder", root="photos/", resize=32)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .images import resize_images
from .normalise import convert_channels

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
GREY_MODES = ("1", "L", "LA")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I")
LAYOUT = "root/<class>/*.png|jpg|jpeg|bmp (or root/train/<class>/... and root/test/<class>/...)"


def _folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(split: Path) -> dict[str, list[Path]]:
    """Class name -> its image files, for one split folder; DataError when one is missing."""
    entries = [p for p in split.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DataError(f"{split} is empty; expected {LAYOUT}")
    classes = _folders(split)
    if not classes:
        raise DataError(
            f"{split} has no class sub-folders; expected {LAYOUT}: put each class's images in "
            "a folder named after the class"
        )
    files = {}
    for folder in classes:
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS
        )
        if not images:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(EXTENSIONS)}); "
                "add images or remove the folder"
            )
        files[folder.name] = images
    return files


def _read_image(path: Path) -> np.ndarray:
    """(C, H, W) float32 in [0, 1], C = 1 for grey content, 3 for colour."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode in SIXTEEN_BIT:
                arr = np.asarray(img, dtype=np.float32)
                if arr.min() < 0 or arr.max() > 65535:
                    raise DataError(f"{path} has pixel values outside 0..65535; save 8 or 16 bit")
                return arr[None] / 65535.0
            if img.mode in GREY_MODES:
                return np.asarray(img.convert("L"), dtype=np.float32)[None] / 255.0
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    except DataError:
        raise
    except Exception as exc:  # any decoder failure: truncated, not an image, too large, ...
        raise DataError(f"cannot read image {path}: {exc}; replace or delete the file") from exc
    grey = (rgb[0] == rgb[1]).all() and (rgb[1] == rgb[2]).all()
    return rgb[:1] if grey else rgb


def _stack(images: list[np.ndarray], files: list[Path], resize: int | None) -> np.ndarray:
    """(N, C, H, W) from same-channel images; ones of other sizes resized, or a DataError."""
    sizes = sorted({im.shape[1:] for im in images})
    if len(sizes) == 1:
        return np.stack(images)
    if resize is None:
        first = next(f for f, im in zip(files, images) if im.shape[1:] == sizes[0])
        other = next(f for f, im in zip(files, images) if im.shape[1:] == sizes[-1])
        raise DataError(
            f"images differ in size ({first} is {sizes[0][1]}x{sizes[0][0]}, {other} is "
            f"{sizes[-1][1]}x{sizes[-1][0]}); set resize: <side> in data: to resize them all"
        )
    out = np.empty((len(images), images[0].shape[0], resize, resize), dtype=np.float32)
    for size in sizes:  # one bilinear resize per group of same-sized images
        idx = [i for i, im in enumerate(images) if im.shape[1:] == size]
        out[idx] = resize_images(np.stack([images[i] for i in idx]), resize)
    return out


def _flatten(files: dict[str, list[Path]], classes: list[str]) -> tuple[list[Path], np.ndarray]:
    paths = [f for name in files for f in files[name]]
    y = np.array([classes.index(name) for name in files for _ in files[name]], dtype=np.int64)
    return paths, y


def load_image_folder_raw(root: str | Path, channels: int | None = None, resize: int | None = None):
    """(x, y, x_test | None, y_test | None, classes) with x as (N, C, H, W) float32 in [0, 1]."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; expected {LAYOUT}")
    train_dir = root / "train"
    split_layout = train_dir.is_dir()  # then a class folder must not be named "train"
    if split_layout:
        others = [p.name for p in _folders(root) if p.name not in ("train", "test")]
        if others:
            raise DataError(
                f"{root} has train/ and also {others[0]}/; with train/ and test/ every class "
                "folder goes inside them: move it or drop it"
            )
    train_files = _class_files(train_dir if split_layout else root)
    classes = sorted(train_files)
    if len(classes) < 2:
        raise DataError(
            f"{root} has 1 class folder ({classes[0]}); classification needs at least 2"
        )
    test_files = None
    if split_layout and (root / "test").is_dir():
        test_files = _class_files(root / "test")
        unknown = sorted(set(test_files) - set(classes))
        if unknown:
            raise DataError(
                f"{root / 'test' / unknown[0]} is a class with no train/ folder; "
                "every test class must also be in train/"
            )
    train_paths, y = _flatten(train_files, classes)
    test_paths, ty = _flatten(test_files, classes) if test_files else ([], None)
    paths = train_paths + test_paths
    images = [_read_image(p) for p in paths]
    target = channels or (3 if any(im.shape[0] == 3 for im in images) else 1)
    x = _stack([convert_channels(im[None], target)[0] for im in images], paths, resize)
    n = len(train_paths)
    return x[:n], y, (x[n:] if test_paths else None), ty, classes
