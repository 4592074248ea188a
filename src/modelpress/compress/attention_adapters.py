"""Where each kind of attention module keeps its heads: one small description per kind.

Head pruning (:mod:`.attention_pruning`) works on any module described here. A :class:`Kind`
names the q / k / v projections (one packed linear or three), the output projection (inside the
module, or next to it as in BERT), and the attributes that hold the head count and the widths
derived from it; :func:`find_attention` binds every attention module of a model to its kind.

Kinds: our :class:`~modelpress.models.attention.MultiHeadSelfAttention` (packed ``qkv``),
:class:`~modelpress.models.std_attention.PrunableMultiheadAttention` (what ``nn.MultiheadAttention``
becomes), and from ``transformers``: BERT-style self-attention (``query`` / ``key`` / ``value``,
output ``output.dense`` next to it; also RoBERTa, ELECTRA, ...), ViT / DeiT (``q_proj`` ...
``o_proj``, ``num_attention_heads``, ``head_dim``) and DistilBERT (``q_lin`` ... ``out_lin``,
``n_heads``). ``transformers`` modules are recognised by their module path and attribute names,
never imported here.

>>> from modelpress.models.attention import MultiHeadSelfAttention
>>> [(a.name, a.kind.name, a.heads) for a in find_attention(MultiHeadSelfAttention(32, 4, 8))]
[('', 'modelpress', 4)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..models.attention import MultiHeadSelfAttention
from ..models.std_attention import PrunableMultiheadAttention, swap_multihead_attention


def _sync_std(m: nn.Module) -> None:
    m.embed_dim, m.kdim, m.vdim = (
        m.out_proj.out_features,
        m.k_proj.in_features,
        m.v_proj.in_features,
    )


def _sync_distilbert(m: nn.Module) -> None:
    m.dim = m.q_lin.in_features  # its embedding width (forward reads attention_head_size)


@dataclass(frozen=True)
class Kind:
    """How one kind of attention module keeps its heads."""

    name: str
    ins: tuple[str, ...]  # q, k, v linears: three names, or one packed (q | k | v rows) linear
    out: str  # output linear: an attribute of the module, or of its parent when out_outside
    heads: str  # attribute holding the head count
    head_dim: str  # attribute holding the per-head width (never pruned)
    inner: str | None = None  # attribute holding heads * head_dim, kept in step
    out_outside: bool = False  # output linear lives in the parent (BERT's output.dense)
    sync: Callable[[nn.Module], None] | None = None  # widths to keep in step after a cut
    recorded: tuple[str, ...] = ()  # more attributes saved with a checkpoint
    positional: int = 1  # leading forward arguments that are inputs (query, key, value: 3)
    match: Callable[[nn.Module], bool] = lambda m: False


def _from_transformers(m: nn.Module, *attrs: str) -> bool:
    return type(m).__module__.startswith("transformers.") and all(hasattr(m, a) for a in attrs)


KINDS = (
    Kind(
        "modelpress",
        ("qkv",),
        "proj",
        "num_heads",
        "head_dim",
        match=lambda m: isinstance(m, MultiHeadSelfAttention),
    ),
    Kind(
        "torch",
        ("q_proj", "k_proj", "v_proj"),
        "out_proj",
        "num_heads",
        "head_dim",
        sync=_sync_std,
        recorded=("embed_dim", "kdim", "vdim"),
        positional=3,
        match=lambda m: isinstance(m, PrunableMultiheadAttention),
    ),
    Kind(
        "hf-bert",
        ("query", "key", "value"),
        "output.dense",
        "num_attention_heads",
        "attention_head_size",
        inner="all_head_size",
        out_outside=True,
        match=lambda m: _from_transformers(m, "query", "key", "value", "all_head_size"),
    ),
    Kind(
        "hf-vit",
        ("q_proj", "k_proj", "v_proj"),
        "o_proj",
        "num_attention_heads",
        "head_dim",
        match=lambda m: _from_transformers(m, "q_proj", "o_proj", "num_attention_heads"),
    ),
    Kind(
        "hf-distilbert",
        ("q_lin", "k_lin", "v_lin"),
        "out_lin",
        "n_heads",
        "attention_head_size",
        sync=_sync_distilbert,
        recorded=("dim",),
        match=lambda m: _from_transformers(m, "q_lin", "out_lin", "n_heads"),
    ),
)


@dataclass
class Attention:
    """One attention module of a model, bound to its kind and its output projection."""

    name: str
    module: nn.Module
    kind: Kind
    out: nn.Linear
    cross: bool = False  # keys / values read another tensor than the queries (set by tracing)
    notes: list[str] = field(default_factory=list)

    @property
    def heads(self) -> int:
        return int(getattr(self.module, self.kind.heads))

    @property
    def head_dim(self) -> int:
        return int(getattr(self.module, self.kind.head_dim))

    @property
    def in_linears(self) -> list[nn.Linear]:
        return [getattr(self.module, n) for n in self.kind.ins]

    def blocks(self) -> list[tuple[nn.Linear, int]]:
        """(linear, first row) of the q, k and v blocks: head h owns rows first + h*D + [0, D)."""
        if len(self.kind.ins) == 1:  # packed (3, H, D) rows
            qkv, width = self.in_linears[0], self.heads * self.head_dim
            return [(qkv, 0), (qkv, width), (qkv, 2 * width)]
        return [(lin, 0) for lin in self.in_linears]

    def set_heads(self, n: int) -> None:
        setattr(self.module, self.kind.heads, n)
        if self.kind.inner:
            setattr(self.module, self.kind.inner, n * self.head_dim)
        self.sync()

    def sync(self) -> None:
        if self.kind.sync is not None:
            self.kind.sync(self.module)

    def record(self) -> dict[str, int]:
        """The attributes a rebuilt model must get back (heads and derived widths)."""
        names = (self.kind.heads, self.kind.inner, *self.kind.recorded)
        return {n: int(getattr(self.module, n)) for n in names if n}


def _consistent(m: nn.Module, kind: Kind, out: Any) -> str | None:
    """Why the module does not fit its kind's layout (None: it fits)."""
    ins = [getattr(m, n, None) for n in kind.ins]
    if not all(isinstance(x, nn.Linear) for x in [*ins, out]):
        return "its projections are not nn.Linear"
    try:
        heads, dim = int(getattr(m, kind.heads)), int(getattr(m, kind.head_dim))
    except (TypeError, ValueError):
        return f"{kind.heads} / {kind.head_dim} are not integers"
    inner = heads * dim
    rows = [3 * inner] if len(ins) == 1 else [inner] * 3
    if [x.out_features for x in ins] != rows or out.in_features != inner:
        return (
            f"its projections do not hold {heads} heads of {dim} "
            "(grouped / multi-query keys and values are not supported)"
        )
    return None


def _output_of(model: nn.Module, name: str, m: nn.Module, kind: Kind) -> Any:
    if not kind.out_outside:
        return getattr(m, kind.out, None)
    parent = model.get_submodule(name.rpartition(".")[0]) if name else None
    try:
        return parent.get_submodule(kind.out) if parent is not None else None
    except AttributeError:
        return None


def find_attention(model: nn.Module) -> list[Attention]:
    """Every attention module of ``model`` that one of :data:`KINDS` describes and that is laid
    out as its kind says; the others are listed by :func:`unfit_attention`."""
    found = []
    for name, m in model.named_modules():
        kind = next((k for k in KINDS if k.match(m)), None)
        if kind is None:
            continue
        out = _output_of(model, name, m, kind)
        if _consistent(m, kind, out) is None:
            cross = "Cross" in type(m).__name__ or getattr(m, "is_cross_attention", False)
            found.append(Attention(name, m, kind, out, cross=bool(cross)))
    return found


def unfit_attention(model: nn.Module) -> dict[nn.Module, str]:
    """Modules that look like a known attention kind but do not fit it: module -> why."""
    out = {}
    for name, m in model.named_modules():
        kind = next((k for k in KINDS if k.match(m)), None)
        if kind is not None:
            why = _consistent(m, kind, _output_of(model, name, m, kind))
            if why:
                out[m] = f"{name!r} ({type(m).__name__}): {why}"
    return out


STRUCTURE_ATTR = "modelpress_structure"  # on a model: what a checkpoint must say to rebuild it


def structure_record(model: nn.Module, swapped: list[str]) -> dict[str, Any]:
    """What a checkpoint must say to rebuild ``model``'s attention: the names where
    ``nn.MultiheadAttention`` was swapped and each attention module's head attributes."""
    return {
        "swapped": sorted(set(swapped)),
        "attrs": {a.name: a.record() for a in find_attention(model) if a.name},
    }


def swap_for_pruning(model: nn.Module) -> tuple[list[str], list[str]]:
    """Swap every ``nn.MultiheadAttention`` of ``model`` for the prunable replacement (the same
    outputs); returns (names swapped, notes that say so)."""
    swapped, notes = swap_multihead_attention(model)
    if swapped:
        notes.insert(
            0,
            "nn.MultiheadAttention replaced by modelpress PrunableMultiheadAttention (same "
            f"weights and outputs, heads removable; checkpoints record it): {swapped}",
        )
    return swapped, notes


def remember_structure(model: nn.Module, swapped: list[str]) -> None:
    """Attach :func:`structure_record` to ``model`` (kept with earlier swaps) for checkpoints."""
    earlier = (getattr(model, STRUCTURE_ATTR, None) or {}).get("swapped", [])
    record = structure_record(model, [*earlier, *swapped])
    if record["swapped"] or record["attrs"]:
        setattr(model, STRUCTURE_ATTR, record)


def head_index(
    a: Attention, heads: torch.Tensor
) -> tuple[dict[nn.Linear, torch.Tensor], torch.Tensor]:
    """Rows of each input linear (in block order) and columns of the output owned by ``heads``."""
    d = a.head_dim
    within = heads[:, None] * d + torch.arange(d)[None, :]  # (n, D)
    rows: dict[nn.Linear, list[torch.Tensor]] = {}
    for lin, first in a.blocks():
        rows.setdefault(lin, []).append(first + within)
    return {lin: torch.cat(r, dim=1) for lin, r in rows.items()}, within
