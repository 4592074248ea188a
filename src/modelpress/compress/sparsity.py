"""Unstructured magnitude sparsity: zero the smallest weights, globally or per layer, in one
shot or gradually (Zhu & Gupta's cubic schedule) with fine-tuning between steps.

Honest reporting: the zeros stay in dense tensors. A dense runtime stores every one of them and
multiplies by every one of them, so the checkpoint keeps its size and MACs do not change; the
record says so with the measured numbers (bytes on disk, and the zlib-compressed size, which is
where zeros do pay off). ``benchmarks/prune.py`` measures latency on torch and onnxruntime.

>>> from modelpress.compress.sparsity import SparsityConfig, sparsify_model
>>> outcome = sparsify_model(model, SparsityConfig(sparsity=0.7))         # doctest: +SKIP
>>> round(outcome.details["sparsity"], 2)                                   # doctest: +SKIP
0.7
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..artifact import Artifact
from ..data.base import DataBundle
from ..errors import ConfigError
from .base import (
    PassContext,
    PassRecord,
    PassResult,
    load_model,
    model_stats,
    save_pass_output,
    timed,
)

SCOPES = ("global", "layer")
WEIGHT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.RNNBase)


@dataclass(frozen=True)
class SparsityConfig:
    """``sparsity``: final fraction of zeros among the prunable weights (conv, linear and
    recurrent weight matrices; biases, norms and embeddings stay dense). ``scope``: one
    magnitude threshold for all of them (``global``) or the same fraction in each (``layer``).
    ``steps`` > 1 ramps sparsity up on a cubic schedule, fine-tuning ``epochs_per_step``
    epochs after each step."""

    sparsity: float = 0.5
    scope: str = "global"
    steps: int = 1
    epochs_per_step: int = 0
    lr: float = 1e-3
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore", tuple(self.ignore))
        if not 0.0 < self.sparsity < 1.0:
            raise ConfigError(f"SparsityConfig.sparsity must be in (0, 1), got {self.sparsity}")
        if self.scope not in SCOPES:
            raise ConfigError(f"SparsityConfig.scope {self.scope!r} is unknown; choose {SCOPES}")
        if not isinstance(self.steps, int) or self.steps < 1 or self.epochs_per_step < 0:
            raise ConfigError("SparsityConfig.steps must be >= 1 and epochs_per_step >= 0")
        if self.steps > 1 and self.epochs_per_step == 0:
            raise ConfigError(
                "a gradual schedule (steps > 1) needs fine-tuning between steps: "
                "set epochs_per_step >= 1, or use steps=1"
            )
        if not self.lr > 0:
            raise ConfigError(f"SparsityConfig.lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ignore": list(self.ignore)}


@dataclass
class SparsityOutcome:
    model: nn.Module
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def polynomial_schedule(final: float, steps: int, initial: float = 0.0) -> list[float]:
    """Sparsity after each of ``steps`` steps: s_k = s_f + (s_i - s_f) * (1 - k / n) ** 3.

    >>> [round(s, 3) for s in polynomial_schedule(0.8, 4)]
    [0.463, 0.7, 0.788, 0.8]
    """
    return [final + (initial - final) * (1 - k / steps) ** 3 for k in range(1, steps + 1)]


def prunable_weights(model: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, tuple]:
    """``{"layer.param": (module, param name)}`` of every weight matrix that may be zeroed."""
    names = dict(model.named_modules())
    unknown = [n for n in ignore if n not in names]
    if unknown:
        raise ConfigError(f"ignore names {unknown} are not in the model")
    skip = {id(sub) for n in ignore for sub in names[n].modules()}
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, WEIGHT_TYPES) or id(m) in skip:
            continue
        for pname, p in m.named_parameters(recurse=False):
            if pname.startswith("weight") and p.dim() >= 2:
                out[f"{name}.{pname}" if name else pname] = (m, pname.removesuffix("_orig"))
    return out


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict:
    """Keep-masks (1 = kept) zeroing the ``sparsity`` fraction of smallest magnitudes."""
    if scope == "layer":
        return {
            k: _mask_of(w.abs().flatten(), sparsity).reshape(w.shape) for k, w in weights.items()
        }
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    mask, masks, start = _mask_of(flat, sparsity), {}, 0
    for k, w in weights.items():
        masks[k] = mask[start : start + w.numel()].reshape(w.shape)
        start += w.numel()
    return masks


def _mask_of(magnitudes: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = round(sparsity * magnitudes.numel())
    mask = torch.ones_like(magnitudes)
    if k:
        mask[torch.topk(magnitudes, k, largest=False, sorted=False).indices] = 0.0
    return mask


def sparsity_report(model: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, Any]:
    """Zeros among the prunable weights (total and per layer) and among all parameters."""
    layers, zeros, total = {}, 0, 0
    for key, (m, pname) in prunable_weights(model, ignore).items():
        w = getattr(m, pname)
        z = int((w == 0).sum())
        layers[key] = round(z / w.numel(), 4)
        zeros, total = zeros + z, total + w.numel()
    every = sum(p.numel() for p in model.parameters())
    every_zero = sum(int((p == 0).sum()) for p in model.parameters())
    return {
        "sparsity": zeros / max(total, 1),
        "prunable_weights": total,
        "all_params_sparsity": every_zero / max(every, 1),
        "layers": layers,
    }


def _apply_masks(targets: dict[str, tuple], masks: dict[str, torch.Tensor]) -> None:
    import torch.nn.utils.prune as tprune

    for key, (m, pname) in targets.items():
        tprune.custom_from_mask(m, pname, masks[key])


def _make_permanent(targets: dict[str, tuple]) -> None:
    import torch.nn.utils.prune as tprune

    for m, pname in targets.values():
        if tprune.is_pruned(m) and hasattr(m, f"{pname}_mask"):
            tprune.remove(m, pname)


def sparsify_model(
    model: nn.Module,
    cfg: SparsityConfig,
    *,
    data: DataBundle | None = None,
    seed: int = 0,
    progress: bool = False,
    device: str = "auto",
) -> SparsityOutcome:
    """Zero weights of ``model`` in place (masks during fine-tuning, plain tensors after).

    Fine-tuning runs on ``device`` (``auto``: CUDA when torch sees a GPU); masks and the model
    come back on the CPU.

    >>> outcome = sparsify_model(model, SparsityConfig(sparsity=0.8, scope="layer"))  # doctest: +SKIP
    """
    from ..train import TrainConfig, train

    if cfg.epochs_per_step and data is None:
        raise ConfigError("fine-tuning between sparsity steps needs data: pass data=")
    targets = prunable_weights(model, cfg.ignore)
    if not targets:
        raise ConfigError("no conv, linear or recurrent weights to sparsify (all ignored?)")
    history = []
    for target in polynomial_schedule(cfg.sparsity, cfg.steps):
        _make_permanent(targets)
        weights = {k: getattr(m, p).detach() for k, (m, p) in targets.items()}
        _apply_masks(targets, magnitude_masks(weights, target, cfg.scope))
        entry = {"target": round(target, 4)}
        if cfg.epochs_per_step:
            tcfg = TrainConfig(
                epochs=cfg.epochs_per_step,
                lr=cfg.lr,
                patience=cfg.epochs_per_step,
                seed=seed,
                device=device,
            )
            result = train(model, data, tcfg, progress=progress)
            entry["val_accuracy"], entry["device"] = result.val_accuracy, result.device
        history.append(entry)
    _make_permanent(targets)
    report = sparsity_report(model, cfg.ignore)
    notes = [
        f"sparsity {report['sparsity']:.3f} of {report['prunable_weights']} prunable weights "
        f"({report['all_params_sparsity']:.3f} of all parameters), stored dense: "
        "dense runtimes keep every zero in memory and multiply by it"
    ]
    device_used = history[-1].get("device", "cpu") if history else "cpu"
    details = {**report, "steps": history, "device": device_used}
    return SparsityOutcome(model=model, notes=notes, details=details)


def compressed_bytes(path: str | Path) -> int:
    """Size of the file after zlib (level 6): where zeros in dense weights do save bytes."""
    return len(zlib.compress(Path(path).read_bytes(), 6))


def sparsify(art: Artifact, cfg: SparsityConfig, ctx: PassContext) -> PassResult:
    """The sparsity pass: load ``art``, zero weights, save; record sizes and MACs honestly.

    >>> result = sparsify(artifact, SparsityConfig(sparsity=0.7), PassContext(data, out))  # doctest: +SKIP
    >>> result.record.after.bytes == result.record.before.bytes                          # doctest: +SKIP
    False
    """
    model, ckpt = load_model(art)
    before = model_stats(model, ctx.data, art.size_bytes)
    with timed() as clock:
        outcome = sparsify_model(
            model, cfg, data=ctx.data, seed=ctx.seed, progress=ctx.progress, device=ctx.device
        )
    model.eval()
    acc = model_stats(model, ctx.data, 0).accuracy
    metrics = {"test_accuracy": acc, "sparsity": outcome.details["sparsity"]}
    new = save_pass_output(model, ckpt, ctx, "sparsity", cfg.to_dict(), metrics)
    after = model_stats(model, ctx.data, new.size_bytes)
    zipped = {"before": compressed_bytes(art.path), "after": compressed_bytes(new.path)}
    notes = outcome.notes + [
        f"bytes on disk {before.bytes} -> {after.bytes}, MACs {before.macs} -> {after.macs} "
        f"(dense); zlib-compressed {zipped['before']} -> {zipped['after']} bytes"
    ]
    details = {**outcome.details, "zlib_bytes": zipped}
    record = PassRecord("sparsity", cfg.to_dict(), before, after, clock["seconds"], notes, details)
    return PassResult(artifact=new, model=model, record=record)
