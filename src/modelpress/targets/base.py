"""The target contract: availability, build, load, describe.

- ``availability()`` says whether the runtime can run here, and if not why and which pip extra
  to install (``TargetUnavailable`` carries the same words when a build or load is attempted);
- ``build(artifact, precision, calib, out_dir)`` turns a ``torch`` checkpoint artifact (or, for
  some backends, an ``onnx`` one) into files on disk with embedded metadata;
- ``load(artifact)`` returns a :class:`Runner` whose ``predict(x)`` maps a batch (numpy, the
  dtype of the input spec) to logits (numpy float32), checking shape and dtype first;
- ``describe()`` reports runtime versions, device and threads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..artifact import Artifact
from ..data.base import InputSpec
from ..errors import ConfigError, TargetUnavailable


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""
    extra: str = ""  # the pip extra that brings the runtime, e.g. "tflite"

    def require(self, target: str) -> None:
        """Raise TargetUnavailable unless ok."""
        if not self.ok:
            hint = (
                f"; install it with: pip install 'modelpress[{self.extra}]'" if self.extra else ""
            )
            raise TargetUnavailable(f"target {target} is unavailable: {self.reason}{hint}")

    def __str__(self) -> str:
        return "ok" if self.ok else f"unavailable: {self.reason}"


@dataclass(frozen=True)
class TargetInfo:
    name: str
    runtime: str
    version: str
    device: str
    threads: int | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Runner:
    """Runs one deployed artifact. Subclasses implement ``_run`` on a checked batch."""

    def __init__(self, input_spec: InputSpec, target: str):
        self.input_spec = input_spec
        self.target = target

    def check_input(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise ConfigError(
                f"{self.target}: predict expects a numpy array, got {type(x).__name__}"
            )
        want = self.input_spec.shape
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ConfigError(
                f"{self.target}: input shape {tuple(x.shape)} does not match the model's (batch, {', '.join(map(str, want))})"
            )
        dtype = np.dtype(self.input_spec.dtype)
        if x.dtype != dtype:
            if np.issubdtype(dtype, np.integer) != np.issubdtype(x.dtype, np.integer):
                raise ConfigError(
                    f"{self.target}: input dtype {x.dtype} cannot stand for {dtype}; convert the data first"
                )
            x = x.astype(dtype)
        return np.ascontiguousarray(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits (float32, (batch, classes)) for a batch of inputs."""
        return self._run(self.check_input(x))

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the runtime's resources (sessions, interpreters, engines)."""


@runtime_checkable
class Target(Protocol):
    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]

    def availability(self) -> Availability: ...

    def build(
        self, art: Artifact, precision: str, calib: np.ndarray | None, out_dir: Path
    ) -> Artifact: ...

    def load(self, art: Artifact) -> Runner: ...

    def describe(self) -> TargetInfo: ...


STEM_MAX = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_stem(name: object, fallback: str = "model") -> str:
    """``name`` made safe to use as (the start of) a file name inside an output folder.

    Names come from metadata (a checkpoint's model name, an artifact id) that a crafted file
    controls: anything but ASCII letters, digits, ``_``, ``-`` and ``.`` becomes ``_``, leading
    dots, dashes and underscores go (no hidden files, no ``..``, no option-like names), and the
    result is cut to 64 characters; an empty result is ``fallback``.

    >>> safe_stem("../../evil"), safe_stem("/etc/x"), safe_stem("resnet8"), safe_stem("..")
    ('evil', 'etc_x', 'resnet8', 'model')
    """
    text = _UNSAFE.sub("_", name if isinstance(name, str) else str(name or ""))
    text = text.lstrip("._-")[:STEM_MAX].rstrip(".")
    return text or fallback


def artifact_stem(art: Artifact) -> str:
    """The model name a built file is named after (registry name, else the file's stem),
    made safe by :func:`safe_stem`: a crafted model name never writes outside ``out_dir``."""
    model = art.meta.get("model")
    name = model.get("name") if isinstance(model, Mapping) else None
    return safe_stem(name or Path(art.path).stem.split(".")[0])


def check_precision(target: Target, precision: str) -> None:
    if precision not in target.precisions:
        raise ConfigError(
            f"target {target.name} does not build precision {precision!r}; choose one of {target.precisions}"
        )


def check_build(target: Target, precision: str, availability: Availability | None = None) -> None:
    """The checks every ``build`` starts with: ``precision`` is one ``target`` builds (else
    ``ConfigError``), then its runtime is here (``availability``, default
    ``target.availability()``; else ``TargetUnavailable``)."""
    check_precision(target, precision)
    (target.availability() if availability is None else availability).require(target.name)


def begin_build(
    target: Target,
    art: Artifact,
    precision: str,
    out_dir: str | Path,
    availability: Availability | None = None,
) -> tuple[Path, str]:
    """The common start of a ``build`` that writes files: :func:`check_build`, then ``out_dir``
    created; returns it as a ``Path`` and the stem the built files are named after
    (:func:`artifact_stem`)."""
    check_build(target, precision, availability)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out, artifact_stem(art)
