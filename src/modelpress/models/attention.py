"""Attention baselines: ``vit`` (patches of an image) and ``transformer`` (sequences or tokens).

Heads are explicit (``num_heads`` x ``head_dim`` per block, read from the weights) so that a
pruned model, with fewer heads or MLP units per block, still runs and exports. The attention
probabilities pass through ``attn_map`` (an identity) where a forward hook can read them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import ConfigError
from .base import PressModel, check_dropout, check_positive

MASK_VALUE = -1e4  # additive mask for padded keys; finite so a sample of only pads stays finite


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim)
        self.proj = nn.Linear(num_heads * head_dim, dim)
        self.attn_map = nn.Identity()

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape  # (B, T, C)
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D)
        scores = (q @ k.transpose(-2, -1)) * (self.head_dim**-0.5)  # (B, H, T, T)
        if key_mask is not None:  # (B, T) additive
            scores = scores + key_mask[:, None, None, :]
        attn = self.attn_map(scores.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim)
        return self.proj(out)  # (B, T, C)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), key_mask))
        return x + self.drop(self.mlp(self.norm2(x)))


def _check_blocks(cfg) -> None:
    check_positive(cfg, "dim", "heads", "head_dim", "mlp_dims", "num_classes")
    if len(cfg.heads) != len(cfg.mlp_dims):
        raise ConfigError(f"{type(cfg).__name__}: heads and mlp_dims need one entry per block")
    check_dropout(cfg)


class _Encoder(PressModel):
    family = "attention"

    def _build_encoder(self, c) -> None:
        self.blocks = nn.ModuleList(
            EncoderBlock(c.dim, h, c.head_dim, m, c.dropout) for h, m in zip(c.heads, c.mlp_dims)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.num_classes)

    def _encode(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_mask)
        return self.norm(x)

    def _block_config(self) -> dict:
        return {
            "dim": self.head.in_features,
            "heads": tuple(b.attn.num_heads for b in self.blocks),
            "head_dim": self.blocks[0].attn.head_dim,
            "mlp_dims": tuple(b.mlp[0].out_features for b in self.blocks),
            "num_classes": self.head.out_features,
        }


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 8
    patch_size: int = 2
    patch_kernel: int = 0  # 0: non-overlapping patches; > patch_size: overlapping (conv stem)
    in_channels: int = 1
    dim: int = 64
    heads: tuple[int, ...] = (4, 4)
    head_dim: int = 16
    mlp_dims: tuple[int, ...] = (128, 128)
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "image_size", "patch_size", "in_channels")
        if self.patch_kernel and (
            self.patch_kernel < self.patch_size or (self.patch_kernel - self.patch_size) % 2 == 0
        ):
            raise ConfigError(
                "ViTConfig.patch_kernel must be 0 or patch_size + an odd number (e.g. 3 for patch 2)"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"ViTConfig: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        _check_blocks(self)


class ViT(_Encoder):
    """Patch embedding (conv, stride = patch) + learned positions -> encoder -> mean pool."""

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        c = config
        n_patches = (c.image_size // c.patch_size) ** 2
        k = c.patch_kernel or c.patch_size
        self.patch = nn.Conv2d(
            c.in_channels, c.dim, k, c.patch_size, padding=(k - c.patch_size + 1) // 2
        )
        self.pos = nn.Parameter(torch.randn(1, n_patches, c.dim) * 0.02)
        self._build_encoder(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, dim)
        return self.head(self._encode(x).mean(dim=1))  # (B, classes)

    def current_config(self) -> ViTConfig:
        return replace(self.config, in_channels=self.patch.in_channels, **self._block_config())


@dataclass(frozen=True)
class TransformerConfig:
    input_size: int = 8  # features per step (sequence input)
    vocab_size: int = 0  # > 0: token input; id 0 is padding and is masked out
    max_len: int = 8
    dim: int = 64
    heads: tuple[int, ...] = (4, 4)
    head_dim: int = 16
    mlp_dims: tuple[int, ...] = (128, 128)
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self, "input_size", "max_len")
        if self.vocab_size < 0:
            raise ConfigError(f"TransformerConfig.vocab_size must be >= 0, got {self.vocab_size}")
        _check_blocks(self)


class SequenceTransformer(_Encoder):
    """Linear (sequences) or embedding (tokens) + learned positions -> encoder -> mean pool."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config)
        c = config
        self.embed = (
            nn.Embedding(c.vocab_size, c.dim) if c.vocab_size else nn.Linear(c.input_size, c.dim)
        )
        self.pos = nn.Parameter(torch.randn(1, c.max_len, c.dim) * 0.02)
        self._build_encoder(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, F) or tokens (B, T)
        h = self.embed(x) + self.pos[:, : x.shape[1]]  # (B, T, dim)
        if not self.config.vocab_size:
            return self.head(self._encode(h).mean(dim=1))
        keep = (x != 0).to(h.dtype)  # (B, T) 1 = real token
        h = self._encode(h, (1.0 - keep) * MASK_VALUE)
        pooled = (h * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(pooled)  # (B, classes)

    def current_config(self) -> TransformerConfig:
        if self.config.vocab_size:
            extra = {"vocab_size": self.embed.num_embeddings}
        else:
            extra = {"input_size": self.embed.in_features}
        return replace(self.config, **extra, **self._block_config())
