"""Users' attention models for tests/test_attention_std.py: a small ViT built from the stock
``nn.TransformerEncoder`` (``nn.MultiheadAttention`` inside), and ``transformers`` classifiers
wrapped so that they return their logits tensor. Random init, small configs, no downloads."""

import torch
from torch import nn


class TinyViT(nn.Module):
    """Patches of a 1x8x8 image -> nn.TransformerEncoder -> mean pool -> classes."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, batch_first: bool = True):
        super().__init__()
        self.batch_first = batch_first
        self.patch = nn.Conv2d(1, dim, 2, stride=2)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, batch_first=batch_first, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8)
        h = self.patch(x).flatten(2).transpose(1, 2) + self.pos  # (B, 16, dim)
        if not self.batch_first:
            h = h.transpose(0, 1)  # (16, B, dim)
        h = self.encoder(h)
        if not self.batch_first:
            h = h.transpose(0, 1)
        return self.head(h.mean(dim=1))


def build_tiny_vit(dim: int = 32, heads: int = 4, batch_first: bool = True) -> nn.Module:
    torch.manual_seed(0)
    return TinyViT(dim, heads, batch_first=batch_first)


class Logits(nn.Module):
    """A transformers classifier returning ``.logits`` (text models get input_ids only)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def build_hf(kind: str) -> nn.Module:
    import transformers as tr

    torch.manual_seed(0)
    text = {"vocab_size": 50, "max_position_embeddings": 16, "num_labels": 3}
    if kind == "bert":
        cfg = tr.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **text
        )
        return Logits(tr.BertForSequenceClassification(cfg))
    if kind == "distilbert":
        cfg = tr.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **text)
        return Logits(tr.DistilBertForSequenceClassification(cfg))
    cfg = tr.ViTConfig(
        image_size=8,
        patch_size=2,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=10,
    )
    return Logits(tr.ViTForImageClassification(cfg))
