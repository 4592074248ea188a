"""Your own arrays from one ``.npz`` file (``np.savez``), read without pickle.

Keys:
- ``x``: images (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4; a 3-D x is also how
  sequences / tabular rows (N, T, F) come in (one channel: the ``sequence`` view feeds (T, F));
- ``y``: (N,) class ids (integers from 0) or class names (strings);
- optional ``x_test`` / ``y_test`` (together): the official test split;
- optional ``labels``: class names (strings), in class-id order;
- optional ``layout``: ``"NHWC"`` or ``"NCHW"``, only needed where both axis 1 and axis 3 of a
  4-D x could hold channels (e.g. (N, 3, 32, 3)).

uint8 x is divided by 255 (pixels to [0, 1], as torchvision does); any other number type is used
as it is (floats in [0, 1] for images). Object arrays are refused: they need pickle.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "d.npz")
>>> np.savez(path, x=np.zeros((4, 5, 5), np.uint8), y=np.array(["a", "b", "a", "b"]))
>>> x, y, tx, ty, labels = load_npz_raw(path)
>>> x.shape, y.tolist(), labels
((4, 1, 5, 5), [0, 1, 0, 1], ['a', 'b'])
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

KEYS = ("x", "y", "x_test", "y_test", "labels", "layout")
CHANNEL_SIZES = (1, 3, 4)
SAVE_HINT = "save it with np.savez(path, x=images, y=labels[, x_test=..., y_test=..., labels=...])"


def _read(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file; DataError for a non-npz file or an array that needs pickle."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:  # pickled: ValueError
        raise DataError(f"cannot read {path} as .npz: {exc}; {SAVE_HINT}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path} is a single .npy array, not an .npz archive; {SAVE_HINT}")
    arrays: dict[str, np.ndarray] = {}
    with npz:
        for name in npz.files:
            try:
                arrays[name] = npz[name]
            except ValueError as exc:  # "Object arrays cannot be loaded when allow_pickle=False"
                if "pickle" not in str(exc):
                    raise DataError(f"{path}: array {name!r} cannot be read: {exc}") from exc
                raise DataError(
                    f"{path}: array {name!r} is an object array (it would need pickle, which "
                    "modelpress never loads); store numbers, and class names as a str array "
                    "(np.array(names, dtype=str))"
                ) from exc
            except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
                raise DataError(f"{path}: array {name!r} cannot be read: {exc}") from exc
    if not arrays:
        raise DataError(f"{path} holds no arrays; {SAVE_HINT}")
    return arrays


def _check_keys(path: Path, arrays: dict[str, np.ndarray]) -> None:
    found = ", ".join(sorted(arrays)) or "none"
    unknown = sorted(set(arrays) - set(KEYS))
    if unknown:
        raise DataError(
            f"{path}: unexpected array {unknown[0]!r} (found: {found}); expected x, y and "
            "optionally x_test, y_test, labels, layout: rename or drop it"
        )
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} (found: {found}); {SAVE_HINT}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing = "y_test" if "x_test" in arrays else "x_test"
        raise DataError(
            f"{path}: missing array {missing!r}: x_test and y_test go together (found: {found})"
        )


def _layout(path: Path, x: np.ndarray, layout: str | None) -> str:
    """'NHW', 'NHWC' or 'NCHW' for ``x`` (one sample set), or a DataError saying why not."""
    shape = tuple(x.shape)
    if x.ndim == 3:
        return "NHW"
    if x.ndim != 4:
        raise DataError(
            f"{path}: x has shape {shape}; expected (N, H, W), (N, H, W, C), (N, C, H, W) or a "
            "sequence (N, T, F); for tabular rows (N, F) save x[:, None, :] (one time step)"
        )
    if layout is not None:
        return layout
    last, second = shape[3] in CHANNEL_SIZES, shape[1] in CHANNEL_SIZES
    if not (last or second):
        raise DataError(
            f"{path}: x has shape {shape} but no axis of 1, 3 or 4 channels at axis 1 (N, C, H, W) "
            "or axis 3 (N, H, W, C); save images in one of those layouts"
        )
    if last and second:  # both could be channels: the one smaller than both image sides wins
        last, second = shape[3] < min(shape[1:3]), shape[1] < min(shape[2:4])
        if last == second:
            raise DataError(
                f"{path}: x has shape {shape}: both axis 1 and axis 3 could hold the channels; "
                "add layout='NHWC' or layout='NCHW' to the .npz to say which"
            )
    return "NHWC" if last else "NCHW"


def _check_x(path: Path, key: str, x: np.ndarray) -> None:
    """Numbers, at least one sample, finite."""
    if x.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: {key} holds {x.dtype} values; expected numbers (uint8 pixels or floats)"
        )
    if x.size == 0:
        raise DataError(f"{path}: {key} is empty (shape {x.shape}); expected at least one sample")
    if x.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        if bad.size:
            raise DataError(f"{path}: {key}[{bad[0]}] holds NaN or infinity; give finite values")


def _images(x: np.ndarray, layout: str) -> np.ndarray:
    """(N, C, H, W) float32: uint8 / 255 (pixels to [0, 1]), other numbers as they are."""
    out = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if layout == "NHW":
        return out[:, None]
    return out.transpose(0, 3, 1, 2) if layout == "NHWC" else out


def _strings(path: Path, key: str, arr: np.ndarray) -> list[str]:
    if arr.dtype.kind == "S":
        return [v.decode("utf-8", errors="replace").strip() for v in arr.ravel()]
    return [str(v).strip() for v in arr.ravel()]


def _ids(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    """Integer class ids from ``y`` (ints, or floats that are whole numbers), all >= 0."""
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        raise DataError(
            f"{path}: {key} holds {y.dtype} values; expected integer class ids or class names"
        )
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: {key} has class id {int(y.min())}; ids start at 0")
    return y.astype(np.int64)


def _labels_from(path: Path, ys: list[np.ndarray], names: list[str] | None) -> tuple[list, list]:
    """(class ids per array in ``ys``, class names)."""
    if all(y.dtype.kind in "US" for y in ys):
        values = [_strings(path, "y", y) for y in ys]
        classes = names if names is not None else sorted({v for vs in values for v in vs})
        index = {n: i for i, n in enumerate(classes)}
        for key, vs in zip(("y", "y_test"), values):
            unknown = next((v for v in vs if v not in index), None)
            if unknown is not None:
                raise DataError(
                    f"{path}: {key} has class {unknown!r}, which labels does not name; "
                    "add it to labels or drop those samples"
                )
        return [np.array([index[v] for v in vs], dtype=np.int64) for vs in values], classes
    ids = [_ids(path, key, y) for key, y in zip(("y", "y_test"), ys)]
    n = max(int(i.max()) for i in ids) + 1
    if names is not None and len(names) < n:
        raise DataError(
            f"{path}: y has class id {n - 1} but labels names only {len(names)} classes; "
            "give one name per class id"
        )
    return ids, names if names is not None else [str(i) for i in range(n)]


def load_npz_raw(root: str | Path):
    """(x, y, x_test | None, y_test | None, labels) with x as (N, C, H, W) float32."""
    path = Path(root)
    if not path.is_file():
        raise DataError(f"{path} is not a file; root of the npz data set is one .npz file")
    arrays = _read(path)
    _check_keys(path, arrays)
    layout = None
    if "layout" in arrays:
        layout = _strings(path, "layout", arrays["layout"])[0].upper()
        if layout not in ("NHWC", "NCHW") or arrays["layout"].size != 1:
            raise DataError(f"{path}: layout is {layout!r}; expected 'NHWC' or 'NCHW'")
    names = None
    if "labels" in arrays:
        names = _strings(path, "labels", arrays["labels"])
        if len(set(names)) != len(names):
            raise DataError(f"{path}: labels has repeated names; give each class one name")
    splits = [("x", "y")] + ([("x_test", "y_test")] if "x_test" in arrays else [])
    xs, ys = [], []
    for xk, yk in splits:
        x, y = arrays[xk], arrays[yk]
        if y.ndim != 1:
            raise DataError(f"{path}: {yk} has shape {y.shape}; expected (N,) one label a sample")
        if len(x) != len(y):
            raise DataError(
                f"{path}: {xk} has {len(x)} samples but {yk} has {len(y)} labels; "
                "give one label per sample"
            )
        _check_x(path, xk, x)
        xs.append(_images(x, _layout(path, x, layout)))
        ys.append(y)
    if len(xs) == 2 and xs[0].shape[1:] != xs[1].shape[1:]:
        raise DataError(
            f"{path}: x samples are {xs[0].shape[1:]} (C, H, W) but x_test samples are "
            f"{xs[1].shape[1:]}; give both splits the same shape"
        )
    ids, classes = _labels_from(path, ys, names)
    if len(np.unique(ids[0])) < 2:
        raise DataError(
            f"{path}: y holds {len(np.unique(ids[0]))} class(es); classification needs at least 2"
        )
    test = (xs[1], ids[1]) if len(xs) == 2 else (None, None)
    return xs[0], ids[0], *test, classes
