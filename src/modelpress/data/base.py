"""Data containers shared by every data set: splits, input spec, preprocessing, calibration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError
from ..feeds import check_names

InputKind = Literal["image", "sequence", "tokens"]
INPUT_KINDS: tuple[str, ...] = ("image", "sequence", "tokens")


@dataclass(frozen=True)
class InputSpec:
    """What one sample looks like to the model (batch dimension excluded).

    ``image``: float32 (C, H, W); ``sequence``: float32 (T, F); ``tokens``: int64 (T,).
    ``names``: the model's inputs when it takes more than the data's array, e.g.
    ``("input_ids", "attention_mask")``: the first is the data's array, the others are derived
    from it (:mod:`modelpress.feeds`); empty: one unnamed input.
    """

    kind: InputKind
    shape: tuple[int, ...]
    dtype: str
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ConfigError(f"input kind {self.kind!r} is unknown; expected one of {INPUT_KINDS}")
        expected = {"image": 3, "sequence": 2, "tokens": 1}[self.kind]
        if len(self.shape) != expected or any(int(d) <= 0 for d in self.shape):
            raise ConfigError(
                f"input shape {tuple(self.shape)} does not fit kind {self.kind!r}: "
                f"expected {expected} positive dimensions"
            )
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "names", tuple(self.names))
        check_names(self.names, self.kind)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ``names`` only when given, so one-input specs read as they always did."""
        d: dict[str, Any] = {"kind": self.kind, "shape": list(self.shape), "dtype": self.dtype}
        if self.names:
            d["names"] = list(self.names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(
            kind=d["kind"],
            shape=tuple(d["shape"]),
            dtype=d["dtype"],
            names=tuple(d.get("names", ())),
        )


@dataclass
class Split:
    """One split of a data set: model-ready inputs ``x`` and integer labels ``y``."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} inputs but {len(self.y)} labels")
        self.y = np.asarray(self.y, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    """A loaded data set: train / val / test splits plus everything a deployed model must know.

    ``preprocessing`` is a JSON-able dict (normalisation statistics computed on train only,
    resize, view, vocabulary) that travels with every checkpoint and artifact.
    """

    name: str
    train: Split
    val: Split
    test: Split
    labels: list[str]
    input_spec: InputSpec
    preprocessing: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def calibration(self, n: int = 128, seed: int = 0) -> np.ndarray:
        """``n`` inputs drawn from the train split (seeded, stratified where possible).

        >>> from modelpress.data import load_dataset
        >>> calib = load_dataset("digits").calibration(64, seed=0)
        >>> calib.shape
        (64, 1, 8, 8)
        """
        return self.train.x[calibration_indices(self.train.y, n, seed)]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "classes": self.num_classes,
            "input": self.input_spec.to_dict(),
        }


def calibration_indices(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` samples, seeded, spread over the classes in proportion to their counts."""
    if n <= 0:
        raise ConfigError(f"calibration size must be positive, got {n}")
    total = len(y)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / total * n).astype(int)
    # hand out what rounding left over to the largest classes first
    for i in np.argsort(-counts)[: n - quota.sum()]:
        quota[i] += 1
    picked = [
        rng.choice(np.flatnonzero(y == c), size=q, replace=False) for c, q in zip(classes, quota)
    ]
    return np.sort(np.concatenate(picked))
