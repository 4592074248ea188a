"""A user's model as modelpress calls it: one input tensor in, one logits tensor out.

A model that takes more inputs than the data's array (``input_ids`` + ``attention_mask``) is
adapted so that ``model(x)`` derives the others from ``x`` (:mod:`modelpress.feeds`) and passes
them as keywords; the input names are saved in the checkpoint's input spec and applied again on
load.

Models people ship return more than a tensor: a tuple or list (logits first), a dict, or a
``transformers`` ``ModelOutput`` (``.logits``). :func:`pick_logits` takes the logits from any of
those; :func:`adapt_output` makes a model return them, so every pass, export and runtime sees
one tensor. The adapted model keeps its class name, attributes and ``state_dict`` keys (its class
becomes a subclass whose ``forward`` picks the output), so weights, pruning and checkpoints are
unchanged; the choice (``output``) is saved with the checkpoint and applied again on load.

``output``: ``None`` (a tensor), an integer index as text (``"0"``) or a key (``"logits"``).

>>> import torch
>>> pick_logits({"logits": torch.ones(2, 3), "hidden": torch.zeros(2, 8)}, "logits").shape
torch.Size([2, 3])
>>> infer_output((torch.ones(2, 3), torch.zeros(2, 5)))
'0'
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

_ADAPTED = "_modelpress_output"


def _describe(out: Any) -> str:
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {list(out.keys())}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}"
    return f"a {type(out).__name__}"


def infer_output(out: Any) -> str | None:
    """Which part of ``out`` is the logits when the recipe does not say: ``None`` for a tensor,
    ``"0"`` for a tuple/list, ``"logits"`` for a dict / ModelOutput that has it."""
    if isinstance(out, torch.Tensor):
        return None
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return "0"
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return "logits"
    raise ConfigError(
        f"the model returns {_describe(out)}; say which part is the logits with output: "
        "(a key such as logits, or an index such as 0)"
    )


def pick_logits(out: Any, output: str | None) -> torch.Tensor:
    """The logits tensor inside ``out``, as ``output`` names it."""
    if output is None:
        picked = out
    elif isinstance(out, Mapping):
        if output not in out:
            raise ConfigError(
                f"output: {output!r} is not in the model's output ({_describe(out)}); "
                "set output: to one of its keys"
            )
        picked = out[output]
    elif isinstance(out, (tuple, list)) and output.lstrip("-").isdigit():
        index = int(output)
        if not -len(out) <= index < len(out):
            raise ConfigError(
                f"output: {output} is out of range for the model's output ({_describe(out)})"
            )
        picked = out[index]
    else:
        raise ConfigError(
            f"output: {output!r} cannot select from the model's output ({_describe(out)}); "
            "use a key for a dict / ModelOutput, an index for a tuple"
        )
    if not isinstance(picked, torch.Tensor):
        raise ConfigError(
            f"output: {output!r} selects {_describe(picked)}, not a logits tensor; "
            "point output: at the logits"
        )
    return picked


def adapt_output(model: nn.Module, output: str | None, inputs: Sequence[str] = ()) -> nn.Module:
    """Make ``model`` (in place) return ``pick_logits(forward(...), output)``; ``None``: as is.

    ``inputs`` (an input spec's names, e.g. ``("input_ids", "attention_mask")``): ``model(x)``
    also passes every derived input (each name after the first, :mod:`modelpress.feeds`) that
    the call does not give, as a keyword, so code that calls ``model(x)`` feeds them all.
    """
    inputs = tuple(inputs)
    base = type(model)
    if getattr(base, _ADAPTED, None) is not None:  # adapted before: adapt its original class
        base = base.__mro__[1]
    if output is None and len(inputs) < 2:
        model.__class__ = base
        return model
    derived = inputs[1:]

    @functools.wraps(base.forward)  # its signature too: export maps inputs by parameter name
    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if derived and args:
            from .feeds import derive_torch

            for name in derived:
                if name not in kwargs:
                    kwargs[name] = derive_torch(name, args[0])
        out = base.forward(self, *args, **kwargs)
        return out if output is None else pick_logits(out, output)

    if derived:  # callers (torch.export included) may give x alone: the derived are optional
        forward.__signature__ = _optional(inspect.signature(base.forward), derived)
    adapted = type(
        base.__name__,
        (base,),
        {
            "forward": forward,
            _ADAPTED: (output, inputs),
            "__module__": base.__module__,
        },
    )
    model.__class__ = adapted
    return model


def _optional(sig: inspect.Signature, names: tuple[str, ...]) -> inspect.Signature:
    """``sig`` with the parameters ``names`` defaulting to None (as is where it cannot)."""
    params = [
        p.replace(default=None) if p.name in names and p.default is p.empty else p
        for p in sig.parameters.values()
    ]
    try:
        return sig.replace(parameters=params)
    except ValueError:  # a required parameter after them: keep the signature as it is
        return sig


def output_of(model: nn.Module) -> str | None:
    """The ``output`` a model was adapted with (None: it returns its logits itself)."""
    return getattr(type(model), _ADAPTED, (None, ()))[0]


def inputs_of(model: nn.Module) -> tuple[str, ...]:
    """The input names a model was adapted with (empty: it takes one tensor)."""
    return getattr(type(model), _ADAPTED, (None, ()))[1]
