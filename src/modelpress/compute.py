"""Where torch computes: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` turned into a ``torch.device``.

Training, distillation, pruning recovery, QAT and quantization sensitivity take a device
spelling; everything saved or exported stays on the CPU. ``auto`` is CUDA when torch sees a GPU,
else the CPU. A spelling that cannot run here is a one-line :class:`ConfigError` that says what to
do, never a CUDA traceback halfway through a run.

>>> from modelpress.compute import describe_device, resolve_device
>>> describe_device(resolve_device("cpu"))
'cpu'
"""

from __future__ import annotations

import itertools
import re

import torch

from .errors import ConfigError

DEVICES = "auto, cpu, cuda or cuda:N (N: a GPU index from 0)"
_SPELLING = re.compile(r"auto|cpu|cuda(?::(?:0|[1-9][0-9]{0,8}))?")


def check_device_spelling(spec: object) -> str:
    """``spec`` if it spells a device (availability is not checked here); else ConfigError."""
    if not isinstance(spec, str) or not _SPELLING.fullmatch(spec):
        shown = repr(spec) if len(repr(spec)) <= 40 else repr(spec)[:37] + "..."
        raise ConfigError(f"device {shown} is unknown; use {DEVICES}")
    return spec


def _no_cuda(spec: str) -> ConfigError:
    build = "CPU build?" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    return ConfigError(
        f"device {spec!r} asked for but torch sees no CUDA GPU (torch {torch.__version__}, "
        f"{build}): use device: cpu or auto, or install a CUDA build of torch"
    )


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` that ``spec`` names on this machine (None: ``auto``).

    ``cuda`` is the current GPU (GPU 0 unless a process chose another); a GPU index at or above
    the number of GPUs torch sees, or CUDA on a machine without it, is a ConfigError.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    spec = check_device_spelling("auto" if spec is None else str(spec))
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise _no_cuda(spec)
    _, _, index = spec.partition(":")
    if not index:  # auto or cuda: the current GPU, without initialising CUDA to ask for it
        return torch.device(
            "cuda", torch.cuda.current_device() if torch.cuda.is_initialized() else 0
        )
    count = torch.cuda.device_count()
    if int(index) >= count:
        raise ConfigError(
            f"device {spec!r} asked for but torch sees {count} CUDA GPU(s), cuda:0 to "
            f"cuda:{count - 1}: pick one of those, or cuda / auto (check CUDA_VISIBLE_DEVICES)"
        )
    return torch.device("cuda", int(index))


def describe_device(device: torch.device | str) -> str:
    """``device`` in words for records: ``cpu``, or ``cuda:0 (NVIDIA H200)``."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s first parameter (or buffer) lives; the CPU for a module without any."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def move_graph_module(gm: torch.fx.GraphModule, device: torch.device) -> torch.fx.GraphModule:
    """A captured graph (``torch.export`` / pt2e) moved to ``device`` in place: its parameters
    and buffers, its plain tensor constants, and the devices baked into its ops (an RNN's zero
    initial state is ``aten.zeros(..., device=cpu)`` once captured on the CPU)."""
    gm.to(device)
    owned = {id(t) for t in itertools.chain(gm.parameters(), gm.buffers())}

    def retarget(value: object) -> object:
        if isinstance(value, torch.device):
            return device
        if isinstance(value, list) and any(isinstance(v, torch.device) for v in value):
            return [device if isinstance(v, torch.device) else v for v in value]
        return value

    for node in gm.graph.nodes:
        node.args = tuple(retarget(a) for a in node.args)
        node.kwargs = {k: retarget(v) for k, v in node.kwargs.items()}
        if node.op == "get_attr":
            owner_name, _, attr = node.target.rpartition(".")
            owner = gm.get_submodule(owner_name) if owner_name else gm
            value = getattr(owner, attr, None)
            if isinstance(value, torch.Tensor) and id(value) not in owned:
                setattr(owner, attr, value.to(device))
    gm.recompile()
    return gm
