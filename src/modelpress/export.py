"""Export a torch model to ONNX (``torch.onnx.export(..., dynamo=True)``) with a dynamic batch
dimension and the artifact's metadata embedded in ``metadata_props``.

A model with named inputs (``InputSpec.names``, e.g. ``input_ids`` + ``attention_mask``) gets one
graph input per name, each with a dynamic batch axis and, for tokens, a dynamic sequence axis
(up to the spec's length); otherwise the graph has the one input ``input``.

Small models are written as one self-contained ``.onnx`` file; models whose weights approach
protobuf's 2 GiB limit keep them in an external ``<name>.onnx.data`` file, which the returned
artifact lists (and counts in its size).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from .artifact import Artifact, stage_id
from .data.base import InputSpec
from .errors import ArtifactError, BuildError
from .quiet import quiet_logger

if TYPE_CHECKING:  # torch is imported where a model is exported, not to read metadata
    import torch
    from torch import nn

META_KEY = "modelpress"
EXTERNAL_DATA_BYTES = 1 << 30  # above this many parameter bytes, keep weights outside the proto


def deployment_meta(
    parent_meta: dict[str, Any], *, target: str, precision: str, **extra: Any
) -> dict[str, Any]:
    """What a deployed file must say about itself: model, input, preprocessing, labels, lineage."""
    keep = ("model", "input_spec", "labels", "preprocessing", "metrics", "lineage")
    meta = {k: parent_meta[k] for k in keep if k in parent_meta}
    meta["lineage"] = [
        *meta.get("lineage", []),
        {"stage": "build", "target": target, "precision": precision},
    ]
    meta.update(target=target, precision=precision, parent_id=parent_meta.get("id", ""), **extra)
    return meta


def example_batch(spec: InputSpec, batch: int = 2) -> torch.Tensor:
    import torch

    if spec.dtype == "int64":
        return torch.ones((batch, *spec.shape), dtype=torch.int64)
    return torch.zeros((batch, *spec.shape), dtype=torch.float32)


def example_inputs(
    model: nn.Module, spec: InputSpec, x: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """(args, kwargs) that call ``model`` on the batch ``x`` with every input of ``spec``: the
    data's array positionally, the derived inputs (:mod:`modelpress.feeds`) that its forward
    takes as keywords, in the order of its parameters (the order exporters lay graph inputs
    out in). A wrapper whose forward takes ``x`` alone derives the others itself."""
    import inspect

    from .feeds import torch_kwargs

    params = inspect.signature(model.forward).parameters
    order = list(params)
    anything = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in torch_kwargs(x, spec.names).items() if anything or k in params}
    rank = {name: order.index(name) if name in order else len(order) for name in kwargs}
    return (x,), {name: kwargs[name] for name in sorted(kwargs, key=rank.__getitem__)}


def dynamic_shapes(
    model: nn.Module,
    spec: InputSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    batch: Any,
    seq: Any = None,
) -> Any:
    """``torch.export`` dynamic shapes: ``batch`` on axis 0 of every input, and ``seq`` on axis 1
    of token inputs (when given); keyed by the forward's parameter names when there are
    keyword inputs, as ``torch.export`` binds them."""
    import inspect

    axes = {0: batch, 1: seq} if seq is not None and spec.kind == "tokens" else {0: batch}
    if not kwargs:
        return tuple(axes for _ in args)
    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    return {name: axes for name in bound}


def _input_names(spec: InputSpec, kwargs: dict[str, Any]) -> list[str]:
    """The graph's input names, in the order of the inputs (:func:`example_inputs`)."""
    return [spec.names[0], *kwargs] if spec.names else ["input"]


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    """The modelpress metadata embedded in an ONNX file ({} if none)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    return json.loads(props[META_KEY]) if META_KEY in props else {}


def write_onnx_meta(path: Path, meta: dict[str, Any]) -> None:
    """Set the metadata of an ONNX file in place (its external data, if any, is untouched)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=META_KEY, value=json.dumps(meta))
    onnx.save(proto, str(path))


def compact_onnx(path: Path) -> None:
    """Drop the exporter's per-node debug metadata (stack traces, FX nodes: ~30 KB on the
    digits CNN, 10 % of its fp32 size) and name each node after the module that made it
    (``blocks.0.conv1.0/Conv``), so per-layer reports name torch layers."""
    import ast
    from collections import Counter

    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    seen: Counter = Counter()
    for node in proto.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        scopes = props.get("pkg.torch.onnx.name_scopes")
        if scopes:
            try:
                parts = [p for p in ast.literal_eval(scopes)[:-1] if p]
            except (ValueError, SyntaxError):
                parts = []
            base = f"{parts[-1] if parts else 'model'}/{node.op_type}"
            seen[base] += 1
            node.name = base if seen[base] == 1 else f"{base}_{seen[base] - 1}"
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.graph.metadata_props[:]
    onnx.save(proto, str(path))


def onnx_files(path: Path) -> tuple[Path, ...]:
    """The .onnx file and every external data file it references (each checked to lie inside
    the model's folder by :func:`check_external_data`)."""
    path = Path(path)
    return (path, *sorted(path.parent / n for n in set(check_external_data(path))))


def check_external_data(path: str | Path) -> list[str]:
    """The external-data locations of an ONNX file, each checked before anything loads them.

    A location must name a file inside the model's folder: relative, no ``..``, no NUL, no
    drive, and no symlink on the way that leads out of the folder. Otherwise loading the model
    would read (and a copy would ship) any file on the machine, e.g. ``/etc/passwd``.

    >>> check_external_data("out/big.fp32.onnx")                      # doctest: +SKIP
    ['big.fp32.onnx.data']
    """
    import onnx

    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError, OSError, ...: the protobuf itself does not parse
        raise ArtifactError(
            f"cannot read ONNX model {path} ({type(exc).__name__}): the file is missing, "
            "truncated or corrupt: rebuild it or export it again"
        ) from exc
    folder = path.parent.resolve()
    locations = []
    for tensor in _all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        if not _inside(folder, path.parent, location):
            raise ArtifactError(
                f"ONNX model {path}: tensor {tensor.name!r} has external data location "
                f"{location!r} outside the model's folder; keep external data files beside the "
                ".onnx (relative names, no '..', no absolute paths, no links out) and save it again"
            )
        locations.append(location)
    return locations


def _inside(folder: Path, parent: Path, location: str) -> bool:
    """Whether ``location`` (relative to ``parent``, whose real path is ``folder``) stays inside."""
    if not location or "\x00" in location:
        return False
    as_windows = PureWindowsPath(location)  # splits on / and \ alike
    if PurePosixPath(location).is_absolute() or as_windows.drive or as_windows.root:
        return False
    if ".." in as_windows.parts:
        return False
    return (parent / location).resolve().is_relative_to(folder)


def _all_tensors(proto: Any) -> Iterator[Any]:
    """Every TensorProto of a model: initializers, sparse ones, node attributes, subgraphs."""
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        sparse = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
        for s in [*sparse, *attr.sparse_tensors]:
            yield from (s.values, s.indices)
        if attr.HasField("g"):
            yield from _graph_tensors(attr.g)
        for g in attr.graphs:
            yield from _graph_tensors(g)


def copy_onnx(src: Path, dest: Path) -> tuple[Path, ...]:
    """Copy an ONNX model to ``dest`` with its external data files (checked first, kept at the
    same relative locations beside ``dest``); returns the copied files, graph first."""
    src, dest = Path(src), Path(dest)
    files = onnx_files(src)
    for f in files[1:]:
        target = dest.parent / f.relative_to(src.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    shutil.copy2(src, dest)
    return onnx_files(dest)


def export_onnx(
    model: nn.Module,
    spec: InputSpec,
    dest: str | Path,
    meta: dict[str, Any],
    *,
    opset: int | None = None,
    parent_id: str = "",
) -> Artifact:
    """Export ``model`` (eval mode) to ``dest`` atomically, batch dimension dynamic (and the
    sequence dimension of named token inputs)."""
    import torch

    dest = Path(dest)
    model = model.eval()
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    batch = torch.export.Dim("batch", min=1, max=65536)
    args, kwargs = example_inputs(model, spec, example_batch(spec))
    # a graph captured at the spec's length (a QAT wrapper taking x alone) keeps that length
    every = bool(spec.names) and len(kwargs) == len(spec.names) - 1
    long = every and spec.kind == "tokens" and spec.shape[0] > 2
    seq = torch.export.Dim("seq", min=1, max=spec.shape[0]) if long else None
    shapes = dynamic_shapes(model, spec, args, kwargs, batch, seq)
    with tempfile.TemporaryDirectory(dir=dest.parent if dest.parent.exists() else None) as tmp:
        out = Path(tmp) / dest.name
        try:
            with warnings.catch_warnings(), _quiet_exporter():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    args,
                    str(out),
                    kwargs=kwargs or None,
                    dynamo=True,
                    verbose=False,
                    input_names=_input_names(spec, kwargs),
                    output_names=["logits"],
                    dynamic_shapes=shapes,
                    external_data=nbytes > EXTERNAL_DATA_BYTES,
                    opset_version=opset,
                )
        except Exception as exc:  # the exporter raises many types; name the model and the op
            raise BuildError(
                f"ONNX export of {type(model).__name__} failed: {_first_line(exc)}"
            ) from exc
        compact_onnx(out)
        write_onnx_meta(out, meta)
        files = onnx_files(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for f in files[1:]:  # data first, then the graph that points at it
            shutil.move(str(f), dest.parent / f.name)
        shutil.move(str(out), dest)
    art_id = stage_id(parent_id, "onnx", {"precision": meta.get("precision"), "opset": opset})
    return Artifact(path=dest, format="onnx", id=art_id, meta=meta, files=onnx_files(dest))


def _quiet_exporter():
    """Silence the exporter's INFO/WARNING chatter (e.g. 'torchvision is not installed')."""
    return quiet_logger("torch.onnx")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
