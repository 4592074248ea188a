"""A drop-in ``nn.MultiheadAttention`` whose heads can be removed.

Stock ``nn.MultiheadAttention`` packs q, k and v into one ``in_proj_weight`` and ties its inner
width (``num_heads * head_dim``) to ``embed_dim``: no head can leave it. :class:`PrunableMultiheadAttention`
keeps separate ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj`` linears and its own
``head_dim``; its forward takes the stock arguments and returns the stock ``(output, weights)``,
in plain tensor ops (matmul, softmax, no fused kernel) so that it exports to ONNX and LiteRT.
:func:`from_torch` copies a stock module's weights exactly; :func:`swap_multihead_attention`
replaces every stock module of a model, :func:`swap_at` those at given names (on reload).

>>> mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
>>> new = from_torch(mha).eval()
>>> x = torch.randn(2, 5, 16)
>>> torch.allclose(new(x, x, x)[0], mha(x, x, x)[0], atol=1e-5)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


class PrunableMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with separate projections and a free ``head_dim``."""

    # read by nn.TransformerEncoderLayer / nn.TransformerEncoder: with these values they skip
    # their fused fast path (written for the stock module's packed weights) and call forward
    _qkv_same_embed_dim = False
    in_proj_weight = None
    in_proj_bias = None
    bias_k = None
    bias_v = None
    add_zero_attn = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        head_dim: int | None = None,
    ):
        super().__init__()
        if head_dim is None:
            if num_heads < 1 or embed_dim % num_heads:
                raise ConfigError(
                    f"embed_dim {embed_dim} is not a multiple of num_heads {num_heads}; "
                    "give head_dim= or change num_heads"
                )
            head_dim = embed_dim // num_heads
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.dropout, self.batch_first = float(dropout), batch_first
        inner = num_heads * head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias)
        self.k_proj = nn.Linear(self.kdim, inner, bias=bias)
        self.v_proj = nn.Linear(self.vdim, inner, bias=bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)

    def _split(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return linear(x).reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:  # (L, E): one sample
            query, key, value = query[None], key[None], value[None]
            key_padding_mask = None if key_padding_mask is None else key_padding_mask[None]
        elif not self.batch_first:  # (L, B, E) -> (B, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, tq, ts = query.shape[0], query.shape[1], key.shape[1]
        q = self._split(self.q_proj, query) * self.head_dim**-0.5  # (B, H, L, D)
        k, v = self._split(self.k_proj, key), self._split(self.v_proj, value)  # (B, H, S, D)
        scores = q @ k.transpose(-2, -1)  # (B, H, L, S)
        mask = self._mask(attn_mask, key_padding_mask, is_causal, (b, tq, ts), scores)
        if mask is not None:
            scores = scores + mask
        attn = scores.softmax(dim=-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, p=self.dropout)
        out = (attn @ v).transpose(1, 2).reshape(b, tq, self.num_heads * self.head_dim)
        out = self.out_proj(out)  # (B, L, E)
        if not batched:
            out = out[0]
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = attn.mean(dim=1) if average_attn_weights else attn
        return out, (weights if batched else weights[0])

    def _mask(
        self,
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        is_causal: bool,
        sizes: tuple[int, int, int],
        scores: torch.Tensor,
    ) -> torch.Tensor | None:
        """One additive mask broadcastable to (B, H, L, S); True in a bool mask = not allowed."""
        (b, tq, ts), dtype = sizes, scores.dtype
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(tq, ts, dtype=torch.bool, device=scores.device).triu(1)
        total = None
        if attn_mask is not None:
            m = _additive(attn_mask, dtype)
            if m.dim() == 3:  # (B * H, L, S)
                m = m.reshape(b, self.num_heads, tq, ts)
            total = m
        if key_padding_mask is not None:
            m = _additive(key_padding_mask, dtype)[:, None, None, :]  # (B, 1, 1, S)
            total = m if total is None else total + m
        return total


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)


def from_torch(mha: nn.MultiheadAttention) -> PrunableMultiheadAttention:
    """A :class:`PrunableMultiheadAttention` computing exactly what ``mha`` computes."""
    if mha.bias_k is not None or mha.add_zero_attn:
        raise ConfigError(
            "nn.MultiheadAttention with add_bias_kv or add_zero_attn has no prunable "
            "replacement; build it without them or ignore the layer"
        )
    ref = mha.out_proj.weight
    new = PrunableMultiheadAttention(
        mha.embed_dim,
        mha.num_heads,
        mha.dropout,
        bias=mha.in_proj_bias is not None,
        kdim=mha.kdim,
        vdim=mha.vdim,
        batch_first=mha.batch_first,
    ).to(device=ref.device, dtype=ref.dtype)
    if mha._qkv_same_embed_dim:
        weights = mha.in_proj_weight.detach().chunk(3)
    else:
        weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
    biases = mha.in_proj_bias.detach().chunk(3) if mha.in_proj_bias is not None else None
    with torch.no_grad():
        for i, lin in enumerate((new.q_proj, new.k_proj, new.v_proj)):
            lin.weight.copy_(weights[i])
            if biases is not None:
                lin.bias.copy_(biases[i])
        new.out_proj.weight.copy_(mha.out_proj.weight)
        if mha.out_proj.bias is not None:
            new.out_proj.bias.copy_(mha.out_proj.bias)
    grad = mha.out_proj.weight.requires_grad
    for p in new.parameters():
        p.requires_grad_(grad)
    return new.train(mha.training)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def _no_nested(model: nn.Module) -> None:
    """nn.TransformerEncoder packs padded batches into nested tensors only for the stock
    module: turn that off where its layers now hold the replacement."""
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoder) and any(
            isinstance(getattr(layer, "self_attn", None), PrunableMultiheadAttention)
            for layer in m.layers
        ):
            m.use_nested_tensor = False


def swap_multihead_attention(model: nn.Module) -> tuple[list[str], list[str]]:
    """Replace every ``nn.MultiheadAttention`` inside ``model`` (every name it is registered
    under); returns (names swapped, notes on those left as they are)."""
    swapped, notes, done = [], [], {}
    for name, m in list(model.named_modules(remove_duplicate=False)):
        if not isinstance(m, nn.MultiheadAttention):
            continue
        if not name:
            notes.append("the model itself is an nn.MultiheadAttention: not swapped")
            continue
        if id(m) not in done:
            try:
                done[id(m)] = from_torch(m)
            except ConfigError as exc:
                notes.append(f"{name!r} (MultiheadAttention) not swapped: {exc}")
                done[id(m)] = None
        if done[id(m)] is not None:
            _replace(model, name, done[id(m)])
            swapped.append(name)
    _no_nested(model)
    return swapped, notes


def swap_at(model: nn.Module, names: list[str]) -> None:
    """Swap the ``nn.MultiheadAttention`` modules at ``names`` (a saved record) for the
    replacement; a name holding neither module is a ConfigError."""
    done: dict[int, PrunableMultiheadAttention] = {}
    for name in names:
        try:
            m = model.get_submodule(name)
        except AttributeError as exc:
            raise ConfigError(f"swapped attention {name!r} is not in the rebuilt model") from exc
        if isinstance(m, PrunableMultiheadAttention):
            continue
        if not isinstance(m, nn.MultiheadAttention):
            raise ConfigError(
                f"{name!r} was an nn.MultiheadAttention when saved but the factory builds "
                f"{type(m).__name__}; rebuild with the factory that made the checkpoint"
            )
        done.setdefault(id(m), from_torch(m))
        _replace(model, name, done[id(m)])
    _no_nested(model)
