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
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# one code for every device: the travelling runner gathers the same facts on a remote machine
from ..devices.runner import cpu_model, machine_facts, usable_cores, versions  # noqa: F401

RUNTIMES = ("onnxruntime", "ai-edge-litert", "tensorrt", "torch")  # in the fingerprint


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
    return fingerprint(machine_facts(RUNTIMES))


def fingerprint(facts: Mapping[str, Any]) -> Machine:
    """The :class:`Machine` of ``facts`` (:func:`modelpress.devices.runner.machine_facts`, here
    or as a remote device's runner reported them)."""
    facts = dict(facts)
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:12]
    gpus = f", {', '.join(facts.get('gpus') or [])}" if facts.get("gpus") else ""
    system = " ".join(str(facts.get("os", "")).split()[:2]) or platform.system()
    description = (
        f"{facts.get('cpu_model', '?')}, {facts.get('usable_cores', '?')} of "
        f"{facts.get('logical_cores', '?')} cores, {system}{gpus}"
    )
    return Machine(id=digest, description=description, facts=facts)
