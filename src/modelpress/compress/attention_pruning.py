"""Pruning of attention modules (every kind :mod:`.attention_adapters` describes): whole heads,
and the embedding (residual-stream) width they read and write.

Torch-Pruning traces attention through its reshape / permute / matmul ops and couples channels
that do not belong together (its known pain point with fused ``qkv``; with stock
``nn.MultiheadAttention`` it cuts inside heads and the reshape fails). Here each attention
module is one node of the graph (:func:`attention_box_hook`) with its own pruner:

- :class:`AttentionPruner` (``customized_pruners``): input channels are the columns of q, k
  and v, output channels the rows of the output projection; both are the embedding width. A
  module whose output projection lives next to it (BERT's ``output.dense``) has the inner
  width as output: that is never cut by channel (only by whole heads).
- :func:`prune_heads` removes whole heads: head ``h``'s rows of q, k and v and its columns of
  the output projection. The head count and every width derived from it follow; ``head_dim`` is
  unchanged, so the module still runs, saves and exports.

>>> from modelpress.models.attention import MultiHeadSelfAttention
>>> attn = MultiHeadSelfAttention(dim=32, num_heads=4, head_dim=8)
>>> prune_heads(attn, [1, 2]).num_heads, attn.qkv.out_features, attn.proj.in_features
(2, 48, 16)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch_pruning.pruner.function import BasePruningFunc

from ..errors import BuildError
from .attention_adapters import Attention, find_attention, head_index
from .rnn_pruning import Spec

SOURCE_NAMES = ("x", "query", "key", "value", "hidden_states", "encoder_hidden_states")


def _keep(n: int, idxs: Sequence[int]) -> torch.Tensor:
    drop = set(int(i) for i in idxs)
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


def _select(linear: nn.Linear, dim: int, keep: torch.Tensor) -> None:
    """Keep rows (dim 0, bias too) or columns (dim 1) ``keep`` of ``linear``."""
    old = linear.weight
    new = old.detach().index_select(dim, keep).contiguous()
    linear.weight = nn.Parameter(new, requires_grad=old.requires_grad)
    if dim == 0:
        if linear.bias is not None:
            b = linear.bias
            linear.bias = nn.Parameter(b.detach()[keep].contiguous(), requires_grad=b.requires_grad)
        linear.out_features = len(keep)
    else:
        linear.in_features = len(keep)


def _distinct(linears: list[nn.Linear]) -> list[nn.Linear]:
    return list({id(lin): lin for lin in linears}.values())


def as_attention(attn: nn.Module | Attention) -> Attention:
    """``attn`` bound to its kind; a module whose output projection lives in its parent must
    come bound already (from :func:`find_attention` on the whole model)."""
    if isinstance(attn, Attention):
        return attn
    found = [a for a in find_attention(attn) if a.module is attn]
    if not found:
        raise BuildError(
            f"{type(attn).__name__} is not an attention module modelpress can prune heads of "
            "on its own; pass the Attention that find_attention(model) returns for it"
        )
    return found[0]


def prune_heads(attn: nn.Module | Attention, heads: Sequence[int]) -> nn.Module:
    """Remove whole ``heads`` (indices into ``range(num_heads)``) from ``attn``."""
    a = as_attention(attn)
    keep = _keep(a.heads, heads)
    if len(keep) == a.heads:
        return a.module
    if len(keep) == 0:
        raise BuildError(
            f"removing heads {sorted(heads)} would leave no head in {type(a.module).__name__}"
        )
    rows, cols = head_index(a, keep)
    for lin, r in rows.items():
        _select(lin, 0, r.flatten().sort().values)
    _select(a.out, 1, cols.flatten())
    a.set_heads(len(keep))
    return a.module


def head_specs(attn: nn.Module | Attention) -> list[Spec]:
    """Weight slices of every head (for importance): its q / k / v rows and biases, its columns
    of the output projection."""
    a = as_attention(attn)
    rows, cols = head_index(a, torch.arange(a.heads))
    specs: list[Spec] = [(lin.weight, 0, r) for lin, r in rows.items()]
    specs += [(lin.bias, 0, r) for lin, r in rows.items() if lin.bias is not None]
    return [*specs, (a.out.weight, 1, cols)]


def channel_specs(attn: nn.Module | Attention, is_out: bool, idxs: Sequence[int]) -> list[Spec]:
    """Weight slices of embedding channels ``idxs``: output rows (out) or q/k/v columns (in)."""
    a = as_attention(attn)
    idx = torch.as_tensor(list(idxs), dtype=torch.long)[:, None]
    if is_out:
        return [] if a.kind.out_outside else [(a.out.weight, 0, idx)]
    return [(lin.weight, 1, idx) for lin in _distinct(a.in_linears)]


class AttentionPruner(BasePruningFunc):
    """Torch-Pruning pruner for the embedding width of an attention module (any kind)."""

    def __init__(self, bound: dict[nn.Module, Attention] | None = None):
        super().__init__()
        self.bound = bound or {}

    def _of(self, layer: nn.Module) -> Attention | None:
        try:
            return self.bound.get(layer) or as_attention(layer)
        except BuildError:  # a module of the same class that does not fit: left frozen
            return None

    def _cut(self, layer: nn.Module) -> Attention:
        a = self._of(layer)
        if a is None:
            raise BuildError(f"{type(layer).__name__} does not fit its attention kind; kept as is")
        return a

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        a = self._cut(layer)
        if a.kind.out_outside:
            raise BuildError(
                f"{type(layer).__name__} outputs its heads' width: it shrinks by whole heads only"
            )
        _select(a.out, 0, _keep(a.out.out_features, idxs))
        a.sync()
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        a = self._cut(layer)
        for lin in _distinct(a.in_linears):
            _select(lin, 1, _keep(lin.in_features, idxs))
        a.sync()
        return layer

    def get_out_channels(self, layer: nn.Module) -> int | None:
        a = self._of(layer)
        if a is None:
            return None
        return a.out.in_features if a.kind.out_outside else a.out.out_features

    def get_in_channels(self, layer: nn.Module) -> int | None:
        a = self._of(layer)
        return None if a is None else a.in_linears[0].in_features


class _Box(torch.autograd.Function):
    """One autograd node standing for a whole module while the graph is traced: the module's
    output values, linked to its input tensors only (not to its internal ops)."""

    @staticmethod
    def forward(ctx, anchor, n_sources, *tensors):  # anchor: a parameter, so outputs need grad
        ctx.count = len(tensors)
        return tuple(t.clone() for t in tensors[n_sources:])

    @staticmethod
    def backward(ctx, *grads):  # never run: tracing reads the graph, it does not backprop
        return (None, None, *([None] * ctx.count))


def _sources(args: tuple, kwargs: dict, positional: int) -> list[torch.Tensor]:
    found = [*args[:positional], *(kwargs.get(n) for n in SOURCE_NAMES)]
    out: list[torch.Tensor] = []
    for t in found:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and all(t is not s for s in out):
            out.append(t)
    return out


def attention_box_hook(positional: int = 1, on_cross: Callable[[], None] | None = None) -> Callable:
    """A forward hook (``with_kwargs=True``) tracing a module as one node from its input
    tensors (the first ``positional`` arguments, and keyword ``query`` / ``hidden_states`` /
    ...) to its output tensors; ``on_cross`` is called when they are more than one tensor."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> object:
        sources = _sources(args, kwargs, positional)
        if len(sources) > 1 and on_cross is not None:
            on_cross()
        outs = output if isinstance(output, tuple) else (output,)
        where = [i for i, o in enumerate(outs) if isinstance(o, torch.Tensor)]
        if not where or not sources:
            return output
        anchor = next(module.parameters())
        values = [outs[i].detach() for i in where]
        boxed = iter(_Box.apply(anchor, len(sources), *sources, *values))
        new = tuple(next(boxed) if i in where else o for i, o in enumerate(outs))
        return new if isinstance(output, tuple) else new[0]

    return hook
