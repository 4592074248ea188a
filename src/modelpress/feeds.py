"""Model inputs derived from the one array a data set gives per sample.

A data set yields one array per sample (token ids, pixels). A model may take more inputs
(``input_ids`` + ``attention_mask``, as ``transformers`` models do): the recipe declares them as
``input: {names: [input_ids, attention_mask]}``, where the first name is the data's array and
every further name is derived from it here, the same way in torch (training, passes, export)
and in numpy (every runtime's feeds):

- ``attention_mask``: 1 where the token is not ``<pad>`` (id 0 in modelpress's vocabulary),
  else 0, in the tokens' dtype;
- ``token_type_ids``: zeros like the tokens (one segment).

>>> import numpy as np
>>> feeds = numpy_feeds(np.array([[5, 7, 0]]), ("input_ids", "attention_mask"))
>>> {k: v.tolist() for k, v in feeds.items()}
{'input_ids': [[5, 7, 0]], 'attention_mask': [[1, 1, 0]]}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a tensor is derived, not to read this module
    import torch

PAD_ID = 0  # <pad> in data/text.py's vocabulary
DERIVABLE: tuple[str, ...] = ("attention_mask", "token_type_ids")


def names_problem(names: Sequence[str], kind: str | None = None) -> str | None:
    """Why ``names`` cannot name a model's inputs (None: they can)."""
    names = list(names)
    if any(not isinstance(n, str) or not n.isidentifier() for n in names):
        return f"input names must be identifiers (e.g. input_ids), got {names}"
    if len(set(names)) != len(names):
        return f"input names must be distinct, got {names}"
    unknown = [n for n in names[1:] if n not in DERIVABLE]
    if unknown:
        return (
            f"input {unknown[0]!r} cannot be derived from the data; the first name is the data's "
            f"array, every further one must be one of {list(DERIVABLE)}"
        )
    if len(names) > 1 and kind not in (None, "tokens"):
        return f"derived inputs {names[1:]} apply to token inputs, not kind {kind!r}"
    return None


def check_names(names: Sequence[str], kind: str | None = None) -> None:
    """Raise ConfigError if ``names`` cannot name a model's inputs (see :func:`names_problem`)."""
    problem = names_problem(names, kind)
    if problem:
        raise ConfigError(problem)


_NUMPY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "attention_mask": lambda x: (x != PAD_ID).astype(x.dtype),
    "token_type_ids": np.zeros_like,
}


def derive_numpy(name: str, x: np.ndarray) -> np.ndarray:
    """The input ``name`` derived from the data's array ``x`` (numpy)."""
    if name not in _NUMPY:
        check_names(["data", name])
    return _NUMPY[name](x)


def derive_torch(name: str, x: torch.Tensor) -> torch.Tensor:
    """The input ``name`` derived from the data's tensor ``x`` (torch; traceable)."""
    import torch

    if name == "attention_mask":
        return (x != PAD_ID).to(x.dtype)
    if name == "token_type_ids":
        return torch.zeros_like(x)
    check_names(["data", name])
    raise AssertionError(name)  # pragma: no cover - check_names raised


def numpy_feeds(x: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Every input by name: ``x`` as the first, the others derived from it."""
    return {name: x if i == 0 else derive_numpy(name, x) for i, name in enumerate(names)}


def torch_kwargs(x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The derived inputs (every name after the first) as keyword arguments."""
    return {name: derive_torch(name, x) for name in list(names)[1:]}


def graph_feeds(
    x: np.ndarray, graph_inputs: Sequence[str], names: Sequence[str], where: str = "model"
) -> dict[str, np.ndarray]:
    """The feeds of a runtime graph whose inputs are ``graph_inputs``: one unnamed input takes
    ``x``; named inputs (``names``, from the input spec) are matched by name (a graph that
    derives an input itself does not take it)."""
    if not names:
        if len(graph_inputs) != 1:
            raise ConfigError(
                f"{where} takes {len(graph_inputs)} inputs {list(graph_inputs)} but its input "
                "spec declares one; declare them with input: {names: [...]}"
            )
        return {graph_inputs[0]: x}
    if names[0] not in graph_inputs or any(g not in names for g in graph_inputs):
        raise ConfigError(
            f"{where} takes inputs {list(graph_inputs)} but its input spec names {list(names)}; "
            "name the inputs as the graph does"
        )
    return {g: x if g == names[0] else derive_numpy(g, x) for g in graph_inputs}


class CalibrationFeeds:
    """A calibration data reader (the ``onnxruntime.quantization`` protocol: ``get_next`` /
    ``rewind``) over an array, in batches, each batch fed as ``feed(batch)`` says."""

    def __init__(
        self, x: np.ndarray, feed: Callable[[np.ndarray], dict[str, Any]], batch: int = 32
    ):
        self.batches = [feed(x[i : i + batch]) for i in range(0, len(x), batch)]
        self.pos = 0

    def get_next(self) -> dict[str, Any] | None:
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return self.batches[self.pos - 1]

    def rewind(self) -> None:
        self.pos = 0

    def __iter__(self):
        self.rewind()
        return iter(self.batches)
