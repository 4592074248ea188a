"""Data sets, loaded from the bundled digits or from local files; never downloaded.

Your own data: ``npz`` (one .npz file of arrays, see :mod:`.npz`), ``image-folder``
(``<class>/*.png`` folders, see :mod:`.folder`) and ``text`` (CSV/TSV with ``text_column`` /
``label_column``). Your own preprocessing: ``mean`` / ``std`` (used instead of the train
statistics, see :mod:`.normalise`), ``channels`` and ``resize``.

>>> from modelpress.data import load_dataset
>>> bundle = load_dataset("digits", view="sequence")
>>> bundle.input_spec.shape, bundle.num_classes
((8, 8), 10)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .base import DataBundle, InputSpec, Split, calibration_indices
from .images import IMAGE_VIEWS, apply_preprocessing, build_image_bundle, stratified_split
from .normalise import CHANNELS, check_user_stats, convert_channels

__all__ = [
    "DATASETS",
    "DataBundle",
    "DataConfig",
    "InputSpec",
    "Split",
    "apply_preprocessing",
    "calibration_indices",
    "load_dataset",
]


@dataclass(frozen=True)
class DataConfig:
    """Which data set to load and how. Validated on construction."""

    name: str = "digits"
    root: str | None = None  # folder or file for data sets read from disk
    view: str | None = None  # image | sequence | tokens; None -> the data set's default
    resize: int | None = None  # square side for image data sets (e.g. 32)
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2  # used only where the data set has no official test split
    max_len: int = 128  # text: tokens per sample
    vocab_size: int = 20000  # text: words kept, including <pad> and <unk>
    min_freq: int = 1  # text: a word must appear this often in train
    # images: pixels in [0, 1] -> (x - mean) / std; one number or one per channel; None -> train
    # statistics. Both or neither.
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    channels: int | None = None  # images: 1 (grey) or 3 (RGB); None -> as the data comes
    text_column: str | None = None  # text: the CSV/TSV header's column with the text
    label_column: str | None = None  # text: ... and the one with the class labels

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise ConfigError(
                f"unknown dataset {self.name!r}; known: {', '.join(sorted(DATASETS))}"
            )
        views = DATASETS[self.name].views
        if self.view is not None and self.view not in views:
            raise ConfigError(
                f"view {self.view!r} is not offered by {self.name}; choose one of {views}"
            )
        for field_name in ("val_fraction", "test_fraction"):
            value = getattr(self, field_name)
            if not 0.0 < value < 0.5:
                raise ConfigError(f"{field_name} must be in (0, 0.5), got {value}")
        if self.resize is not None and self.resize <= 0:
            raise ConfigError(f"resize must be a positive side length, got {self.resize}")
        if self.max_len <= 0 or self.vocab_size < 3 or self.min_freq < 1:
            raise ConfigError("max_len must be > 0, vocab_size >= 3 and min_freq >= 1")
        if DATASETS[self.name].needs_root and not self.root:
            raise ConfigError(f"dataset {self.name!r} is read from local files: give root=<path>")
        self._check_user_options("image" in views)

    def _check_user_options(self, images: bool) -> None:
        given = [k for k in ("mean", "std", "channels") if getattr(self, k) is not None]
        if given and not images:
            raise ConfigError(f"{given[0]} applies to image data sets; {self.name} is not one")
        given = [k for k in ("text_column", "label_column") if getattr(self, k) is not None]
        if given and self.name != "text":
            raise ConfigError(f"{given[0]} names a CSV/TSV column of the text data set only")
        for key in given:
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{key} is a column name of the header, got {value!r}")
        if self.channels is not None and (
            isinstance(self.channels, bool) or self.channels not in CHANNELS
        ):
            raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels!r}")
        mean, std = check_user_stats(self.mean, self.std, self.channels)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict[str, Any]:
        """JSON-like: per-channel tuples as lists, so a dict read back from JSON compares equal."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DatasetEntry:
    load: Callable[[DataConfig, str], DataBundle]
    views: tuple[str, ...]
    needs_root: bool


def _images(raw: Callable[[DataConfig], tuple]) -> Callable[[DataConfig, str], DataBundle]:
    def load(cfg: DataConfig, view: str) -> DataBundle:
        parts = raw(cfg)
        if len(parts) == 3:  # no official test split
            x, y, labels = parts
            tx = ty = None
        else:
            x, y, tx, ty, labels = parts
        x = convert_channels(x, cfg.channels)
        tx = None if tx is None else convert_channels(tx, cfg.channels)
        return build_image_bundle(
            cfg.name,
            x,
            y,
            tx,
            ty,
            labels,
            view=view,
            resize=cfg.resize,
            seed=cfg.seed,
            val_fraction=cfg.val_fraction,
            test_fraction=cfg.test_fraction,
            mean=cfg.mean,
            std=cfg.std,
        )

    return load


def _digits(cfg: DataConfig) -> tuple:
    from .digits import load_digits_raw

    return load_digits_raw()


def _cifar10(cfg: DataConfig) -> tuple:
    from .cifar10 import load_cifar10_raw

    return load_cifar10_raw(cfg.root or "")


def _idx(fashion: bool) -> Callable[[DataConfig], tuple]:
    def raw(cfg: DataConfig) -> tuple:
        from .idx import load_idx_raw

        return load_idx_raw(cfg.root or "", fashion=fashion)

    return raw


def _npz(cfg: DataConfig) -> tuple:
    from .npz import load_npz_raw

    return load_npz_raw(cfg.root or "")


def _image_folder(cfg: DataConfig) -> tuple:
    from .folder import load_image_folder_raw

    return load_image_folder_raw(cfg.root or "", channels=cfg.channels, resize=cfg.resize)


def _text(cfg: DataConfig, view: str) -> DataBundle:
    from .text import Vocabulary, load_text_raw

    tr_labels, tr_texts, te_labels, te_texts = load_text_raw(
        cfg.root or "", text_column=cfg.text_column, label_column=cfg.label_column
    )
    names = sorted(set(tr_labels) | set(te_labels or []))
    if len(names) < 2:
        raise DataError(
            f"{cfg.root} has {len(names)} distinct label(s); classification needs at least 2"
        )
    to_id = {n: i for i, n in enumerate(names)}
    y = np.array([to_id[v] for v in tr_labels], dtype=np.int64)
    texts = np.array(tr_texts, dtype=object)
    if te_labels is None:
        keep, held = stratified_split(y, cfg.test_fraction, cfg.seed)
        te_texts, ty = texts[held], y[held]
        texts, y = texts[keep], y[keep]
    else:
        ty = np.array([to_id[v] for v in te_labels], dtype=np.int64)
    keep, held = stratified_split(y, cfg.val_fraction, cfg.seed + 1)
    vocab = Vocabulary.fit(texts[keep], max_size=cfg.vocab_size, min_freq=cfg.min_freq)
    enc = lambda t: vocab.encode_many(list(t), cfg.max_len)  # noqa: E731
    pre = {
        "dataset": cfg.name,
        "view": "tokens",
        "max_len": cfg.max_len,
        "tokenizer": "lower-word",
        "vocab": vocab.to_dict(),
    }
    return DataBundle(
        cfg.name,
        Split(enc(texts[keep]), y[keep]),
        Split(enc(texts[held]), y[held]),
        Split(enc(te_texts), ty),
        labels=names,
        input_spec=InputSpec("tokens", (cfg.max_len,), "int64"),
        preprocessing=pre,
    )


DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry(_images(_digits), IMAGE_VIEWS, needs_root=False),
    "cifar10": DatasetEntry(_images(_cifar10), IMAGE_VIEWS, needs_root=True),
    "mnist": DatasetEntry(_images(_idx(False)), IMAGE_VIEWS, needs_root=True),
    "fashion-mnist": DatasetEntry(_images(_idx(True)), IMAGE_VIEWS, needs_root=True),
    "text": DatasetEntry(_text, ("tokens",), needs_root=True),
    "npz": DatasetEntry(_images(_npz), IMAGE_VIEWS, needs_root=True),
    "image-folder": DatasetEntry(_images(_image_folder), IMAGE_VIEWS, needs_root=True),
}


def load_dataset(config: DataConfig | str = "digits", **overrides: Any) -> DataBundle:
    """Load a data set from a :class:`DataConfig` or a name plus keyword overrides.

    Raises ``ConfigError`` for unknown names or options and ``DataError`` for missing or
    malformed files (one line, naming the expected path and format).
    """
    base = {"name": config} if isinstance(config, str) else config.to_dict()
    unknown = sorted(set(overrides) - set(DataConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f"unknown dataset option(s) {unknown}; valid: {sorted(DataConfig.__dataclass_fields__)}"
        )
    if isinstance(config, str) or overrides:
        config = DataConfig(**{**base, **overrides})
    if config.root is not None and not Path(config.root).exists():
        raise DataError(
            f"data path {config.root} does not exist; point root at the {config.name} files"
        )
    entry = DATASETS[config.name]
    try:
        bundle = entry.load(config, config.view or entry.views[0])
    except DataError as exc:  # e.g. too few samples to split: say which files hold them
        if config.root is None or str(config.root) in str(exc):
            raise
        raise DataError(f"{config.root}: {exc}") from exc
    bundle.preprocessing["data_config"] = config.to_dict()
    return bundle
