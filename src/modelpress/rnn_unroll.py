"""Unrolled GRU/LSTM: the same function as ``nn.GRU`` / ``nn.LSTM``, written with Linear layers.

Deployment quantizers treat recurrent ops as black boxes: ONNX Runtime has no int8 GRU and its
dynamic LSTM quantization does not take the exporter's LSTM; litert-torch leaves GRU/LSTM cells
in float. Unrolled over the (fixed) sequence length, a recurrent layer becomes one input
projection for all steps plus one hidden projection per step — ordinary Linear layers every
quantizer handles — so int8 builds really store and compute the recurrent weights in int8.

>>> fast = unroll_rnns(model)      # a copy; ``model`` is untouched      # doctest: +SKIP
"""

from __future__ import annotations

import copy

import torch
from torch import nn

GATES = {"GRU": 3, "LSTM": 4}


class UnrolledRNN(nn.Module):
    """Drop-in for a batch-first or time-first nn.GRU / nn.LSTM (no proj_size), weights copied."""

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        kind = type(rnn).__name__
        if kind not in GATES or getattr(rnn, "proj_size", 0):
            raise ValueError(f"cannot unroll {kind} (proj_size={getattr(rnn, 'proj_size', 0)})")
        self.kind, self.hidden = kind, rnn.hidden_size
        self.layers, self.batch_first = rnn.num_layers, rnn.batch_first
        self.dirs = 2 if rnn.bidirectional else 1
        # the attributes code around an nn.GRU/LSTM reads
        self.bidirectional, self.hidden_size = rnn.bidirectional, rnn.hidden_size
        self.num_layers, self.input_size = rnn.num_layers, rnn.input_size
        g = GATES[kind] * rnn.hidden_size
        self.ih, self.hh = nn.ModuleList(), nn.ModuleList()
        for layer in range(rnn.num_layers):
            for d in range(self.dirs):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = getattr(rnn, f"weight_ih_{sfx}"), getattr(rnn, f"weight_hh_{sfx}")
                ih, hh = (
                    nn.Linear(w_ih.shape[1], g, bias=rnn.bias),
                    nn.Linear(rnn.hidden_size, g, bias=rnn.bias),
                )
                with torch.no_grad():
                    ih.weight.copy_(w_ih)
                    hh.weight.copy_(w_hh)
                    if rnn.bias:
                        ih.bias.copy_(getattr(rnn, f"bias_ih_{sfx}"))
                        hh.bias.copy_(getattr(rnn, f"bias_hh_{sfx}"))
                self.ih.append(ih)
                self.hh.append(hh)

    def _cell(self, gx: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None, hh: nn.Linear):
        gh = hh(h)  # (B, G*H)
        if self.kind == "GRU":
            xr, xz, xn = gx.chunk(3, dim=-1)
            hr, hz, hn = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return (1 - z) * n + z * h, None
        i, f, g, o = (gx + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(self, x: torch.Tensor, state=None):
        if state is not None:
            raise ValueError("UnrolledRNN starts from a zero state (as the registry models do)")
        if not self.batch_first:
            x = x.transpose(0, 1)  # (B, T, F)
        steps = x.shape[1]
        finals_h, finals_c = [], []
        for layer in range(self.layers):
            outs = []
            for d in range(self.dirs):
                k = layer * self.dirs + d
                gx = self.ih[k](x)  # (B, T, G*H): every step at once
                h = x.new_zeros(x.shape[0], self.hidden)
                c = x.new_zeros(x.shape[0], self.hidden) if self.kind == "LSTM" else None
                seq = [None] * steps
                for t in range(steps - 1, -1, -1) if d else range(steps):
                    h, c = self._cell(gx[:, t], h, c, self.hh[k])
                    seq[t] = h
                outs.append(torch.stack(seq, dim=1))  # (B, T, H)
                finals_h.append(h)
                finals_c.append(c)
            x = torch.cat(outs, dim=-1) if self.dirs == 2 else outs[0]
        out = x if self.batch_first else x.transpose(0, 1)
        h_n = torch.stack(finals_h)  # (layers*dirs, B, H)
        if self.kind == "LSTM":
            return out, (h_n, torch.stack(finals_c))
        return out, h_n


def has_rnn(model: nn.Module) -> bool:
    return any(isinstance(m, (nn.GRU, nn.LSTM)) for m in model.modules())


def unroll_rnns(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every nn.GRU / nn.LSTM replaced by an :class:`UnrolledRNN`."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, (nn.GRU, nn.LSTM)):
                setattr(module, child_name, UnrolledRNN(child))
    return model.eval()
