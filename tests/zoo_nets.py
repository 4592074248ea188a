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
    layer_type: str = "basic",
) -> nn.Module:
    """``layer_type="basic"``: ResNet-18/34 blocks; ``"bottleneck"``: ResNet-50 blocks (1x1
    reduce to a quarter of the stage width, 3x3, 1x1 expand)."""
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(
        num_channels=channels,
        embedding_size=embedding,
        hidden_sizes=list(widths),
        depths=list(depths),
        layer_type=layer_type,
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


# MobileNetV3-small (Howard et al. 2019, table 2), which transformers does not have: per block
# (kernel, expanded channels, output channels, squeeze-excitation, hard-swish, stride)
MOBILENETV3_SMALL = (
    (3, 16, 16, True, False, 2),
    (3, 72, 24, False, False, 2),
    (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2),
    (5, 240, 40, True, True, 1),
    (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1),
    (5, 144, 48, True, True, 1),
    (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1),
    (5, 576, 96, True, True, 1),
)


def _multiple_of_8(channels: float) -> int:
    """``channels`` rounded to a multiple of 8, never below 90 % of it (MobileNet's rule)."""
    rounded = max(8, int(channels + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels else rounded


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act=None):
    layers = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return nn.Sequential(*layers, *([act()] if act else []))


class SqueezeExcite(nn.Module):
    """Channel gates from the global average: 1x1 reduce, ReLU, 1x1 expand, hard-sigmoid."""

    def __init__(self, channels: int):
        super().__init__()
        squeeze = _multiple_of_8(channels / 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))  # (B, C, 1, 1) gates


class InvertedResidual(nn.Module):
    """1x1 expand (when widening), depthwise kxk, optional squeeze-excitation, 1x1 project;
    a residual connection where the shape is kept."""

    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, act, stride: int):
        super().__init__()
        layers = [_conv_bn(cin, expanded, 1, act=act)] if expanded != cin else []
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act))
        layers += [SqueezeExcite(expanded)] if se else []
        layers.append(_conv_bn(expanded, cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Small(nn.Module):
    """Stem (3x3 stride 2, hard-swish), the 11 blocks of :data:`MOBILENETV3_SMALL` with their
    channels scaled by ``width``, a 1x1 conv to 6x the last width, average pool and a two-layer
    head (1024 hidden, hard-swish)."""

    def __init__(self, channels: int = 1, classes: int = 10, width: float = 1.0):
        super().__init__()
        cin = _multiple_of_8(16 * width)
        blocks = [_conv_bn(channels, cin, 3, 2, act=nn.Hardswish)]
        for kernel, expanded, cout, se, hard_swish, stride in MOBILENETV3_SMALL:
            expanded, cout = _multiple_of_8(expanded * width), _multiple_of_8(cout * width)
            act = nn.Hardswish if hard_swish else nn.ReLU
            blocks.append(InvertedResidual(cin, kernel, expanded, cout, se, act, stride))
            cin = cout
        blocks.append(_conv_bn(cin, 6 * cin, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Linear(6 * cin, 1024), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(1024, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.head(self.pool(self.features(x)).flatten(1))


def build_mobilenetv3_small(channels: int = 1, classes: int = 10, width: float = 1.0) -> nn.Module:
    return MobileNetV3Small(channels, classes, width)
