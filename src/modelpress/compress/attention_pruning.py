"""Pruning of :class:`~modelpress.models.attention.MultiHeadSelfAttention`: whole heads, and
the embedding (residual-stream) width it reads and writes.

Torch-Pruning traces attention through its reshape / permute / unbind ops and couples channels
that do not belong together (its known pain point with fused ``qkv``). Here the module is one
node of the graph (:func:`~modelpress.compress.rnn_pruning.box_hook`) with its own pruner:

- :class:`AttentionPruner` (``customized_pruners``): input channels are the columns of ``qkv``,
  output channels the rows of ``proj``; both are the model's embedding width.
- :func:`prune_heads` removes whole heads: head ``h``'s rows of q, k and v in ``qkv`` and its
  columns of ``proj``. ``num_heads`` follows and ``head_dim`` is unchanged, so the module
  still runs, saves (``current_config`` reads ``num_heads``) and exports.

>>> from modelpress.models.attention import MultiHeadSelfAttention
>>> attn = MultiHeadSelfAttention(dim=32, num_heads=4, head_dim=8)
>>> prune_heads(attn, [1, 2]).num_heads, attn.qkv.out_features, attn.proj.in_features
(2, 48, 16)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch_pruning.pruner.function import BasePruningFunc

from ..errors import BuildError
from ..models.attention import MultiHeadSelfAttention
from .rnn_pruning import Spec

ATTENTION_TYPES = (MultiHeadSelfAttention,)


def _keep(n: int, idxs: Sequence[int]) -> torch.Tensor:
    drop = set(int(i) for i in idxs)
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


def _select(linear: nn.Linear, dim: int, keep: torch.Tensor) -> None:
    """Keep rows (dim 0, bias too) or columns (dim 1) ``keep`` of ``linear``."""
    linear.weight = nn.Parameter(linear.weight.detach().index_select(dim, keep).contiguous())
    if dim == 0:
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.detach()[keep].contiguous())
        linear.out_features = len(keep)
    else:
        linear.in_features = len(keep)


def head_rows(attn: MultiHeadSelfAttention, heads: torch.Tensor) -> torch.Tensor:
    """Rows of ``qkv`` owned by ``heads``: (n, 3 * head_dim), laid out as (3, H, D)."""
    h, d = attn.num_heads, attn.head_dim
    offs = torch.arange(3)[:, None] * h * d + torch.arange(d)[None, :]  # (3, D)
    return (heads[:, None, None] * d + offs[None]).reshape(len(heads), 3 * d)


def head_cols(attn: MultiHeadSelfAttention, heads: torch.Tensor) -> torch.Tensor:
    """Columns of ``proj`` owned by ``heads``: (n, head_dim)."""
    return heads[:, None] * attn.head_dim + torch.arange(attn.head_dim)[None, :]


def prune_heads(attn: MultiHeadSelfAttention, heads: Sequence[int]) -> MultiHeadSelfAttention:
    """Remove whole ``heads`` (indices into ``range(num_heads)``) from ``attn``."""
    keep = _keep(attn.num_heads, heads)
    if len(keep) == attn.num_heads:
        return attn
    if len(keep) == 0:
        raise BuildError(
            f"removing heads {sorted(heads)} would leave no head in {type(attn).__name__}"
        )
    _select(attn.qkv, 0, head_rows(attn, keep).flatten().sort().values)
    _select(attn.proj, 1, head_cols(attn, keep).flatten())
    attn.num_heads = len(keep)
    return attn


def head_specs(attn: MultiHeadSelfAttention) -> list[Spec]:
    """Weight slices of every head (for importance): its qkv rows and bias, its proj columns."""
    heads = torch.arange(attn.num_heads)
    rows = head_rows(attn, heads)
    specs: list[Spec] = [(attn.qkv.weight, 0, rows), (attn.proj.weight, 1, head_cols(attn, heads))]
    if attn.qkv.bias is not None:
        specs.append((attn.qkv.bias, 0, rows))
    return specs


def channel_specs(attn: MultiHeadSelfAttention, is_out: bool, idxs: Sequence[int]) -> list[Spec]:
    """Weight slices of embedding channels ``idxs``: proj rows (out) or qkv columns (in)."""
    idx = torch.as_tensor(list(idxs), dtype=torch.long)[:, None]
    return [(attn.proj.weight, 0, idx)] if is_out else [(attn.qkv.weight, 1, idx)]


class AttentionPruner(BasePruningFunc):
    """Torch-Pruning pruner for the embedding width of a MultiHeadSelfAttention."""

    TARGET_MODULES = ATTENTION_TYPES

    def prune_out_channels(self, layer: MultiHeadSelfAttention, idxs: Sequence[int]):
        _select(layer.proj, 0, _keep(layer.proj.out_features, idxs))
        return layer

    def prune_in_channels(self, layer: MultiHeadSelfAttention, idxs: Sequence[int]):
        _select(layer.qkv, 1, _keep(layer.qkv.in_features, idxs))
        return layer

    def get_out_channels(self, layer: MultiHeadSelfAttention) -> int:
        return layer.proj.out_features

    def get_in_channels(self, layer: MultiHeadSelfAttention) -> int:
        return layer.qkv.in_features
