"""Checkpoints: one ``.safetensors`` file whose header carries the JSON that describes it.

The JSON (safetensors metadata key ``modelpress``) holds the model's registry name and config,
the input spec, preprocessing (normalisation, vocabulary), labels, metrics and lineage, plus a
digest over that JSON and the tensor bytes. Loading parses JSON and raw tensors only: no code
from the file runs. A tampered JSON, a truncated file or weights that do not fit the config
each raise a one-line :class:`CheckpointError`.

>>> from modelpress.checkpoint import load_checkpoint      # doctest: +SKIP
>>> ckpt = load_checkpoint("runs/digits/resnet8.safetensors")
>>> ckpt.model(torch.zeros(1, 1, 8, 8)).shape
torch.Size([1, 10])
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError
from torch import nn

from . import __version__
from .artifact import Artifact
from .data.base import DataBundle, InputSpec
from .errors import CheckpointError, ConfigError, one_line
from .fsutil import atomic_path

FORMAT = "modelpress.checkpoint"
VERSION = 1
META_KEY = "modelpress"


class StructureRef(BaseModel):
    """How a pruned factory model differs from what its factory builds, beyond tensor shapes
    (applied by factory.load_trusted): swapped attention modules, head counts."""

    model_config = ConfigDict(extra="forbid")
    swapped: list[str] = []  # nn.MultiheadAttention -> models.std_attention replacement
    attrs: dict[str, dict[str, StrictInt]] = {}  # module name -> integer attributes to set


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str  # registry name, or the user's label for a factory model
    config: dict[str, Any]  # registry config, or the factory's keyword arguments
    factory: str | None = None  # "package.module:function" for a user's model (see factory.py)
    output: str | None = None  # which part of a factory model's output is the logits (model_io)
    structure: StructureRef | None = None  # a pruned factory model's attention structure


class CheckpointMeta(BaseModel):
    """Schema of the JSON inside a checkpoint."""

    model_config = ConfigDict(extra="forbid")
    format: str
    version: int
    id: str
    model: ModelRef
    input_spec: dict[str, Any]
    labels: list[str]
    preprocessing: dict[str, Any]
    metrics: dict[str, Any] = {}
    train: dict[str, Any] = {}
    lineage: list[dict[str, Any]] = []
    toolkit: dict[str, str] = {}
    dtype: str = "float32"  # of the floating-point weights; float16 files load into float32 modules
    digest: str = ""


@dataclass
class Checkpoint:
    model: nn.Module
    meta: CheckpointMeta
    artifact: Artifact

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_dict(self.meta.input_spec)


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> hashlib._Hash:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(
            t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        )
    return h


def _digest(meta: CheckpointMeta, tensors: dict[str, torch.Tensor]) -> str:
    h = _tensor_digest(tensors)
    # dtype joined the schema later: left out at its default so older files keep their digest
    exclude: dict[str, Any] = {"digest": True}
    if meta.dtype == "float32":
        exclude["dtype"] = True
    late = {"factory", "output", "structure"}  # joined the schema later: left out while unset
    unset = {k: True for k in late if getattr(meta.model, k) is None}
    if unset:
        exclude["model"] = unset
    body = meta.model_dump(exclude=exclude)
    h.update(json.dumps(body, sort_keys=True).encode())
    return h.hexdigest()


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    out, seen = {}, set()
    for key, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        out[key] = t.clone() if ptr in seen else t  # safetensors refuses shared storage
        if ptr is not None:
            seen.add(ptr)
    return out


def _float_dtype(tensors: dict[str, torch.Tensor]) -> str:
    kinds = {str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "float32")


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    input_spec: InputSpec,
    labels: list[str],
    preprocessing: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    lineage: list[dict[str, Any]] | None = None,
    parent_id: str = "",
) -> Artifact:
    """Write ``model`` (a registry or factory model) and its description atomically to ``path``."""
    from safetensors.torch import save_file

    from .artifact import stage_id

    ref = model_ref(model)
    name, config = ref.name, ref.config
    tensors = _state_tensors(model)
    meta = CheckpointMeta(
        format=FORMAT,
        version=VERSION,
        id="",
        model=ref,
        input_spec=input_spec.to_dict(),
        labels=list(labels),
        preprocessing=preprocessing,
        metrics=metrics or {},
        train=train or {},
        lineage=lineage or [],
        toolkit={"modelpress": __version__, "torch": torch.__version__},
        dtype=_float_dtype(tensors),
    )
    meta.id = stage_id(
        parent_id,
        "checkpoint",
        {"model": name, "config": config, "weights": _tensor_digest(tensors).hexdigest()},
    )
    meta.digest = _digest(meta, tensors)
    path = Path(path)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: meta.model_dump_json()})
    return Artifact(path=path, format="torch", id=meta.id, meta=meta.model_dump(), files=(path,))


def model_ref(model: nn.Module) -> ModelRef:
    """How to rebuild ``model``: its registry name and current config, or its factory."""
    from .models import config_to_dict

    name = getattr(model, "registry_name", None)
    if name is not None and hasattr(model, "current_config"):
        return ModelRef(name=name, config=config_to_dict(model.current_config()))
    factory = getattr(model, "modelpress_factory", None)
    if factory is not None:
        path, kwargs = factory
        from .model_io import output_of

        label = getattr(model, "modelpress_label", path.rpartition(":")[2])
        structure = getattr(model, "modelpress_structure", None)  # set by compress.prune
        return ModelRef(
            name=label, config=kwargs, factory=path, output=output_of(model), structure=structure
        )
    raise ConfigError(
        f"{type(model).__name__} is neither a registry model (create_model()) nor a factory model "
        "(modelpress.factory.build_from_factory()); modelpress cannot rebuild it from a checkpoint"
    )


def save_trained(path: str | Path, model: nn.Module, data: DataBundle, **kwargs: Any) -> Artifact:
    """:func:`save_checkpoint` with input spec, labels and preprocessing taken from ``data``."""
    return save_checkpoint(
        path,
        model,
        input_spec=data.input_spec,
        labels=data.labels,
        preprocessing=data.preprocessing,
        **kwargs,
    )


_MAX_HEADER = 100_000_000  # safetensors' own limit on the size of the JSON header
_RESAVE = "restore the original file or save it again with modelpress"


def _tensor_end(header: dict[str, Any]) -> int | None:
    """Where the last tensor's bytes end (relative to the data), None if the header is odd."""
    ends = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            return None
        ends.append(offsets[1])
    return max(ends, default=0) if all(type(e) is int for e in ends) else None


def check_layout(path: Path) -> None:
    """The safetensors framing of ``path`` (8-byte length, JSON header, tensor bytes), so that a
    truncated or corrupted file is a CheckpointError that says at which byte it breaks."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size < 8:
            raise CheckpointError(
                f"checkpoint {path} is truncated: {size} byte(s), fewer than the 8 of the header "
                f"length at byte offset 0; {_RESAVE}"
            )
        n = int.from_bytes(fh.read(8), "little")
        if n > min(size - 8, _MAX_HEADER):
            raise CheckpointError(
                f"checkpoint {path} is truncated or not safetensors: the header length at byte "
                f"offset 0 says {n:,} bytes of JSON and the file holds {size - 8:,} "
                f"after it; {_RESAVE}"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        at, why = 8 + exc.start, "is not UTF-8"
    except json.JSONDecodeError as exc:  # a char index: the same as bytes for ASCII JSON
        at, why = 8 + exc.pos, f"breaks the JSON header ({exc.msg})"
    except (ValueError, RecursionError) as exc:
        at, why = 8, f"starts a JSON header that cannot be read ({one_line(exc)})"
    else:
        end = _tensor_end(header) if isinstance(header, dict) else None
        if end is None or 8 + n + end == size:
            return
        at = 8 + n + end
        why = f"is where the tensors end, but the file has {size:,} bytes"
    raise CheckpointError(
        f"checkpoint {path} is truncated or corrupt: byte offset {at:,} {why}; {_RESAVE}"
    )


def read_meta(path: str | Path) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """Parse and verify a checkpoint's JSON and tensors without building the model; a missing,
    truncated or corrupted file (any byte) is a one-line CheckpointError."""
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; train one with `modelpress train`"
        )
    try:
        check_layout(path)
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path))
    except CheckpointError:
        raise
    except Exception as exc:  # the file's bytes are untrusted: whatever the parser says, say it
        raise CheckpointError(
            f"cannot read checkpoint {path}: {one_line(exc)}; the file is truncated or not "
            f"safetensors; {_RESAVE}"
        ) from exc
    if META_KEY not in header:
        raise CheckpointError(
            f"{path} has no modelpress metadata; it was not written by modelpress"
        )
    try:
        meta = CheckpointMeta.model_validate_json(header[META_KEY])
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise CheckpointError(
            f"checkpoint {path}: metadata is invalid at {where!r}: {err['msg']}"
        ) from exc
    if meta.format != FORMAT or meta.version > VERSION:
        raise CheckpointError(
            f"{path} is {meta.format} v{meta.version}; this modelpress reads {FORMAT} up to v{VERSION}"
        )
    try:
        digest = _digest(meta, tensors)
    except (
        RuntimeError,
        TypeError,
        ValueError,
    ) as exc:  # a dtype edited into one torch cannot view
        raise CheckpointError(f"checkpoint {path}: its tensors cannot be read: {exc}") from exc
    if meta.digest != digest:
        raise CheckpointError(
            f"checkpoint {path} failed its digest check: its JSON or weights were edited or corrupted; "
            "restore the original file or save it again with modelpress"
        )
    return meta, tensors


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the model of a checkpoint, in eval mode, with every check of :func:`read_meta`."""
    from .models import model_from_config

    meta, tensors = read_meta(path)
    try:
        if meta.model.factory:
            from .factory import load_trusted
            from .model_io import adapt_output

            structure = meta.model.structure and meta.model.structure.model_dump()
            model = load_trusted(meta.model.factory, meta.model.config, tensors, structure)
            adapt_output(model, meta.model.output, InputSpec.from_dict(meta.input_spec).names)
            model.modelpress_label = meta.model.name
        else:
            model = model_from_config(meta.model.name, meta.model.config)
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    _load_strict(model, tensors, path)
    model.eval()
    artifact = Artifact(
        path=Path(path), format="torch", id=meta.id, meta=meta.model_dump(), files=(Path(path),)
    )
    return Checkpoint(model=model, meta=meta, artifact=artifact)


def _load_strict(model: nn.Module, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"checkpoint {path}: config does not match weights (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, t in expected.items():
        if tuple(t.shape) != tuple(tensors[key].shape):
            raise CheckpointError(
                f"checkpoint {path}: config does not match weights: {key} is {tuple(tensors[key].shape)} "
                f"in the file but the config builds {tuple(t.shape)}"
            )
    model.load_state_dict(tensors, strict=True)
