"""Metrics every stage reports: accuracy, parameters, MACs and bytes on disk.

MACs are counted analytically from forward hooks (multiply-accumulates per sample, batch 1):
convolutions, linear layers, GRU/LSTM/RNN cells over every step, layer and direction, and the
two attention matmuls. Element-wise ops (norms, activations, adds) are not counted, as usual.
``torch.utils.flop_counter`` is not used because it misses LSTM on CPU (fused mkldnn kernel).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .fsutil import bytes_on_disk

__all__ = ["accuracy", "bytes_on_disk", "count_macs", "count_params"]

_GATES = {nn.GRU: 3, nn.LSTM: 4, nn.RNN: 1}


def accuracy(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    pred = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    return float((pred == labels).mean()) if len(labels) else float("nan")


def count_params(model: nn.Module) -> int:
    """Number of parameters (unique tensors)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _rnn_macs(m: nn.RNNBase, x: torch.Tensor) -> int:
    batch_first = m.batch_first
    steps = x.shape[1] if batch_first and x.dim() == 3 else x.shape[0]
    batch = (x.shape[0] if batch_first else x.shape[1]) if x.dim() == 3 else 1
    dirs = 2 if m.bidirectional else 1
    gates = next(g for cls, g in _GATES.items() if isinstance(m, cls))
    total, in_size = 0, m.input_size
    for _ in range(m.num_layers):
        total += dirs * steps * gates * (in_size * m.hidden_size + m.hidden_size * m.hidden_size)
        in_size = m.hidden_size * dirs
    return total * batch


def _module_macs(m: nn.Module, inputs: tuple, output) -> int:
    from .models.attention import MultiHeadSelfAttention
    from .models.std_attention import PrunableMultiheadAttention

    out = output[0] if isinstance(output, tuple) else output
    if isinstance(m, nn.modules.conv._ConvNd):
        return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, nn.RNNBase):
        return _rnn_macs(m, inputs[0])
    if isinstance(m, MultiHeadSelfAttention):  # qkv / proj are Linear children, counted there
        b, t, _ = inputs[0].shape
        return 2 * b * m.num_heads * t * t * m.head_dim
    if isinstance(m, PrunableMultiheadAttention):  # q/k/v/out are Linear children, counted there
        q, k = inputs[0], inputs[1] if len(inputs) > 1 else inputs[0]
        lq, lk = (q.shape[-2], k.shape[-2]) if m.batch_first or q.dim() == 2 else (len(q), len(k))
        b = 1 if q.dim() == 2 else q.shape[0 if m.batch_first else 1]
        return 2 * b * m.num_heads * lq * lk * m.head_dim
    if isinstance(m, nn.MultiheadAttention):  # its projections run inside F.*, not as children
        q = inputs[0]
        t, e = (q.shape[1], q.shape[2]) if m.batch_first else (q.shape[0], q.shape[2])
        b = q.shape[0] if m.batch_first else q.shape[1]
        return b * (4 * t * e * e + 2 * t * t * e)
    return 0


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates for one sample (``example`` is sliced to batch 1)."""
    total = 0
    skip: set[int] = set()
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            skip.update(id(c) for c in m.modules() if c is not m)

    def hook(mod: nn.Module, inputs: tuple, output) -> None:
        nonlocal total
        if id(mod) not in skip:
            total += _module_macs(mod, inputs, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
