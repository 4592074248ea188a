"""Feature plumbing for distillation: forward-hook taps, adapters, attention terms, data views.

Every intermediate feature is brought to one grid form ``(B, C, h, w)`` so that any family can
teach any other: a CNN map stays as it is, ViT tokens go back on their patch grid, a sequence of
``T`` steps becomes a ``T x 1`` column (for image rows as steps, the rows of the image) and a
pooled vector is ``1 x 1``. Grids of different sizes are average-pooled to the smaller one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.base import InputSpec
from ..errors import ConfigError

Pairs = tuple[tuple[str, str], ...]
FEATURE_MAP = {"cnn": "blocks", "rnn": "rnn"}  # the last feature map before pooling


@contextmanager
def tap(model: nn.Module, layers: list[str]) -> Iterator[dict[str, Tensor]]:
    """Record the output (``name``) or first input (``name:input``) of modules while inside."""
    feats: dict[str, Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for layer in dict.fromkeys(layers):
        name, _, where = layer.partition(":")
        if name not in modules or where not in ("", "input"):
            known = ", ".join(n for n in modules if n and n.count(".") < 1)
            raise ConfigError(
                f"layer {layer!r} is not in {type(model).__name__}; use a module path (known at the "
                f"top: {known}) optionally followed by ':input'"
            )

        def save(out: Any, key: str = layer) -> None:
            feats[key] = out[0] if isinstance(out, tuple) else out

        if where == "input":
            handles.append(modules[name].register_forward_pre_hook(lambda m, a, s=save: s(a)))
        else:
            handles.append(modules[name].register_forward_hook(lambda m, a, o, s=save: s(o)))
    try:
        yield feats
    finally:
        for h in handles:
            h.remove()


def _token_grid(model: nn.Module, tokens: int) -> tuple[int, int]:
    cfg = getattr(model, "config", None)
    if hasattr(model, "patch") and hasattr(cfg, "image_size"):
        side = cfg.image_size // cfg.patch_size
        if side * side == tokens:
            return side, side
    return tokens, 1


def to_grid(model: nn.Module, feat: Tensor) -> Tensor:
    """A feature of ``model`` as ``(B, C, h, w)``: maps as they are, tokens/steps on a grid."""
    if feat.dim() == 4:  # (B, C, H, W)
        return feat
    if feat.dim() == 3:  # (B, T, D)
        h, w = _token_grid(model, feat.shape[1])
        return feat.transpose(1, 2).reshape(feat.shape[0], feat.shape[2], h, w)
    if feat.dim() == 2:  # (B, D)
        return feat[:, :, None, None]
    raise ConfigError(f"cannot distil a feature of shape {tuple(feat.shape)}; pick another layer")


def _common(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)


def make_adapter(
    teacher: nn.Module, student: nn.Module, t_feat: Tensor, s_feat: Tensor
) -> nn.Module:
    """A learned 1x1 conv from the student's feature width to the teacher's."""
    s_ch, t_ch = to_grid(student, s_feat).shape[1], to_grid(teacher, t_feat).shape[1]
    return nn.Conv2d(s_ch, t_ch, kernel_size=1)


def match_features(
    adapter: nn.Module, teacher: nn.Module, student: nn.Module, t_feat: Tensor, s_feat: Tensor
) -> Tensor:
    """FitNets hint: MSE between adapted student features and the teacher's, on a common grid."""
    s, t = _common(adapter(to_grid(student, s_feat)), to_grid(teacher, t_feat).detach())
    return F.mse_loss(s, t)


def _activation_attention(grid: Tensor) -> Tensor:
    return grid.pow(2).mean(dim=1, keepdim=True)  # (B, 1, h, w)


def attention_transfer(
    teacher: nn.Module, student: nn.Module, t_feat: Tensor, s_feat: Tensor
) -> Tensor:
    """Zagoruyko & Komodakis: ``|| a_s/||a_s|| - a_t/||a_t|| ||_2``, a = mean_c(F^2), batch mean."""
    a_s = _activation_attention(to_grid(student, s_feat))
    a_t = _activation_attention(to_grid(teacher, t_feat).detach())
    a_s, a_t = _common(a_s, a_t)
    a_s, a_t = F.normalize(a_s.flatten(1), dim=1), F.normalize(a_t.flatten(1), dim=1)
    return (a_s - a_t).norm(dim=1).mean()


def attention_map_kl(t_attn: Tensor, s_attn: Tensor, eps: float = 1e-8) -> Tensor:
    """KL(teacher || student) of head-averaged attention rows; maps are (B, heads, T, T)."""
    t = t_attn.detach().mean(dim=1)  # (B, T, T): head counts may differ
    s = s_attn.mean(dim=1)
    kl = (t * (t.clamp_min(eps).log() - s.clamp_min(eps).log())).sum(-1)  # (B, T)
    return kl.mean()


def classifier_name(model: nn.Module) -> str:
    """Module path of the model's last ``nn.Linear`` (its classifier)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear classifier; give DistillConfig.hints explicitly"
        )
    return names[-1]


def auto_hint_pairs(teacher: nn.Module, student: nn.Module) -> Pairs:
    """The features each classifier sees: meaningful for every pair of families."""
    return ((f"{classifier_name(teacher)}:input", f"{classifier_name(student)}:input"),)


def _feature_map(model: nn.Module) -> str:
    family = getattr(model, "family", None)
    if family == "attention":  # the residual stream: after the final LayerNorm every token has
        return f"blocks.{len(model.blocks) - 1}"  # the same energy and attention transfer is void
    if family not in FEATURE_MAP:
        raise ConfigError(
            f"{type(model).__name__} is not a registry model; give DistillConfig.attention pairs explicitly"
        )
    return FEATURE_MAP[family]


def _attn_maps(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n.endswith("attn_map")]


def auto_attention_pairs(
    teacher: nn.Module, student: nn.Module, t_example: Tensor, s_example: Tensor
) -> tuple[Pairs, str]:
    """Attention maps of two transformers with one token count, else activation maps.

    Returns the pairs and a note saying which kind was chosen and why.
    """
    t_maps, s_maps = _attn_maps(teacher), _attn_maps(student)
    reason = "not both attention models"
    if t_maps and s_maps:
        with torch.no_grad(), tap(teacher, t_maps[-1:]) as tf, tap(student, s_maps[-1:]) as sf:
            teacher(t_example)
            student(s_example)
        t_len, s_len = tf[t_maps[-1]].shape[-1], sf[s_maps[-1]].shape[-1]
        if t_len == s_len:
            n_t, n_s = len(t_maps), len(s_maps)
            pairs = tuple(
                (t_maps[max(0, math.ceil((i + 1) * n_t / n_s) - 1)], s)
                for i, s in enumerate(s_maps)
            )
            return pairs, f"attention-map distillation on {len(pairs)} block pair(s)"
        reason = f"token counts differ ({t_len} vs {s_len})"
    pair = (_feature_map(teacher), _feature_map(student))
    return (pair,), f"attention transfer on activation maps {pair[0]!r} <- {pair[1]!r} ({reason})"


def _same_source(t: dict[str, Any], s: dict[str, Any]) -> bool:
    if t.get("view") == "tokens" or s.get("view") == "tokens":
        return t == s
    keys = ("dataset", "resize", "layout")
    if any(t.get(k) != s.get(k) for k in keys) or "mean" not in t or "mean" not in s:
        return False
    stats = [(t[k], s[k]) for k in ("mean", "std")]
    return all(len(a) == len(b) and np.allclose(a, b, rtol=1e-5) for a, b in stats)


def _describe(pre: dict[str, Any]) -> str:
    return f"{pre.get('dataset')} ({pre.get('view')} view, resize {pre.get('resize')})"


def view_converter(
    teacher_pre: dict[str, Any],
    student_pre: dict[str, Any],
    teacher_spec: InputSpec,
    student_spec: InputSpec,
) -> Callable[[Tensor], Tensor]:
    """Map a student-view batch to the teacher's view of the same data.

    Image (B, C, H, W) and sequence (B, H, C*W) views of one data set (same resize and train
    statistics) convert into each other; anything else raises ConfigError naming both.
    """
    if not _same_source(teacher_pre, student_pre):
        raise ConfigError(
            f"teacher was trained on {_describe(teacher_pre)} but the student on "
            f"{_describe(student_pre)} with other preprocessing; distil on two views of the same data"
        )
    t_view, s_view = teacher_spec.kind, student_spec.kind
    if t_view == s_view and teacher_spec.shape == student_spec.shape:
        return lambda x: x
    if t_view == "image" and s_view == "sequence":
        c, h, w = teacher_spec.shape
        if student_spec.shape == (h, c * w):
            return lambda x: x.reshape(x.shape[0], h, c, w).permute(0, 2, 1, 3).contiguous()
    if t_view == "sequence" and s_view == "image":
        c, h, w = student_spec.shape
        if teacher_spec.shape == (h, c * w):
            return lambda x: x.permute(0, 2, 1, 3).reshape(x.shape[0], h, c * w)
    raise ConfigError(
        f"teacher input {t_view} {teacher_spec.shape} and student input {s_view} "
        f"{student_spec.shape} are not two views of the same images"
    )


class ViewedTeacher(nn.Module):
    """A teacher that takes the student's view of the data (converted on the way in), so any
    loss that calls ``teacher(x)`` on student batches works across views (e.g. KD recovery
    after pruning a sequence model with an image teacher)."""

    def __init__(self, teacher: nn.Module, convert: Callable[[Tensor], Tensor]):
        super().__init__()
        self.teacher = teacher
        self.convert = convert

    def forward(self, x: Tensor) -> Tensor:
        return self.teacher(self.convert(x))


def teacher_for(teacher_art, data) -> nn.Module:
    """The teacher of ``teacher_art`` (a checkpoint artifact), reading ``data``'s view."""
    from .base import load_model

    model, ckpt = load_model(teacher_art)
    convert = view_converter(
        ckpt.meta.preprocessing, data.preprocessing, ckpt.input_spec, data.input_spec
    )
    return ViewedTeacher(model, convert).eval()
