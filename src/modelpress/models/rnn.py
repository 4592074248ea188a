"""Recurrent baselines: ``gru`` and ``lstm`` over sequences (T, F) or tokens (T,)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..errors import ConfigError
from .base import PressModel, check_dropout, check_positive

RNN_CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
POOLS = ("last", "mean")


@dataclass(frozen=True)
class RNNConfig:
    cell: str = "gru"
    input_size: int = 8  # features per step (sequence input)
    vocab_size: int = 0  # > 0: token input through an embedding of embed_dim
    embed_dim: int = 64
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    pool: str = "last"  # last: final hidden state(s); mean: mean of outputs over time
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.cell not in RNN_CELLS:
            raise ConfigError(
                f"RNNConfig.cell {self.cell!r} is unknown; choose one of {tuple(RNN_CELLS)}"
            )
        if self.pool not in POOLS:
            raise ConfigError(f"RNNConfig.pool {self.pool!r} is unknown; choose one of {POOLS}")
        check_positive(self, "input_size", "embed_dim", "hidden_size", "num_layers", "num_classes")
        if self.vocab_size < 0:
            raise ConfigError(f"RNNConfig.vocab_size must be >= 0, got {self.vocab_size}")
        check_dropout(self)


class RNNClassifier(PressModel):
    """Embedding (tokens only) -> GRU/LSTM -> pooled state -> linear classifier."""

    family = "rnn"

    def __init__(self, config: RNNConfig):
        super().__init__(config)
        c = config
        self.embed = (
            nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=0) if c.vocab_size else None
        )
        self.rnn = RNN_CELLS[c.cell](
            input_size=c.embed_dim if c.vocab_size else c.input_size,
            hidden_size=c.hidden_size,
            num_layers=c.num_layers,
            bidirectional=c.bidirectional,
            dropout=c.dropout if c.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(c.dropout)
        self.fc = nn.Linear(c.hidden_size * (2 if c.bidirectional else 1), c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, F) or tokens (B, T)
        if self.embed is not None:
            x = self.embed(x)  # (B, T, E)
        out, state = self.rnn(x)  # out: (B, T, dirs * H)
        if self.config.pool == "mean":
            feat = out.mean(dim=1)
        else:
            h = state[0] if isinstance(state, tuple) else state  # (layers * dirs, B, H)
            feat = torch.cat([h[-2], h[-1]], dim=1) if self.rnn.bidirectional else h[-1]
        return self.fc(self.dropout(feat))  # (B, classes)

    def current_config(self) -> RNNConfig:
        return replace(
            self.config,
            input_size=self.config.input_size if self.embed is not None else self.rnn.input_size,
            embed_dim=self.embed.embedding_dim if self.embed is not None else self.config.embed_dim,
            vocab_size=self.embed.num_embeddings if self.embed is not None else 0,
            hidden_size=self.rnn.hidden_size,
            num_layers=self.rnn.num_layers,
            num_classes=self.fc.out_features,
        )
