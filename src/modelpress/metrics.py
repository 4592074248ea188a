"""Metrics every stage reports: accuracy, parameters, MACs and bytes on disk.

MACs are counted analytically (multiply-accumulates per sample, batch 1): convolutions, linear
layers and GRU/LSTM/RNN cells over every step, layer and direction from forward hooks; every
product of two activations (``@`` / ``matmul`` / ``bmm`` / ``baddbmm``, and
``scaled_dot_product_attention``: the two attention matmuls of any attention, ours, torch's or
``transformers'``) from a torch function mode. Element-wise ops (norms, activations, adds) are
not counted, as usual. ``torch.utils.flop_counter`` is not used because it misses LSTM on CPU
(fused mkldnn kernel).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

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


def _product_macs(a: torch.Tensor, b: torch.Tensor) -> int:
    """MACs of ``a @ b`` with matmul's broadcasting: batch x n x k x m."""
    n = a.shape[-2] if a.dim() > 1 else 1
    m = b.shape[-1] if b.dim() > 1 else 1
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]) if min(a.dim(), b.dim()) > 1 else ()
    return math.prod(batch) * n * a.shape[-1] * m


_PRODUCTS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm}
_PRODUCTS |= {torch.Tensor.bmm}


class _Products(TorchFunctionMode):
    """Counts the MACs of products of two tensors (attention scores and mixing) as they run."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PRODUCTS:
            self.total += _product_macs(args[0], args[1])
        elif func in (torch.baddbmm, torch.Tensor.baddbmm):
            self.total += _product_macs(args[1], args[2])
        elif func is torch.nn.functional.scaled_dot_product_attention:
            q, k, v = args[:3]  # (..., L, E), (..., S, E), (..., S, Ev): scores, then mixing
            lq, s = q.shape[-2], k.shape[-2]
            self.total += math.prod(q.shape[:-2]) * lq * s * (q.shape[-1] + v.shape[-1])
        return func(*args, **kwargs)


def _module_macs(m: nn.Module, inputs: tuple, output) -> int:
    out = output[0] if isinstance(output, tuple) else output
    if isinstance(m, nn.modules.conv._ConvNd):
        return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, nn.RNNBase):
        return _rnn_macs(m, inputs[0])
    if isinstance(m, nn.MultiheadAttention):  # runs inside F.multi_head_attention_forward
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
    products = _Products()
    try:
        model.eval()
        with torch.no_grad(), products:
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total + products.total)
