"""Models brought by the user: built by their own factory function, named by an import path.

A checkpoint of such a model names its factory (``package.module:function``) and keyword
arguments instead of a registry entry. Importing a module is running code, so a checkpoint never
imports a factory on its own say: the process must first trust it with :func:`allow_factory`
(as ``torch.serialization.add_safe_globals`` does for classes). A recipe trusts the factories it
names, since the recipe is the user's own file.

After structured pruning the factory builds the original widths; :func:`fit_to_weights` resizes
standard layers (conv, linear, norms, embeddings, GRU/LSTM, bare parameters) to the saved
tensors' shapes before the weights are loaded; what shapes do not say (``nn.MultiheadAttention``
swapped for its prunable replacement, head counts) comes from the checkpoint's structure record.

>>> from modelpress.factory import allow_factory                  # doctest: +SKIP
>>> allow_factory("mypkg.nets:build_model")
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, ConfigError

_TRUSTED: set[str] = set()


def allow_factory(path: str, check: bool = True) -> None:
    """Trust ``package.module:function`` to be imported when a checkpoint names it.

    ``check`` imports it now, to fail early with the reason (a worker process that only passes
    the trust on does not)."""
    if check:
        resolve_factory(path)
    _TRUSTED.add(path)


def add_factory_folder(folder: str | Path) -> None:
    """Let factory modules kept in ``folder`` (a recipe's folder) import.

    The folder goes at the END of ``sys.path``: a file there named like an installed package
    (``json.py``, ``torch.py``, ``onnxruntime.py``) never shadows the real one.
    """
    folder = str(Path(folder).resolve())
    if folder not in sys.path:
        sys.path.append(folder)


def trusted() -> list[str]:
    """The factories this process trusts (passed on to worker processes)."""
    return sorted(_TRUSTED)


def resolve_factory(path: str) -> Callable[..., nn.Module]:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"factory {path!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for factory {path}: {exc}; is it on PYTHONPATH?"
        ) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        where = getattr(module, "__file__", None) or "a built-in module"
        raise ConfigError(
            f"{module_name} (imported from {where}) has no callable {attr!r} (factory {path}); "
            "if an installed module has that name, rename yours"
        )
    return fn


def build_from_factory(path: str, kwargs: dict[str, Any]) -> nn.Module:
    """Call the factory; the result must be an nn.Module. Marks it with its origin."""
    fn = resolve_factory(path)
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"factory {path} rejected its arguments {sorted(kwargs)}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"factory {path} returned {type(model).__name__}, not a torch nn.Module")
    model.modelpress_factory = (path, dict(kwargs))
    return model


def load_trusted(
    path: str,
    kwargs: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    structure: dict[str, Any] | None = None,
) -> nn.Module:
    """Rebuild a factory model for a checkpoint, resized to its tensors (after pruning); a
    ``structure`` record (checkpoint.StructureRef) swaps ``nn.MultiheadAttention`` modules for
    the prunable replacement first and sets head counts after."""
    if path not in _TRUSTED:
        raise CheckpointError(
            f"the checkpoint's model comes from factory {path}; importing it runs code, so trust it "
            f"first: modelpress.factory.allow_factory({path!r})"
        )
    model = build_from_factory(path, kwargs)
    if structure:
        from .models.std_attention import swap_at

        swap_at(model, list(structure.get("swapped", [])))
    fit_to_weights(model, tensors)
    if structure:
        set_int_attrs(model, structure.get("attrs", {}))
        model.modelpress_structure = structure  # saved again with the model
    return model


def set_int_attrs(model: nn.Module, attrs: dict[str, dict[str, int]]) -> None:
    """Set saved integer attributes (head counts, widths derived from them) on named modules:
    only public integer attributes that the rebuilt module already has."""
    for name, values in attrs.items():
        try:
            m = model.get_submodule(name)
        except AttributeError as exc:
            raise ConfigError(
                f"saved module {name!r} is not in the rebuilt model; rebuild with the factory "
                "and arguments that made the checkpoint"
            ) from exc
        for attr, value in values.items():
            old = getattr(m, attr, None)
            if attr.startswith("_") or type(old) is not int or type(value) is not int:
                raise ConfigError(
                    f"saved attribute {name}.{attr}={value!r} does not fit the rebuilt "
                    f"{type(m).__name__} (it has {old!r}); rebuild with the factory that made it"
                )
            setattr(m, attr, value)


def _new_param(like: torch.Tensor | None, shape: torch.Size) -> nn.Parameter | None:
    if like is None:
        return None
    return nn.Parameter(torch.empty(shape, dtype=like.dtype), requires_grad=like.requires_grad)


def _resize_conv(m: nn.modules.conv._ConvNd, w: torch.Tensor) -> None:
    depthwise = m.groups == m.in_channels == m.out_channels and m.groups > 1
    m.out_channels = w.shape[0]
    m.groups = w.shape[0] if depthwise else m.groups
    m.in_channels = w.shape[0] if depthwise else w.shape[1] * m.groups


def _resize_module(name: str, m: nn.Module, tensors: dict[str, torch.Tensor]) -> bool:
    prefix = f"{name}." if name else ""
    own = {
        k[len(prefix) :]: v
        for k, v in tensors.items()
        if k.startswith(prefix) and "." not in k[len(prefix) :]
    }
    changed = [
        k
        for k, v in own.items()
        if hasattr(m, k)
        and isinstance(getattr(m, k), torch.Tensor)
        and tuple(getattr(m, k).shape) != tuple(v.shape)
    ]
    if not changed:
        return False
    w = own.get("weight")
    if isinstance(m, nn.modules.conv._ConvNd) and w is not None:
        _resize_conv(m, w)
    elif isinstance(m, nn.Linear) and w is not None:
        m.out_features, m.in_features = w.shape
    elif isinstance(m, nn.modules.batchnorm._NormBase):
        m.num_features = own["running_mean"].shape[0] if "running_mean" in own else w.shape[0]
    elif isinstance(m, nn.LayerNorm) and w is not None:
        m.normalized_shape = tuple(w.shape)
    elif isinstance(m, nn.Embedding) and w is not None:
        m.num_embeddings, m.embedding_dim = w.shape
    elif isinstance(m, nn.RNNBase):
        m.hidden_size = own["weight_hh_l0"].shape[1]
        m.input_size = own["weight_ih_l0"].shape[1]
    for key in changed:
        old = getattr(m, key)
        if isinstance(old, nn.Parameter):
            setattr(m, key, _new_param(old, own[key].shape))
        else:
            m.register_buffer(key, torch.empty(own[key].shape, dtype=old.dtype))
    if isinstance(m, nn.RNNBase):
        m._init_flat_weights()
    return True


def fit_to_weights(model: nn.Module, tensors: dict[str, torch.Tensor]) -> list[str]:
    """Resize every module whose tensors differ in shape from ``tensors``; the names resized."""
    return [name for name, m in model.named_modules() if _resize_module(name, m, tensors)]
