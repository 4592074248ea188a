import numpy as np
import pytest
import torch
from torch import nn

from modelpress.metrics import accuracy, bytes_on_disk, count_macs, count_params
from modelpress.models.attention import MultiHeadSelfAttention


def test_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)


def test_params_counts_shared_once():
    lin = nn.Linear(4, 3)
    model = nn.Sequential(lin, nn.Linear(3, 4))
    assert count_params(model) == 4 * 3 + 3 + 3 * 4 + 4
    tied = nn.Sequential(lin, lin)
    assert count_params(tied) == 15


def test_macs_conv_and_linear():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 7))
    # conv: 4*5*5 outputs x 2*3*3 each; linear: 7 x 100
    assert count_macs(model, torch.zeros(3, 2, 5, 5)) == 100 * 18 + 700


def test_macs_depthwise_conv():
    model = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_macs(model, torch.zeros(1, 8, 4, 4)) == 8 * 16 * 9


@pytest.mark.parametrize("cls,gates", [(nn.GRU, 3), (nn.LSTM, 4), (nn.RNN, 1)])
def test_macs_rnn_layers_and_directions(cls, gates):
    rnn = cls(5, 6, num_layers=2, bidirectional=True, batch_first=True)
    steps = 7
    layer0 = 2 * steps * gates * (5 * 6 + 6 * 6)
    layer1 = 2 * steps * gates * (12 * 6 + 6 * 6)
    assert count_macs(rnn, torch.zeros(2, steps, 5)) == layer0 + layer1


def test_macs_attention_matmuls():
    attn = MultiHeadSelfAttention(dim=8, num_heads=2, head_dim=4)
    t = 5
    qkv, proj = t * 24 * 8, t * 8 * 8
    matmuls = 2 * 2 * t * t * 4
    assert count_macs(attn, torch.zeros(1, t, 8)) == qkv + proj + matmuls


def test_macs_torch_multihead_attention():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x)[0]

    t = 5
    assert count_macs(Wrap(), torch.zeros(1, t, 8)) == 4 * t * 64 + 2 * t * t * 8


def test_bytes_on_disk(tmp_path):
    (tmp_path / "a.onnx").write_bytes(b"x" * 10)
    (tmp_path / "a.onnx.data").write_bytes(b"y" * 32)
    assert bytes_on_disk(tmp_path / "a.onnx") == 10
    assert bytes_on_disk(tmp_path) == 42


class _Scores(nn.Module):
    """Attention written two ways: SDPA (as transformers' models run it) and explicit @."""

    def __init__(self, sdpa: bool):
        super().__init__()
        self.sdpa = sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, T, D)
        if self.sdpa:
            return torch.nn.functional.scaled_dot_product_attention(x, x, x)
        return (x @ x.transpose(-2, -1)).softmax(-1) @ x


@pytest.mark.parametrize("sdpa", [True, False])
def test_attention_products_are_counted_however_they_are_written(sdpa):
    x = torch.randn(2, 4, 16, 8)  # batch 2 is sliced to 1: 4 heads x 16 x 16 x (8 + 8)
    assert count_macs(_Scores(sdpa), x) == 4 * 16 * 16 * (8 + 8)
