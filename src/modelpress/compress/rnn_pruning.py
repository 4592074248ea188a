"""Hidden-unit pruning for ``nn.GRU`` and ``nn.LSTM``, plugged into Torch-Pruning's graph.

Torch-Pruning 1.6.1 never puts an ``nn.GRU`` in its dependency graph (a pruned model keeps it
untouched) and its LSTM pruner handles one layer only (``IndexError`` beyond). This module adds:

- :class:`RNNUnitPruner`, a ``BasePruningFunc`` for ``customized_pruners``. Its channels are
  hidden units. Removing unit ``j`` removes row ``j`` of every gate in both directions, column
  ``j`` of the recurrent weights and, in the next layer, the input columns ``j`` (and ``H + j``
  when bidirectional). All layers share one ``hidden_size``, so every layer loses the same
  number of units: the last layer loses the units the graph chose (they are the ones the
  following layers read); each inner layer loses its own weakest units, ranked by the L2 norm
  of every weight that dies with the unit.
- :func:`trace_hooks`, used while the graph is traced: an RNN's outputs (``out``, ``h_n``,
  ``c_n``) are re-expressed as one autograd node per RNN, so the graph links the RNN to the
  layer before it and to every layer that reads its output or its last layer's final state.

>>> import torch
>>> from torch import nn
>>> gru = nn.GRU(8, 16, num_layers=2, bidirectional=True, batch_first=True)
>>> RNNUnitPruner().prune_out_channels(gru, [0, 3, 5]).hidden_size
13
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch_pruning.pruner.function import BasePruningFunc

from ..errors import BuildError

RNN_TYPES = (nn.GRU, nn.LSTM)
Spec = tuple[torch.Tensor, int, torch.Tensor]  # (parameter, dim, index (n, r)): channel i's slice


def _gates(rnn: nn.RNNBase) -> int:
    return 4 if isinstance(rnn, nn.LSTM) else 3


def _suffixes(rnn: nn.RNNBase) -> tuple[str, ...]:
    return ("", "_reverse") if rnn.bidirectional else ("",)


def _check(rnn: nn.RNNBase) -> None:
    if getattr(rnn, "proj_size", 0):
        raise BuildError(
            f"LSTM with proj_size={rnn.proj_size} is not supported by the unit pruner; "
            "ignore the layer (ignore=[name]) or build it without proj_size"
        )


def _take(rnn: nn.RNNBase, name: str, rows: torch.Tensor, cols: torch.Tensor | None) -> None:
    old = getattr(rnn, name)
    new = old.detach()[rows]
    if cols is not None:
        new = new[:, cols]
    # RNNBase.__setattr__ keeps _flat_weights in step with the new Parameter
    setattr(rnn, name, nn.Parameter(new.contiguous(), requires_grad=old.requires_grad))


def unit_norms(rnn: nn.RNNBase, layer: int) -> torch.Tensor:
    """Squared L2 norm, per hidden unit of ``layer``, of every weight that dies with the unit."""
    h, g, dirs = rnn.hidden_size, _gates(rnn), len(_suffixes(rnn))
    score = torch.zeros(h)
    for sfx in _suffixes(rnn):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            p = getattr(rnn, f"{kind}_l{layer}{sfx}", None)
            if p is not None:  # rows of every gate: (G*H, ...) -> (G, H, -1)
                score += p.detach().reshape(g, h, -1).pow(2).sum(dim=(0, 2))
        score += getattr(rnn, f"weight_hh_l{layer}{sfx}").detach().pow(2).sum(0)  # columns
        if layer + 1 < rnn.num_layers:  # the next layer's input columns, both directions
            nxt = getattr(rnn, f"weight_ih_l{layer + 1}{sfx}").detach()
            score += nxt.pow(2).sum(0).reshape(dirs, h).sum(0)
    return score


def keep_units(rnn: nn.RNNBase, keep: Sequence[torch.Tensor]) -> nn.RNNBase:
    """Keep units ``keep[l]`` (sorted indices, one count for all layers) of every layer."""
    _check(rnn)
    h, g, dirs = rnn.hidden_size, _gates(rnn), len(_suffixes(rnn))
    if len(keep) != rnn.num_layers or len({len(k) for k in keep}) != 1 or len(keep[0]) < 1:
        raise BuildError(f"{type(rnn).__name__}: need one equal, non-empty unit list per layer")
    for layer, units in enumerate(keep):
        rows = torch.cat([units + i * h for i in range(g)])  # this unit's row in every gate
        cols = torch.cat([keep[layer - 1] + d * h for d in range(dirs)]) if layer else None
        for sfx in _suffixes(rnn):
            _take(rnn, f"weight_ih_l{layer}{sfx}", rows, cols)
            _take(rnn, f"weight_hh_l{layer}{sfx}", rows, units)
            if rnn.bias:
                _take(rnn, f"bias_ih_l{layer}{sfx}", rows, None)
                _take(rnn, f"bias_hh_l{layer}{sfx}", rows, None)
    rnn.hidden_size = len(keep[0])
    return rnn


def _complement(n: int, idxs: Sequence[int]) -> torch.Tensor:
    drop = set(int(i) for i in idxs)
    return torch.tensor([i for i in range(n) if i not in drop], dtype=torch.long)


class RNNUnitPruner(BasePruningFunc):
    """Torch-Pruning pruner for ``nn.GRU`` / ``nn.LSTM``: channels are hidden units."""

    TARGET_MODULES = RNN_TYPES

    def prune_out_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.RNNBase:
        last = _complement(layer.hidden_size, idxs)
        keep = []
        for inner in range(layer.num_layers - 1):  # inner layers: their own weakest units
            top = torch.topk(unit_norms(layer, inner), len(last), sorted=False).indices
            keep.append(top.sort().values)
        return keep_units(layer, [*keep, last])

    def prune_in_channels(self, layer: nn.RNNBase, idxs: Sequence[int]) -> nn.RNNBase:
        _check(layer)
        cols = _complement(layer.input_size, idxs)
        rows = torch.arange(layer.weight_ih_l0.shape[0])
        for sfx in _suffixes(layer):
            _take(layer, f"weight_ih_l0{sfx}", rows, cols)
        layer.input_size = len(cols)
        return layer

    def get_out_channels(self, layer: nn.RNNBase) -> int:
        return layer.hidden_size

    def get_in_channels(self, layer: nn.RNNBase) -> int:
        return layer.input_size


def unit_specs(rnn: nn.RNNBase, is_out: bool, idxs: Sequence[int]) -> list[Spec]:
    """Weight slices of channels ``idxs`` (for importance): rows / columns per unit or input."""
    idx = torch.as_tensor(list(idxs), dtype=torch.long)
    sfxs = _suffixes(rnn)
    if not is_out:
        return [(getattr(rnn, f"weight_ih_l0{s}"), 1, idx[:, None]) for s in sfxs]
    h, g, last = rnn.hidden_size, _gates(rnn), rnn.num_layers - 1
    rows = torch.stack([idx + i * h for i in range(g)], dim=1)  # (n, G)
    specs: list[Spec] = []
    for s in sfxs:
        specs += [(getattr(rnn, f"{k}_l{last}{s}"), 0, rows) for k in ("weight_ih", "weight_hh")]
        specs.append((getattr(rnn, f"weight_hh_l{last}{s}"), 1, idx[:, None]))
    return specs


class _Bridge(torch.autograd.Function):
    """One autograd node standing for a whole module while the graph is traced: it passes the
    module's output values through and links them to the module's input only (not to the
    module's internal ops, which the tracer would otherwise mistake for layers)."""

    @staticmethod
    def forward(ctx, anchor, source, *values):  # anchor: a parameter, so outputs need grad
        return tuple(v.clone() for v in values)

    @staticmethod
    def backward(ctx, *grads):  # never run: tracing reads the graph, it does not backprop
        return (None, None, *(None for _ in grads))


def bridge(module: nn.Module, source: object, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``values`` as outputs of one node whose only graph input is ``source``."""
    anchor = next(module.parameters())
    src = source if isinstance(source, torch.Tensor) else None
    return _Bridge.apply(anchor, src, *(v.detach() for v in values))


def box_hook(module: nn.Module, args: tuple, output: object) -> object:
    """Forward hook: trace ``module`` as one node from its first input to its output(s)."""
    if isinstance(output, torch.Tensor):
        return bridge(module, args[0], output)[0]
    if isinstance(output, tuple) and all(isinstance(o, torch.Tensor) for o in output):
        return bridge(module, args[0], *output)
    return output


_MARK = "modelpress-rnn-trace"


def trace_hooks(rnn: nn.RNNBase) -> tuple[Callable, Callable]:
    """Two forward hooks for tracing ``rnn``: ``before`` runs ahead of Torch-Pruning's own hook,
    ``after`` behind it (register it from the tracer's ``forward_fn``).

    ``before`` turns the outputs into one node whose channels are hidden units, and hands
    Torch-Pruning that node as output 0; ``after`` rebuilds the real output shapes from it:
    ``out`` as a concat of the directions (channel ``j`` -> ``j`` and ``H + j``) and the last
    layer's ``h_n`` / ``c_n`` rows straight from the node. Inner layers' states are detached.
    """
    _check(rnn)
    dirs = 2 if rnn.bidirectional else 1

    def before(mod: nn.Module, args: tuple, output: tuple) -> tuple:
        out, state = output
        if not isinstance(out, torch.Tensor):
            raise BuildError(
                f"{type(mod).__name__}: packed sequences are not supported by the unit pruner"
            )
        states = state if isinstance(state, tuple) else (state,)
        h = mod.hidden_size
        first = (mod.num_layers - 1) * dirs  # rows of the last layer in h_n / c_n
        pieces = [out[..., d * h : (d + 1) * h] for d in range(dirs)]
        lasts = [s[first + d] for s in states for d in range(dirs)]
        node = bridge(mod, args[0], *pieces, *lasts)
        return (node[0], _MARK, output, node)

    def after(mod: nn.Module, args: tuple, traced: tuple) -> tuple:
        if not (isinstance(traced, tuple) and len(traced) == 4 and traced[1] == _MARK):
            return traced
        _, _, (out, state), node = traced  # Torch-Pruning saw node[0]: node is this RNN
        parts, finals = node[:dirs], node[dirs:]
        if dirs == 1:
            new_out = parts[0]
        elif out.dim() == 2:  # unbatched (T, 2H): channels already in dim 1
            new_out = torch.cat(parts, dim=1)
        else:  # Torch-Pruning maps concats on dim 1 only: (B, T, H) -> (B, H, T) -> cat -> back
            new_out = torch.cat([p.transpose(1, 2) for p in parts], dim=1).transpose(1, 2)
        states = state if isinstance(state, tuple) else (state,)
        first = (mod.num_layers - 1) * dirs
        rebuilt = []
        for i, s in enumerate(states):
            rows = [s[k].detach() for k in range(first)] + list(finals[i * dirs : (i + 1) * dirs])
            rebuilt.append(torch.stack(rows, dim=0))
        return new_out, (tuple(rebuilt) if isinstance(state, tuple) else rebuilt[0])

    return before, after
