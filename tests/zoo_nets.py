"""A model zoo that is not ours: real architectures from ``transformers`` built from small
configs (random init, no downloads), plus a plain ``nn.TransformerEncoder`` classifier.

Each ``build_*`` is a recipe factory (``factory: zoo_nets:build_vit``); the ``transformers``
models return a ``ModelOutput``, which modelpress takes the logits from."""

import torch
from torch import nn


def build_resnet(
    channels: int = 1,
    classes: int = 10,
    embedding: int = 16,
    widths: tuple[int, ...] = (16, 32, 64, 64),
    depths: tuple[int, ...] = (1, 1, 1, 1),
) -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(
        num_channels=channels,
        embedding_size=embedding,
        hidden_sizes=list(widths),
        depths=list(depths),
        layer_type="basic",
        num_labels=classes,
    )
    return ResNetForImageClassification(cfg)


def build_mobilenetv2(
    channels: int = 1, classes: int = 10, image: int = 32, depth_multiplier: float = 0.35
) -> nn.Module:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    cfg = MobileNetV2Config(
        num_channels=channels,
        image_size=image,
        depth_multiplier=depth_multiplier,
        num_labels=classes,
    )
    return MobileNetV2ForImageClassification(cfg)


def build_convnext(
    channels: int = 1,
    classes: int = 10,
    patch: int = 2,
    widths: tuple[int, ...] = (16, 32, 64, 64),
    depths: tuple[int, ...] = (1, 1, 1, 1),
) -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(
        num_channels=channels,
        patch_size=patch,
        hidden_sizes=list(widths),
        depths=list(depths),
        num_labels=classes,
    )
    return ConvNextForImageClassification(cfg)


def build_vit(
    channels: int = 1,
    classes: int = 10,
    image: int = 32,
    patch: int = 4,
    dim: int = 32,
    layers: int = 2,
    heads: int = 4,
    ffn: int = 64,
) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        num_channels=channels,
        image_size=image,
        patch_size=patch,
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        num_labels=classes,
    )
    return ViTForImageClassification(cfg)


def build_bert(
    vocab: int = 64,
    classes: int = 2,
    max_len: int = 64,
    dim: int = 32,
    layers: int = 2,
    heads: int = 4,
    ffn: int = 64,
) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=max_len,
        num_labels=classes,
    )
    return BertForSequenceClassification(cfg)


def build_distilbert(
    vocab: int = 64,
    classes: int = 2,
    max_len: int = 64,
    dim: int = 32,
    layers: int = 2,
    heads: int = 4,
    ffn: int = 64,
) -> nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = DistilBertConfig(
        vocab_size=vocab,
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        hidden_dim=ffn,
        max_position_embeddings=max_len,
        num_labels=classes,
    )
    return DistilBertForSequenceClassification(cfg)


class PatchEncoder(nn.Module):
    """A small ViT written the plain-torch way: conv patches, nn.TransformerEncoder (stock
    nn.MultiheadAttention inside), mean pool, linear head."""

    def __init__(
        self,
        channels: int = 1,
        classes: int = 10,
        image: int = 32,
        dim: int = 32,
        heads: int = 4,
        layers: int = 2,
        ffn: int | None = None,
        patch: int = 4,
    ):
        super().__init__()
        self.patches = nn.Conv2d(channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, (image // patch) ** 2, dim))
        ffn = 2 * dim if ffn is None else ffn
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        tokens = self.patches(x).flatten(2).transpose(1, 2) + self.pos  # (B, T, D)
        return self.head(self.norm(self.encoder(tokens)).mean(1))


def build_torch_encoder(
    channels: int = 1,
    classes: int = 10,
    image: int = 32,
    dim: int = 32,
    heads: int = 4,
    layers: int = 2,
    ffn: int | None = None,
    patch: int = 4,
) -> nn.Module:
    return PatchEncoder(channels, classes, image, dim, heads, layers, ffn, patch)
