"""Text classifiers that take two inputs, ``input_ids`` and ``attention_mask``: the multi-input
tests (a plain torch model, and a tiny randomly initialised transformers BERT; no downloads)."""

import torch
from torch import nn


class MaskedMeanClassifier(nn.Module):
    """Embeddings averaged over the unmasked tokens, then a linear head: the mask changes the
    logits whenever a sample has padding."""

    def __init__(self, vocab: int = 64, dim: int = 16, classes: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        summed = (self.embed(input_ids) * mask).sum(dim=1)  # (B, C)
        return self.head(summed / mask.sum(dim=1).clamp(min=1.0))


def build_plain(vocab: int = 64, dim: int = 16, classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return MaskedMeanClassifier(vocab, dim, classes)


def build_bert(vocab: int = 64, classes: int = 2) -> nn.Module:
    """A 2-layer BertForSequenceClassification (hidden 32, 4 heads); returns a ModelOutput.
    Initialised 10x wider than BERT's 0.02 so that its logits (~1) and the mask's effect on
    them (~0.2) are far above the tolerances the tests compare runtimes with."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=classes,
        initializer_range=0.2,
    )
    return BertForSequenceClassification(config).eval()
