"""Deployment targets: one backend per file, behind the contract in :mod:`.base`.

The registry maps names to factories and imports nothing heavy: each backend imports its runtime
inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from .base import Availability, Runner, Target, TargetInfo


def _torch(**kw: Any) -> Target:
    from .torch import TorchTarget

    return TorchTarget(**kw)


def _onnxruntime(**kw: Any) -> Target:
    from .onnxruntime import OnnxRuntimeTarget

    return OnnxRuntimeTarget(**kw)


def _litert(**kw: Any) -> Target:
    from .litert import LiteRTTarget

    return LiteRTTarget(**kw)


def _tensorrt(**kw: Any) -> Target:
    from .tensorrt import TensorRTTarget

    return TensorRTTarget(**kw)


TARGETS: dict[str, Callable[..., Target]] = {
    "torch": _torch,
    "onnxruntime": _onnxruntime,
    "litert": _litert,
    "tensorrt": _tensorrt,
}


def get_target(name: str, **options: Any) -> Target:
    """A target by registry name; ``options`` go to its config (threads, device, ...)."""
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name](**options)


def build_identity(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """What a build of target ``name`` is only valid for beyond its inputs (TensorRT: its version
    and the GPU); ``{}`` for portable artifacts. Goes into the build's cache key."""
    try:
        target = get_target(name, **options)
    except ConfigError:
        return {}  # the build itself reports the bad option
    ident = getattr(target, "build_identity", None)
    return ident() if callable(ident) else {}


def with_bench_batches(target: str, options: dict, batch_sizes: tuple[int, ...]) -> dict:
    """``options`` with LiteRT's ``batches`` set to the benchmark's batch sizes (unless the
    recipe sets it): its graphs have a fixed batch, and a batch of 32 run as 32 calls of the
    batch-1 graph measures the calls, not the model at batch 32."""
    if target != "litert" or "batches" in options:
        return options
    extra = [b for b in batch_sizes if b != options.get("batch", 1)]
    return {**options, "batches": extra} if extra else options


__all__ = [
    "TARGETS",
    "build_identity",
    "with_bench_batches",
    "Availability",
    "Runner",
    "Target",
    "TargetInfo",
    "get_target",
]
