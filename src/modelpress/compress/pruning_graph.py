"""The prunable structure of a model, read from Torch-Pruning's dependency graph, and the
importance of every unit in it.

:func:`build_structure` traces the model once (GRU / LSTM / attention as single nodes with
their own pruners, layers no pruner supports frozen) and lists the *sets* that can shrink:
each dependency group (all coupled channels of one width) and the heads of every attention
module. Groups that must stay (the model's output, a group reaching an unsupported layer,
ignored layers) are left out with a note saying why. :func:`score_sets` ranks every unit.

>>> st = build_structure(model, example, PruneConfig(ratio=0.3))     # doctest: +SKIP
>>> [(s.key, s.size) for s in st.sets][:2]                           # doctest: +SKIP
[('stem.0', 16), ('blocks.0.conv1.0', 16)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BuildError, ConfigError
from ..models.attention import MultiHeadSelfAttention
from .attention_adapters import Attention, find_attention, unfit_attention
from .attention_pruning import AttentionPruner, attention_box_hook, channel_specs, head_specs
from .rnn_pruning import RNN_TYPES, RNNUnitPruner, Spec, box_hook, trace_hooks, unit_specs

_CONV = nn.modules.conv._ConvNd
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_NORMS += (nn.modules.instancenorm._InstanceNorm,)
SUPPORTED = (_CONV, nn.Linear, nn.Embedding, nn.PReLU, nn.MultiheadAttention, *_NORMS)
SUPPORTED += (*RNN_TYPES, MultiHeadSelfAttention)
ROOTS = (_CONV, nn.Linear, nn.Embedding, *RNN_TYPES)


@dataclass
class UnitSet:
    """Units that are removed together: the channels of one group, or one module's heads."""

    key: str  # root module name, or "<attention module>.heads"
    kind: str  # channels | heads
    module: nn.Module
    size: int
    step: int = 1  # kept count is rounded to a multiple of this (round_to, channels only)
    group: Any = None  # the Torch-Pruning group (channels), for scoring
    fn: Callable | None = None  # its root pruning function
    attention: Attention | None = None  # the attention module (heads)


@dataclass
class Structure:
    dg: Any  # torch_pruning.DependencyGraph
    sets: list[UnitSet]
    notes: list[str] = field(default_factory=list)
    attention: dict[nn.Module, Attention] = field(default_factory=dict)


class _FrozenPruner:
    """Stands for a layer no pruner supports: it is in the graph so that every group that
    reaches it can be found and left as is."""

    pruning_dim = -1

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        raise BuildError(f"{type(layer).__name__} has no pruner; this group must stay as is")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> None:
        return None

    get_in_channels = get_out_channels

    def get_in_channel_groups(self, layer: nn.Module) -> int:
        return 1

    get_out_channel_groups = get_in_channel_groups


def _resolve_ignored(model: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        sample = ", ".join(n for n in list(modules)[1:9] if n)
        raise ConfigError(f"ignore names {unknown} are not in the model; names look like: {sample}")
    return [sub for n in names for sub in modules[n].modules()]


def _unsupported(model: nn.Module) -> dict[nn.Module, str]:
    """Leaf modules with parameters that no pruner handles."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, SUPPORTED) or any(True for _ in m.children()):
            continue
        if any(True for _ in m.parameters(recurse=False)):
            out[m] = name
    return out


def _unwrapped(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """Parameters owned directly by container modules (e.g. position embeddings): pruned along
    their last dimension larger than one, as Torch-Pruning does by default."""
    out = []
    for m in model.modules():
        if isinstance(m, SUPPORTED) or not any(True for _ in m.children()):
            continue
        for p in m.parameters(recurse=False):
            dims = [i for i, s in enumerate(p.shape) if s > 1]
            if dims:
                out.append((p, dims[-1]))
    return out


def _box(m: nn.Module, bound: dict[nn.Module, Attention], frozen: dict[nn.Module, str]):
    """The tracing hook of an attention module or a frozen layer (None: traced as usual)."""
    if m in bound:
        a = bound[m]
        return attention_box_hook(a.kind.positional, lambda: setattr(a, "cross", True))
    if isinstance(m, nn.MultiheadAttention) or (m in frozen and any(True for _ in m.children())):
        return attention_box_hook(3 if isinstance(m, nn.MultiheadAttention) else 1)
    return None


def _trace(
    model: nn.Module,
    example: torch.Tensor,
    frozen: dict[nn.Module, str],
    bound: dict[nn.Module, Attention],
):
    import torch_pruning as tp

    pruners: dict[Any, Any] = {t: RNNUnitPruner() for t in RNN_TYPES}
    pruners.update({type(m): AttentionPruner(bound) for m in bound})
    pruners.update({type(m): _FrozenPruner() for m in frozen if type(m) not in pruners})
    handles, afters = [], []
    for m in model.modules():
        if isinstance(m, RNN_TYPES):
            before, after = trace_hooks(m)
            handles.append(m.register_forward_hook(before))
            afters.append((m, after))
        elif (hook := _box(m, bound, frozen)) is not None:
            handles.append(m.register_forward_hook(hook, with_kwargs=True))
        elif m in frozen:
            handles.append(m.register_forward_hook(box_hook))

    def forward_fn(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # called by the tracer after it hooked every layer: these hooks run behind its own
        late = [m.register_forward_hook(fn) for m, fn in afters]
        try:
            return net(x)
        finally:
            for h in late:
                h.remove()

    was_training = model.training
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example,
                forward_fn=forward_fn,
                customized_pruners=pruners,
                unwrapped_parameters=_unwrapped(model),
                verbose=False,
            )
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def _why_kept(
    group, dg, frozen: dict[nn.Module, str], ignored: set[int], why: dict[nn.Module, str]
) -> str | None:
    import torch_pruning as tp

    for dep, _ in group:
        target = dep.target.module
        if id(target) in ignored and not isinstance(target, nn.Parameter):
            return f"it reaches ignored layer {dg._module2name.get(target)!r}"
        at_end = dg.is_out_channel_pruning_fn(dep.handler) and not dep.target.outputs
        if isinstance(target, tp.ops._OutputOp) or at_end:
            return "its channels are the model's outputs"
        if target in frozen:
            reason = why.get(target, "which no pruner supports")
            return f"it reaches {frozen[target]!r} ({type(target).__name__}), {reason}"
        if isinstance(target, _CONV) and 1 < target.groups < target.in_channels:
            return f"it reaches grouped convolution {dg._module2name.get(target)!r}"
    return None


def _frozen_layers(model: nn.Module) -> tuple[dict, dict, list[str]]:
    """Layers left as they are: module -> name, module -> why (when not "no pruner"), notes."""
    frozen = _unsupported(model)
    notes = [f"{name!r} ({type(m).__name__}): no pruner supports it" for m, name in frozen.items()]
    names = {m: n for n, m in model.named_modules()}
    why = {}
    for m, text in unfit_attention(model).items():
        frozen[m], why[m] = names[m], "an attention module unlike its kind"
        notes.append(f"{text}; its heads and width are kept")
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):  # one prune_model could not swap
            frozen[m] = name
            notes.append(f"{name!r} ({type(m).__name__}): no pruner supports it")
    return frozen, why, notes


def _head_sets(atts: list[Attention], ignored: set[int], cfg) -> tuple[list[UnitSet], list[str]]:
    sets, notes = [], []
    for a in atts:
        if id(a.module) in ignored:
            continue
        if not cfg.prune_heads:
            notes.append(f"{a.name!r} heads kept: prune_heads=False")
        elif a.heads < 2:
            notes.append(f"{a.name!r} heads kept: one head left")
        else:
            sets.append(UnitSet(f"{a.name}.heads", "heads", a.module, a.heads, attention=a))
    if atts:  # Torch-Pruning never sees inside them (each is one node): no group cuts a head
        kinds = sorted({a.kind.name for a in atts})
        notes.append(
            f"attention ({len(atts)} modules, kinds {kinds}): q/k/v rows and context width "
            "change by whole heads only, never channel by channel"
        )
    return sets, notes


def channel_step(round_to: int | str, width: int, widest: int) -> int:
    """Kept channel counts of a ``width``-channel layer are multiples of this. ``auto``, in a
    model whose widest prunable layer (``widest``) has 256 channels or more: 32 from 256
    channels, 16 below (a layer of 16 channels or fewer keeps its width). CPU kernels block
    channels by 8 (AVX2, XNNPACK) or 16 (AVX-512's NCHWc), and one layer cut to 8 channels at
    high resolution undoes the blocking of the next. A narrower model keeps multiples of 8:
    there, finer steps matter more than kernel blocks."""
    if round_to != "auto":
        return int(round_to)
    if widest < 256:
        return 8
    return 32 if width >= 256 else 16


def build_structure(model: nn.Module, example: torch.Tensor, cfg) -> Structure:
    """Trace ``model`` and list its prunable sets (``cfg``: a PruneConfig)."""
    ignored = {id(m) for m in _resolve_ignored(model, cfg.ignore)}
    frozen, why, notes = _frozen_layers(model)
    bound = {a.module: a for a in find_attention(model)}
    dg = _trace(model, example, frozen, bound)
    for a in bound.values():
        if a.cross:  # found while tracing: its keys / values read another tensor
            frozen[a.module] = a.name
            why[a.module] = "a cross-attention (keys and values read another tensor)"
            notes.append(f"{a.name!r} is a cross-attention: its heads may go, its width stays")
    names = dg._module2name
    notes += [f"{n!r} ignored by config" for n in cfg.ignore]
    found = []
    for group in dg.get_all_groups(ignored_layers=[], root_module_types=ROOTS):
        root, fn = group[0].dep.target.module, group[0].dep.handler
        key, size = names[root], dg.get_out_channels(root)
        reason = _why_kept(group, dg, frozen, ignored, why)
        reason = reason or (None if size > 1 else "it has one channel")
        if reason:
            notes.append(f"{key!r} width {size} kept: {reason}")
            continue
        found.append((key, root, size, group, fn))
    widest = max((size for _, _, size, _, _ in found), default=0)
    sets = [
        UnitSet(key, "channels", root, size, channel_step(cfg.round_to, size, widest), group, fn)
        for key, root, size, group, fn in found
    ]
    heads, head_notes = _head_sets(list(bound.values()), ignored, cfg)
    return Structure(dg=dg, sets=sets + heads, notes=notes + head_notes, attention=bound)


def item_specs(dep, idxs: list[int], is_out: bool, bound: dict | None = None) -> list[Spec]:
    """Weight slices of channels ``idxs`` of one group member (``bound``: attention modules)."""
    m = dep.target.module
    idx = torch.as_tensor(list(idxs), dtype=torch.long)[:, None]
    if isinstance(m, nn.Parameter):
        return [(m, dep.target.pruning_dim % m.dim(), idx)]
    if isinstance(m, _CONV):
        depthwise = m.groups == m.out_channels and m.groups > 1
        if not (is_out or depthwise) and m.groups > 1:
            return []
        dim = 0 if (is_out or depthwise) != m.transposed else 1
        return [(m.weight, dim, idx)]
    if isinstance(m, nn.Linear):
        return [(m.weight, 0 if is_out else 1, idx)]
    if isinstance(m, nn.Embedding):
        return [(m.weight, 1, idx)]
    if isinstance(m, _NORMS + (nn.PReLU,)):
        w = getattr(m, "weight", None)
        return [(w, 0, idx)] if w is not None and w.numel() > 1 else []
    if isinstance(m, RNN_TYPES):
        return unit_specs(m, is_out, idxs)
    if bound and m in bound:
        return channel_specs(bound[m], is_out, idxs)
    return []


def _per_unit(specs: list[Spec], importance: str) -> torch.Tensor | None:
    total = None
    for p, dim, index in specs:
        n = index.shape[0]
        w = p.detach().index_select(dim, index.flatten()).movedim(dim, 0).reshape(n, -1)
        if importance == "taylor":
            if p.grad is None:
                continue
            g = p.grad.index_select(dim, index.flatten()).movedim(dim, 0).reshape(n, -1)
            v = (w * g).abs().sum(1)
        elif importance in ("l1", "bn_scale"):
            v = w.abs().sum(1)
        else:  # l2, lamp
            v = w.pow(2).sum(1)
        total = v if total is None else total + v
    return total


def _lamp(scores: torch.Tensor) -> torch.Tensor:
    """LAMP: each score over the sum of the scores not smaller than it (within the set)."""
    s, order = scores.sort()
    tail = s.flip(0).cumsum(0).flip(0)  # sum of s[i:]
    out = torch.empty_like(scores)
    out[order] = s / tail.clamp_min(1e-12)
    return out


def _set_scores(s: UnitSet, st: Structure, importance: str) -> tuple[torch.Tensor, bool]:
    """(raw per-unit scores, whether bn_scale fell back to magnitude)."""
    dg = st.dg
    if s.kind == "heads":
        crit = "l1" if importance == "bn_scale" else importance
        v = _per_unit(head_specs(s.attention), crit)
        return (v if v is not None else torch.zeros(s.size)), importance == "bn_scale"
    bn = nn.modules.batchnorm._BatchNorm
    total, count = torch.zeros(s.size), 0
    has_bn = any(isinstance(d.target.module, bn) for d, _ in s.group)
    for i, (dep, idxs) in enumerate(s.group):
        if importance == "bn_scale" and has_bn and not isinstance(dep.target.module, bn):
            continue
        is_out = dg.is_out_channel_pruning_fn(dep.handler)
        v = _per_unit(item_specs(dep, idxs, is_out, st.attention), importance)
        roots = s.group[i].root_idxs
        if v is None or any(r is None for r in roots):
            continue
        total.index_add_(0, torch.as_tensor(roots, dtype=torch.long), v.float())
        count += 1
    return total / max(count, 1), importance == "bn_scale" and not has_bn


def _accumulate_grads(model: nn.Module, data, batches: int) -> None:
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    x, y = torch.as_tensor(data.train.x), torch.as_tensor(data.train.y)
    with torch.enable_grad():
        for i in range(batches):
            sl = slice(i * 64, (i + 1) * 64)
            if len(y[sl]):
                F.cross_entropy(model(x[sl]), y[sl]).backward()
    model.train(was_training)


def score_sets(
    st: Structure, importance: str, data=None, taylor_batches: int = 4
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Normalised importance of every unit of every set (mean 1, or LAMP), plus notes."""
    model = st.dg.model
    if importance == "taylor":
        _accumulate_grads(model, data, taylor_batches)
    scores, fallback = {}, []
    try:
        for s in st.sets:
            raw, fell_back = _set_scores(s, st, importance)
            if fell_back:
                fallback.append(s.key)
            raw = raw.float()
            scores[s.key] = (
                _lamp(raw) if importance == "lamp" else raw / raw.mean().clamp_min(1e-12)
            )
    finally:
        if importance == "taylor":
            model.zero_grad(set_to_none=True)
    notes = []
    if fallback:
        notes.append(f"bn_scale: no BatchNorm in {fallback}; those are ranked by L1 magnitude")
    return scores, notes
