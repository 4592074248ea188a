"""The machine a measurement ran on: CPU model and flags, cores, OS and kernel, GPUs, runtimes.

Latency belongs to the machine that measured it. :func:`machine_fingerprint` (computed once per
process) names this machine by a short hash; the benchmark stage's cache key includes it, and
every measured record carries it, so a copied ``runs/`` folder never passes another machine's
latencies off as this one's.

>>> from modelpress.measure.machine import machine_fingerprint
>>> m = machine_fingerprint()
>>> len(m.id)
12
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

RUNTIMES = ("onnxruntime", "ai-edge-litert", "tensorrt", "torch")  # in the fingerprint


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what ``platform`` says)."""
    for line in _cpuinfo():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``), sorted; [] where unknown."""
    for line in _cpuinfo():
        if line.split(":", 1)[0].strip().lower() in ("flags", "features"):
            return sorted(set(line.split(":", 1)[1].split()))
    return []


def _gpus() -> list[str]:
    """NVIDIA GPU models from the driver's /proc files (no CUDA import); [] where none."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            lines = info.read_text(errors="replace").splitlines()
        except OSError:
            continue
        names += [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model:")]
    return names


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return usable or 1


def versions(libraries: Sequence[str]) -> dict[str, str]:
    """Installed versions (from package metadata: nothing is imported)."""
    found = {}
    for lib in libraries:
        try:
            found[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return found


@dataclass(frozen=True)
class Machine:
    """What a measurement depends on besides the artifact: ``id`` hashes ``facts``."""

    id: str  # 12 hex digits
    description: str  # one line for people: CPU, cores, OS, GPU
    facts: Mapping[str, Any]


@functools.cache
def machine_fingerprint() -> Machine:
    """This machine, once per process: CPU model and flags, logical and usable cores, OS and
    kernel, GPUs, and the runtimes' versions. Latency measured under another fingerprint is not
    a measurement of this machine: the benchmark stage's cache key includes ``id``."""
    flags = _cpu_flags()
    facts = {
        "cpu_model": cpu_model(),
        "cpu_flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16] if flags else "",
        "logical_cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "gpus": _gpus(),
        "runtimes": versions(RUNTIMES),
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]
    gpus = f", {', '.join(facts['gpus'])}" if facts["gpus"] else ""
    description = (
        f"{facts['cpu_model']}, {facts['usable_cores']} of {facts['logical_cores']} cores, "
        f"{platform.system()} {platform.release()}{gpus}"
    )
    return Machine(id=digest, description=description, facts=facts)
