"""Validation of a deployed artifact on the runtime that runs it (never on a simulation).

:func:`validate` runs a split through a target's :class:`~modelpress.targets.base.Runner` and
compares with the float torch model's logits: accuracy, top-1 agreement, max / mean absolute
logit difference. When a quantized artifact disagrees, a backend's localisation produces a
:class:`LocalisationReport`: per-layer divergence between quantized and float intermediate
outputs, worst first, so the report names the layer that broke the model.

>>> from modelpress.validate import validate                       # doctest: +SKIP
>>> rec = validate(runner, data.test, reference_logits=torch_logits)
>>> rec.accuracy, rec.agreement
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .data.base import Split


@dataclass(frozen=True)
class ValidationRecord:
    n: int
    accuracy: float
    agreement: float | None = None  # top-1 agreement with the reference model
    max_abs_diff: float | None = None  # of logits, against the reference
    mean_abs_diff: float | None = None
    reference_accuracy: float | None = None

    @property
    def accuracy_drop(self) -> float | None:
        """Reference accuracy minus this accuracy, in points (percentage points)."""
        if self.reference_accuracy is None:
            return None
        return 100.0 * (self.reference_accuracy - self.accuracy)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_drop": self.accuracy_drop}


def predict_all(runner: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for every row of ``x`` through ``runner.predict`` in batches."""
    outs = [runner.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float32)


def compare(
    logits: np.ndarray, labels: np.ndarray, reference_logits: np.ndarray | None = None
) -> ValidationRecord:
    """Accuracy of ``logits`` and, with a reference, its agreement and logit differences."""
    pred = logits.argmax(-1)
    acc = float((pred == labels).mean())
    if reference_logits is None:
        return ValidationRecord(n=len(labels), accuracy=acc)
    if reference_logits.shape != logits.shape:
        raise ValueError(f"reference logits {reference_logits.shape} do not match {logits.shape}")
    diff = np.abs(logits - reference_logits)
    return ValidationRecord(
        n=len(labels),
        accuracy=acc,
        agreement=float((pred == reference_logits.argmax(-1)).mean()),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        reference_accuracy=float((reference_logits.argmax(-1) == labels).mean()),
    )


def validate(
    runner: Any, split: Split, reference_logits: np.ndarray | None = None, batch_size: int = 256
) -> ValidationRecord:
    """Run ``split`` through ``runner`` and compare with ``reference_logits`` (float torch)."""
    return compare(predict_all(runner, split.x, batch_size), split.y, reference_logits)


@dataclass(frozen=True)
class LayerDivergence:
    layer: str  # the layer / tensor name in the deployed graph
    sqnr_db: float  # signal-to-quantization-noise ratio of its output; lower is worse
    max_abs_diff: float
    op: str = ""  # op type in the deployed graph, where known
    sqnr_drop_db: float | None = None  # SQNR lost at this layer (input SQNR - output SQNR)


@dataclass
class LocalisationReport:
    """Per-layer divergence of a quantized artifact from its float original, worst first."""

    target: str
    precision: str
    layers: list[LayerDivergence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def ranked(self) -> list[LayerDivergence]:
        """Worst first: by SQNR lost at the layer where known, else by output SQNR."""
        if any(d.sqnr_drop_db is not None for d in self.layers):
            return sorted(self.layers, key=lambda d: -(d.sqnr_drop_db or 0.0))
        return sorted(self.layers, key=lambda d: d.sqnr_db)

    def worst(self, k: int = 3) -> list[LayerDivergence]:
        return self.ranked()[:k]

    def summary(self) -> str:
        if not self.layers:
            return f"{self.target} {self.precision}: no layer could be compared"
        parts = [f"{d.layer} ({d.sqnr_db:.1f} dB)" for d in self.worst()]
        return f"{self.target} {self.precision}: most divergent layers: {', '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "precision": self.precision,
            "notes": self.notes,
            "layers": [asdict(d) for d in self.ranked()],
        }


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10 log10(signal power / error power); +inf when identical."""
    reference = reference.astype(np.float64)
    noise = np.mean((reference - test.astype(np.float64)) ** 2)
    signal = np.mean(reference**2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(signal, 1e-30) / noise))
