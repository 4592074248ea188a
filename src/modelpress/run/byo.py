"""Bring your own model: a recipe model given as a factory + weights, or as a ready .onnx file.

- ``factory: package.module:function`` (+ ``kwargs``) builds the nn.Module; ``weights`` is a
  ``.safetensors`` state dict or a ``.pt`` file read with ``torch.load(weights_only=True)``;
  ``input`` says what one sample looks like (``names: [input_ids, attention_mask]`` for a model
  that takes inputs derived from the data's array, see :mod:`.feeds`). The recipe's folder is
  appended to ``sys.path`` (after the installed packages, which it cannot shadow) so a factory
  module kept beside the recipe imports. The model is validated on the recipe's data
  (the view given by ``view:`` or ``input.kind``) and saved as a modelpress checkpoint, after
  which every torch pass and target treats it like a registry model.
- ``onnx: model.onnx`` goes to the ONNX Runtime and TensorRT targets as it is; torch passes and
  torch-only targets are skipped with a note. Its inputs are checked against ``input:`` first
  (count, shape, dtype, a dynamic batch axis), and its own fp32 run on ONNX Runtime is the float
  reference that its int8 artifacts' accuracy drop and agreement are measured against.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..artifact import Artifact
from ..data.base import DataBundle, InputSpec
from ..errors import ConfigError
from ..fsutil import sha256_file
from .stages import artifact_from_manifest, artifact_to_manifest
from .state import ModelRun

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .recipe import ModelSection


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from .pt with weights_only=True (never a pickle)."""
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(
                f"cannot read {path} with weights_only=True: {exc}; save a state_dict"
            ) from exc
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ConfigError(
                f"{path} does not hold a state dict of tensors; save model.state_dict()"
            )
        return obj
    raise ConfigError(f"weights {path} must be .safetensors or .pt (state dict)")


def _spec(m: ModelSection) -> InputSpec:
    return InputSpec(
        kind=m.input.kind, shape=tuple(m.input.shape), dtype=m.input.dtype, names=m.input.names
    )


def _named(data: DataBundle, names: tuple[str, ...]) -> DataBundle:
    """``data`` whose input spec carries the model's input names (saved with its checkpoints,
    read by every export and runtime); the splits are shared, not copied."""
    if not names:
        return data
    return dataclasses.replace(data, input_spec=dataclasses.replace(data.input_spec, names=names))


def _resolve(pipe: Pipeline, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (pipe.recipe_path.parent / path)


def import_model(pipe: Pipeline, label: str, m: ModelSection) -> ModelRun:

    spec = _spec(m)
    data = pipe.data(m.view or spec.kind)
    if tuple(data.input_spec.shape) != spec.shape:
        raise ConfigError(
            f"models.{label}.input shape {list(spec.shape)} does not match the data's "
            f"{data.input_spec.kind} view {list(data.input_spec.shape)}; fix input: or data: (resize:)"
        )
    data = _named(data, spec.names)
    if m.onnx:
        run = ModelRun(
            label=label, family="user", data=data, baseline=_import_onnx(pipe, label, m, data)
        )
        if pipe.recipe.passes_for(label):
            run.notes.append("torch passes skipped: the model was given as an .onnx file")
            pipe.log(f"  [note]   {label}: torch passes skipped (the model is an .onnx file)")
        return run
    run = ModelRun(
        label=label, family="user", data=data, baseline=_import_factory(pipe, label, m, data)
    )
    pipe.run_chain(run, m)
    return run


def _import_factory(pipe: Pipeline, label: str, m: ModelSection, data) -> Artifact:
    from ..checkpoint import save_trained
    from ..factory import add_factory_folder, allow_factory, build_from_factory
    from ..model_io import adapt_output, infer_output, pick_logits
    from ..train import evaluate

    add_factory_folder(pipe.recipe_path.parent)
    allow_factory(m.factory)
    weights = _resolve(pipe, m.weights) if m.weights else None
    config = {
        "factory": m.factory,
        "kwargs": m.kwargs,
        "output": m.output,
        "input": m.input.config(),
        "weights": sha256_file(weights) if weights else None,
        "data": data.preprocessing.get("data_config"),
    }

    def build(tmp: Path) -> dict[str, Any]:
        model = build_from_factory(m.factory, m.kwargs)
        model.modelpress_label = label
        if weights is not None:
            state = load_weights(weights)
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ConfigError(
                    f"models.{label}.weights do not fit the factory's model: "
                    f"missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}"
                )
        model.eval()
        adapt_output(model, None, data.input_spec.names)  # model(x) feeds the derived inputs
        try:
            with torch.no_grad():
                raw = model(torch.as_tensor(data.test.x[:2]))
        except Exception as exc:
            raise ConfigError(
                f"models.{label} does not run on input {list(data.input_spec.shape)}: {exc}"
            ) from exc
        try:
            output = infer_output(raw) if m.output is None else str(m.output)
            out = pick_logits(raw, output)
        except ConfigError as exc:
            raise ConfigError(f"models.{label}: {exc}") from exc
        adapt_output(model, output, data.input_spec.names)  # from here on: the logits tensor
        if tuple(out.shape) != (2, data.num_classes):
            raise ConfigError(
                f"models.{label} returns {tuple(out.shape)} for a batch of 2; expected "
                f"(2, {data.num_classes}) logits for the data's {data.num_classes} classes"
            )
        acc = evaluate(model, data.test)["accuracy"]
        art = save_trained(
            tmp / f"{label}.safetensors",
            model,
            data,
            metrics={"test_accuracy": acc},
            lineage=[{"stage": "import", "factory": m.factory}],
        )
        return {"artifact": artifact_to_manifest(art, tmp), "test_accuracy": acc}

    folder_, manifest = pipe.cache.run("import", pipe.cache.key("import", "", config), build, label)
    return artifact_from_manifest(manifest["artifact"], folder_)


def _check_onnx_names(src: Path, names: tuple[str, ...], where: str) -> None:
    from ..onnx_inputs import graph_inputs

    given = [name for name, _, _ in graph_inputs(src)]
    if names and sorted(given) != sorted(names):
        raise ConfigError(
            f"{where}: {src.name} has inputs {given} but input.names declares {list(names)}; "
            "name the inputs as the file does"
        )


def _import_onnx(pipe: Pipeline, label: str, m: ModelSection, data) -> Artifact:
    from ..export import check_external_data, copy_onnx, onnx_files, write_onnx_meta

    src = _resolve(pipe, m.onnx)
    if not src.is_file():
        raise ConfigError(f"models.{label}.onnx: {src} does not exist")
    check_external_data(src)  # a user's file: its external data must stay beside it
    from ..onnx_inputs import check_onnx_input

    names = tuple(m.input.names)
    where = f"models.{label}.onnx"
    check_onnx_input(src, tuple(m.input.shape), m.input.dtype, where, count=max(1, len(names)))
    _check_onnx_names(src, names, where)
    config = {
        "onnx": sha256_file(src),
        "input": m.input.config(),
        "data": data.preprocessing.get("data_config"),
    }
    meta = {
        "model": {"name": label, "config": {}},
        "input_spec": data.input_spec.to_dict(),
        "labels": data.labels,
        "preprocessing": data.preprocessing,
        "metrics": {},
        "lineage": [{"stage": "import", "onnx": src.name}],
    }

    def build(tmp: Path) -> dict[str, Any]:
        dest = tmp / f"{label}.onnx"
        copy_onnx(src, dest)
        write_onnx_meta(dest, meta)
        key = pipe.cache.key("import", "", config)
        art = Artifact(
            path=dest, format="onnx", id=key, meta={**meta, "id": key}, files=onnx_files(dest)
        )
        return {"artifact": artifact_to_manifest(art, tmp)}

    folder, manifest = pipe.cache.run("import", pipe.cache.key("import", "", config), build, label)
    return artifact_from_manifest(manifest["artifact"], folder)
