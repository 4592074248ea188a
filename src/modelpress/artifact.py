"""Artifact: a frozen record of one model on disk, with what it is and where it came from."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .fsutil import bytes_on_disk

Format = Literal["torch", "onnx", "tflite", "tensorrt"]


def stage_id(parent_id: str, stage: str, config: Mapping[str, Any]) -> str:
    """Cache key of a stage's output: hash of (parent id, stage name, stage config)."""
    blob = json.dumps(
        {"parent": parent_id, "stage": stage, "config": config}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Artifact:
    """A model file (or folder) on disk.

    ``meta`` holds the input spec, preprocessing, labels and lineage; ``files`` lists every file
    that belongs to it (an ONNX model with an external ``.data`` file has two).
    """

    path: Path
    format: Format
    id: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[Path, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for results files and worker subprocesses)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "id": self.id,
            "meta": dict(self.meta),
            "files": [str(f) for f in self.files],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Artifact:
        return cls(
            path=Path(d["path"]),
            format=d["format"],
            id=d["id"],
            meta=dict(d.get("meta", {})),
            files=tuple(Path(f) for f in d.get("files", ())),
        )

    @property
    def size_bytes(self) -> int:
        """Bytes on disk of every file of the artifact, but for the graphs a LiteRT artifact
        holds for other batches (``meta["batch_graphs"]``): one graph is deployed."""
        others = set(dict(self.meta or {}).get("batch_graphs", {}).values())
        paths = [p for p in self.files or (self.path,) if Path(p).name not in others]
        return sum(bytes_on_disk(p) for p in paths if Path(p).exists())
