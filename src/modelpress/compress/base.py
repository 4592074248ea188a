"""The pass contract shared by distillation, pruning and quantization.

A pass takes a checkpoint :class:`~modelpress.artifact.Artifact` (format ``torch``), a typed
config (a frozen dataclass validated on construction) and a :class:`PassContext`, and returns
a :class:`PassResult`: the new artifact on disk, the in-memory model, and a :class:`PassRecord`
of what it did (params, MACs, bytes and accuracy before/after, wall time, and notes on anything
left untouched and why; a pass is never a silent no-op).

>>> from modelpress.compress.base import PassContext, load_model     # doctest: +SKIP
>>> model, ckpt = load_model(artifact)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..artifact import Artifact
from ..checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..compute import check_device_spelling
from ..data.base import DataBundle, InputSpec
from ..metrics import count_macs, count_params
from ..train import evaluate


@dataclass
class PassContext:
    """What every pass may use: the data (train for tuning, val for choices, test for the
    record), where to write, and run-wide settings.

    ``device``: where the passes that train (distillation, pruning recovery, QAT, sparsity
    fine-tuning) compute: ``auto`` (CUDA when torch sees a GPU), ``cpu``, ``cuda``, ``cuda:N``.
    What a pass saves or exports is always built from a CPU model."""

    data: DataBundle
    out_dir: Path
    seed: int = 0
    progress: bool = False
    device: str = "auto"

    def __post_init__(self) -> None:
        check_device_spelling(self.device)


@dataclass
class ModelStats:
    params: int
    macs: int
    bytes: int
    accuracy: float  # test split


@dataclass
class PassRecord:
    name: str
    config: dict[str, Any]
    before: ModelStats
    after: ModelStats
    seconds: float
    notes: list[str] = field(default_factory=list)  # untouched layers and why, warnings
    details: dict[str, Any] = field(default_factory=dict)  # technique-specific (widths, sparsity)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PassResult:
    artifact: Artifact
    model: nn.Module
    record: PassRecord


def load_model(art: Artifact) -> tuple[nn.Module, Checkpoint]:
    """The model of a ``torch`` artifact (a modelpress checkpoint), in eval mode."""
    ckpt = load_checkpoint(art.path)
    return ckpt.model, ckpt


def example_input(spec: InputSpec, data: DataBundle | None = None, batch: int = 2) -> torch.Tensor:
    """A real batch from the test split when ``data`` is given, else zeros of the right dtype."""
    if data is not None:
        return torch.as_tensor(data.test.x[:batch])
    dtype = torch.int64 if spec.dtype == "int64" else torch.float32
    return torch.zeros((batch, *spec.shape), dtype=dtype)


def model_stats(model: nn.Module, data: DataBundle, nbytes: int) -> ModelStats:
    return ModelStats(
        params=count_params(model),
        macs=count_macs(model, example_input(data.input_spec, data)),
        bytes=nbytes,
        accuracy=evaluate(model, data.test)["accuracy"],
    )


def save_pass_output(
    model: nn.Module,
    parent: Checkpoint,
    ctx: PassContext,
    stage: str,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Artifact:
    """Save ``model`` as the child of ``parent`` with the lineage extended by this stage."""
    from ..targets.base import safe_stem  # the name comes from the file: never a path

    path = ctx.out_dir / f"{safe_stem(parent.meta.model.name)}.{stage}.safetensors"
    return save_checkpoint(
        path,
        model,
        input_spec=parent.input_spec,
        labels=parent.meta.labels,
        preprocessing=parent.meta.preprocessing,
        metrics=metrics or {},
        train=parent.meta.train,
        lineage=[*parent.meta.lineage, {"stage": stage, **config}],
        parent_id=parent.meta.id,
    )


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    box = {"seconds": 0.0}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start
