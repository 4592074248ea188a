"""Execution providers of the onnxruntime target: which backend runs the graph (CPU, CUDA, TensorRT).

A recipe names them in order of preference, short or full::

    targets:
      onnxruntime: {options: {providers: [cuda], device_id: 0}}

``cuda`` and ``tensorrt`` need the ``onnxruntime-gpu`` package (the ``ort-gpu`` extra, installed
*instead of* ``onnxruntime``) and a CUDA GPU. ONNX Runtime itself falls back to the CPU without a
word when a provider cannot start (a missing cuDNN, no GPU); here an unavailable provider is a
clear skip with its reason (:func:`availability` before a build, :func:`check_session` after a
session is made), never a CPU number under a GPU label.

>>> parse_providers(["cuda", "CPUExecutionProvider"])
('CUDAExecutionProvider', 'CPUExecutionProvider')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError, TargetUnavailable
from .base import Availability

ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
DEFAULT = ("CPUExecutionProvider",)


def parse_providers(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The full provider names for ``value`` (a name or a list of names, short or full), in order,
    each once. Raises a one-line :class:`ConfigError` on an unknown name or an empty list."""
    if value is None:
        return DEFAULT
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise ConfigError(
            "onnxruntime providers is empty; name at least one of cpu, cuda, tensorrt"
        )
    full: list[str] = []
    known = {*ALIASES.values()}
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(
                f"onnxruntime provider {name!r} is not a name; use cpu, cuda or tensorrt"
            )
        resolved = ALIASES.get(name.strip().lower(), name.strip())
        if resolved not in known:
            raise ConfigError(
                f"onnxruntime provider {name!r} is unknown; use cpu, cuda or tensorrt "
                f"(or {', '.join(sorted(known))})"
            )
        if resolved not in full:
            full.append(resolved)
    return tuple(full)


def uses_gpu(providers: tuple[str, ...]) -> bool:
    return any(p in GPU_PROVIDERS for p in providers)


def availability(providers: tuple[str, ...]) -> Availability:
    """Whether this onnxruntime build offers every requested provider."""
    import onnxruntime as ort

    offered = ort.get_available_providers()
    missing = [p for p in providers if p not in offered]
    if not missing:
        return Availability(True)
    return Availability(
        False,
        f"onnxruntime {ort.__version__} here offers {', '.join(offered)}, not {', '.join(missing)}"
        " (CUDA and TensorRT need onnxruntime-gpu instead of onnxruntime, and a CUDA GPU)",
        extra="ort-gpu",
    )


def session_providers(providers: tuple[str, ...], device_id: int) -> list[Any]:
    """The ``providers=`` argument of ``InferenceSession``: GPU providers get the device id."""
    return [(p, {"device_id": str(device_id)}) if p in GPU_PROVIDERS else p for p in providers]


def check_session(session: Any, providers: tuple[str, ...]) -> None:
    """Raise :class:`TargetUnavailable` when the session silently dropped a requested provider."""
    active = session.get_providers()
    dropped = [p for p in providers if p not in active]
    if dropped:
        raise TargetUnavailable(
            f"target onnxruntime is unavailable: {', '.join(dropped)} could not start here "
            f"(the session runs on {', '.join(active)}): check the CUDA / cuDNN / TensorRT "
            "libraries that onnxruntime-gpu needs, or use providers: [cpu]"
        )


def device_label(providers: tuple[str, ...], device_id: int) -> str:
    """``cpu``, or ``cuda:N (GPU name)`` when a GPU provider leads."""
    if not uses_gpu(providers[:1]):
        return "cpu"
    label = f"cuda:{device_id}"
    try:
        import torch

        if torch.cuda.is_available() and device_id < torch.cuda.device_count():
            label += f" ({torch.cuda.get_device_name(device_id)})"
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return label
