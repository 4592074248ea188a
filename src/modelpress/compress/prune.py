"""Structured pruning on Torch-Pruning's dependency graph: the result is a plain, smaller model.

Channels coupled by the graph (a conv, its BatchNorm, the next layer's inputs, every layer on
the same residual stream) form one *set* and are removed together; GRU / LSTM hidden units
(:mod:`.rnn_pruning`) and whole attention heads (:mod:`.attention_pruning`) are sets too. Sets
are ranked by an importance criterion, cut to a target (a ratio of the units, a parameter budget
or a MAC budget), in one or several steps with fine-tuning or distillation in between.

>>> from modelpress.compress.prune import PruneConfig, prune_model
>>> cfg = PruneConfig(macs_budget=0.5, importance="l2", recovery="none")
>>> outcome = prune_model(model, example_batch, cfg)                        # doctest: +SKIP
>>> outcome.details["after"]["macs"]                                        # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..artifact import Artifact
from ..data.base import DataBundle
from ..errors import BuildError, ConfigError, one_line
from ..metrics import count_macs, count_params
from .attention_adapters import remember_structure, swap_for_pruning
from .base import (
    PassContext,
    PassRecord,
    PassResult,
    example_input,
    load_model,
    model_stats,
    save_pass_output,
    timed,
)
from .pruning_graph import Structure, build_structure, score_sets

IMPORTANCES = ("l1", "l2", "bn_scale", "taylor", "lamp")
SCOPES = ("global", "uniform")
RECOVERIES = ("none", "finetune", "kd")
SEARCH_ITERS = 10  # bisection steps: ratio known to within max_layer_ratio / 1024


def _budget_ok(value: float | int | None, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"PruneConfig.{name} must be a number, got {value!r}")
    if isinstance(value, float) and not 0.0 < value < 1.0:
        raise ConfigError(
            f"PruneConfig.{name} {value} out of range: a float is the fraction of the model's "
            "count to keep, in (0, 1); an int is an absolute count"
        )
    if isinstance(value, int) and value < 1:
        raise ConfigError(f"PruneConfig.{name} must be >= 1 as an absolute count, got {value}")


@dataclass(frozen=True)
class PruneConfig:
    """What to prune, how far, and how to recover. Give exactly one of ``ratio``,
    ``params_budget`` or ``macs_budget``.

    ``ratio``: fraction of the prunable units (channels, hidden units, heads) to remove.
    ``params_budget`` / ``macs_budget``: a float in (0, 1) keeps at most that fraction of the
    model's parameters / MACs; an int is an absolute maximum. ``scope``: ``global`` ranks all
    units together (no layer loses more than ``max_layer_ratio``), ``uniform`` removes the same
    fraction of every set. ``round_to`` rounds kept channel counts to multiples of it. The
    default ``auto``, in a model with a prunable layer of 256 channels or more, rounds such wide
    layers to multiples of 32 and the others to 16; a narrower model keeps multiples of 8
    (``pruning_graph.channel_step``). CPU kernels block channels by 8 (AVX2, XNNPACK) and 16
    (AVX-512 NCHWc) and pack int8 GEMM panels wider still, so channel counts that were multiples
    of 8 only ran slower than their MACs say (benchmarks/results/prune_rounding.md: MobileNetV2
    at 224x224 and half the MACs on ONNX Runtime). Odd widths are worse: the digits resnet8 at
    half the MACs ran 0.61x the dense speed.
    """

    ratio: float | None = None
    params_budget: float | int | None = None
    macs_budget: float | int | None = None
    importance: str = "l2"
    scope: str = "global"
    iterative_steps: int = 1
    recovery: str = "finetune"
    recovery_epochs: int = 10
    recovery_lr: float = 1e-3
    round_to: int | str = "auto"  # an int >= 1, or "auto" (8, 16 or 32 by layer width)
    max_layer_ratio: float = 0.9
    prune_heads: bool = True
    ignore: tuple[str, ...] = ()
    taylor_batches: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "ignore", tuple(self.ignore))
        targets = [n for n in ("ratio", "params_budget", "macs_budget") if getattr(self, n)]
        if len(targets) != 1:
            raise ConfigError(
                "PruneConfig needs exactly one target: ratio, params_budget or macs_budget; "
                f"got {targets or 'none'}"
            )
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"PruneConfig.ratio must be in (0, 1), got {self.ratio}")
        _budget_ok(self.params_budget, "params_budget")
        _budget_ok(self.macs_budget, "macs_budget")
        for name, choices in (
            ("importance", IMPORTANCES),
            ("scope", SCOPES),
            ("recovery", RECOVERIES),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"PruneConfig.{name} {getattr(self, name)!r} is unknown; choose one of {choices}"
                )
        if not 0.0 < self.max_layer_ratio < 1.0:
            raise ConfigError(f"max_layer_ratio must be in (0, 1), got {self.max_layer_ratio}")
        if self.scope == "global" and self.ratio and self.ratio > self.max_layer_ratio:
            raise ConfigError(
                f"global ratio {self.ratio} is above max_layer_ratio {self.max_layer_ratio}: "
                "no layer may lose more than that; lower the ratio or raise max_layer_ratio"
            )
        if self.round_to != "auto" and (
            not isinstance(self.round_to, int)
            or isinstance(self.round_to, bool)
            or self.round_to < 1
        ):
            raise ConfigError(
                f"PruneConfig.round_to must be an integer >= 1 or 'auto', got {self.round_to!r}"
            )
        for name in ("iterative_steps", "recovery_epochs", "taylor_batches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"PruneConfig.{name} must be an integer >= 1")
        if not self.recovery_lr > 0:
            raise ConfigError(f"PruneConfig.recovery_lr must be > 0, got {self.recovery_lr}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ignore": list(self.ignore)}


@dataclass
class PruneOutcome:
    """What :func:`prune_model` did: the (same, now smaller) model, notes and numbers."""

    model: nn.Module
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def rounding_text(round_to: int | str) -> str:
    return "8, 16 or 32 by width (auto)" if round_to == "auto" else str(round_to)


def _keep_count(keep: int, current: int, step: int) -> int:
    """``keep`` rounded to a multiple of ``step`` (at least ``step``), never above ``current``."""
    if step > 1:
        keep = max(step, step * round(keep / step))
    return min(keep, current)


def make_plan(
    st: Structure, scores: dict[str, torch.Tensor], init: dict[str, int], ratio: float, cfg
) -> dict[str, list[int]]:
    """Units to remove per set so that ``ratio`` of the original units are gone."""
    keeps: dict[str, int] = {}
    if cfg.scope == "uniform":
        for s in st.sets:
            gone = round(ratio * init[s.key])
            if gone >= init[s.key]:
                raise ConfigError(
                    f"ratio {ratio:.3g} would remove every unit of {s.key!r} "
                    f"({init[s.key]} -> 0); lower the ratio or ignore the layer"
                )
            keeps[s.key] = init[s.key] - gone
    else:
        total = sum(init[s.key] for s in st.sets)
        need = round(ratio * total) - sum(init[s.key] - s.size for s in st.sets)
        caps = {  # no set loses more than max_layer_ratio of its original units, or all
            s.key: max(
                0, min(s.size - 1, int(cfg.max_layer_ratio * init[s.key]) - init[s.key] + s.size)
            )
            for s in st.sets
        }
        ranked = sorted(
            ((float(v), s.key, i) for s in st.sets for i, v in enumerate(scores[s.key])),
        )
        taken = dict.fromkeys(caps, 0)
        for _, key, _ in ranked:
            if need <= 0:
                break
            if taken[key] < caps[key]:
                taken[key] += 1
                need -= 1
        keeps = {s.key: s.size - taken[s.key] for s in st.sets}
    plan = {}
    for s in st.sets:
        keep = _keep_count(keeps[s.key], s.size, s.step)
        order = torch.argsort(scores[s.key], stable=True)
        plan[s.key] = sorted(order[: s.size - keep].tolist())
    return plan


def apply_plan(st: Structure, plan: dict[str, list[int]]) -> None:
    from .attention_pruning import prune_heads

    for s in st.sets:
        idxs = plan.get(s.key) or []
        if not idxs:
            continue
        if s.kind == "heads":
            prune_heads(s.attention or s.module, idxs)
            continue
        group = st.dg.get_pruning_group(s.module, s.fn, idxs)
        if not st.dg.check_pruning_group(group):
            raise BuildError(f"pruning {len(idxs)} units of {s.key!r} would empty a coupled layer")
        group.prune()


def _measure(model: nn.Module, example: torch.Tensor, cfg: PruneConfig) -> int:
    return count_params(model) if cfg.params_budget else count_macs(model, example)


def _budget(cfg: PruneConfig, before: int) -> int:
    value = cfg.params_budget or cfg.macs_budget
    return int(value * before) if isinstance(value, float) else int(value)


def _upper_ratio(st: Structure, init: dict[str, int], cfg: PruneConfig) -> float:
    if cfg.scope == "global":
        return cfg.max_layer_ratio
    return min(1.0 - 0.5 / init[s.key] for s in st.sets) - 1e-6  # leaves >= 1 unit per set


def search_ratio(
    st: Structure, example: torch.Tensor, cfg: PruneConfig, scores, init, lo: float, goal: int
) -> float:
    """Smallest cumulative ratio whose pruned model meets ``goal`` (bisection on copies)."""
    model = st.dg.model

    def meets(ratio: float) -> bool:
        trial = copy.deepcopy(model)
        st = build_structure(trial, example, cfg)
        apply_plan(st, make_plan(st, scores, init, ratio, cfg))
        return _measure(trial, example, cfg) <= goal

    hi = _upper_ratio(st, init, cfg)
    if not meets(hi):
        kind = "parameter" if cfg.params_budget else "MAC"
        rounded = (
            f" (kept counts rounded to multiples of {rounding_text(cfg.round_to)})"
            if cfg.round_to != 1
            else ""
        )
        raise ConfigError(
            f"{kind} budget {goal} cannot be reached: removing {hi:.2f} of every prunable set"
            f"{rounded} is not enough; raise the budget or max_layer_ratio, lower round_to, or "
            "stop ignoring layers"
        )
    for _ in range(SEARCH_ITERS):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return hi


def _recover(model, data, cfg: PruneConfig, teacher, seed: int, progress: bool, device: str):
    """Fine-tune or distil the pruned ``model`` on ``device`` (the teacher too); returns the
    TrainResult. Model and teacher come back on the CPU for the next cut."""
    from ..train import TrainConfig, train

    loss_fn = None
    if cfg.recovery == "kd":
        try:
            from .distill import DistillConfig, kd_loss_fn
        except ImportError as exc:  # pragma: no cover - distill ships with modelpress
            raise ConfigError(f"recovery='kd' needs modelpress.compress.distill: {exc}") from exc
        loss_fn = kd_loss_fn(teacher, DistillConfig())
    tcfg = TrainConfig(
        epochs=cfg.recovery_epochs,
        lr=cfg.recovery_lr,
        patience=cfg.recovery_epochs,
        seed=seed,
        device=device,
    )
    return train(model, data, tcfg, progress=progress, loss_fn=loss_fn)


def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            model.eval()(example)
    except Exception as exc:  # any failure here is a pruning bug: name it
        raise BuildError(f"the pruned model no longer runs: {one_line(exc)}") from exc


@dataclass
class _Run:
    """State carried across the steps of one :func:`prune_model` call."""

    before: dict[str, int]
    init: dict[str, int] = field(default_factory=dict)  # set -> units before any step
    width: dict[str, int] = field(default_factory=dict)  # set -> units now
    notes: list[str] = field(default_factory=list)
    ratio: float = 0.0  # cumulative fraction of the original units removed


def _step(model, example, cfg: PruneConfig, data, run: _Run, step: int) -> None:
    """One pruning step: trace, score, pick the ratio, cut, check."""
    st = build_structure(model, example, cfg)
    if not run.init:
        run.init = {s.key: s.size for s in st.sets}
        run.notes += st.notes
        if not st.sets:
            raise ConfigError("nothing to prune: " + "; ".join(st.notes or ["no layers"]))
    scores, score_notes = score_sets(st, cfg.importance, data, cfg.taylor_batches)
    run.notes += [n for n in score_notes if n not in run.notes]
    if cfg.ratio is not None:
        run.ratio = cfg.ratio * step / cfg.iterative_steps
    else:
        full = run.before["params" if cfg.params_budget else "macs"]
        goal = full - (full - _budget(cfg, full)) * step // cfg.iterative_steps
        run.ratio = search_ratio(st, example, cfg, scores, run.init, run.ratio, goal)
    plan = make_plan(st, scores, run.init, run.ratio, cfg)
    apply_plan(st, plan)
    run.width.update({s.key: s.size - len(plan[s.key]) for s in st.sets})
    _check_runs(model, example)


def prune_model(
    model: nn.Module,
    example_inputs: torch.Tensor,
    cfg: PruneConfig,
    *,
    data: DataBundle | None = None,
    teacher: nn.Module | None = None,
    seed: int = 0,
    progress: bool = False,
    device: str = "auto",
) -> PruneOutcome:
    """Prune ``model`` in place (any ``nn.Module``) and return what was done.

    ``data`` is needed for Taylor importance and for recovery; ``teacher`` (default: a copy of
    the unpruned model) for ``recovery="kd"``. Pruning runs on the CPU; recovery trains on
    ``device`` (``auto``: CUDA when torch sees a GPU) and the model comes back to the CPU.
    Every ``nn.MultiheadAttention`` is first replaced
    by :class:`~modelpress.models.std_attention.PrunableMultiheadAttention` (same outputs; the
    notes name them) so that its heads can go; the model remembers it for its checkpoint.

    >>> cfg = PruneConfig(ratio=0.3, recovery="none")
    >>> outcome = prune_model(model, torch.zeros(2, 1, 8, 8), cfg)           # doctest: +SKIP
    """
    if data is None and (cfg.recovery != "none" or cfg.importance == "taylor"):
        raise ConfigError(
            f"recovery={cfg.recovery!r} / importance={cfg.importance!r} need data; pass data= "
            "or use recovery='none' with a magnitude importance"
        )
    example = torch.as_tensor(example_inputs)
    swapped, swap_notes = swap_for_pruning(model)  # stock attention cannot lose heads
    before = {"params": count_params(model), "macs": count_macs(model, example)}
    if cfg.recovery == "kd" and teacher is None:
        teacher = copy.deepcopy(model).eval()
    run = _Run(before=before, notes=swap_notes)
    steps = []
    for step in range(1, cfg.iterative_steps + 1):
        _step(model, example, cfg, data, run, step)
        record = {"step": step, "ratio": round(run.ratio, 4), "params": count_params(model)}
        record["macs"] = count_macs(model, example)
        if cfg.recovery != "none":
            recovered = _recover(model, data, cfg, teacher, seed, progress, device)
            record["val_accuracy"] = recovered.val_accuracy
            record["device"] = recovered.device
        steps.append(record)
    after = {"params": count_params(model), "macs": count_macs(model, example)}
    remember_structure(model, swapped)
    if after["params"] == before["params"]:
        raise ConfigError(
            f"pruning removed nothing at ratio {run.ratio:.3g}: every set rounds to its full "
            f"width (round_to={cfg.round_to}); raise the target or set a lower round_to"
        )
    widths = {k: [n, run.width.get(k, n)] for k, n in run.init.items()}
    notes = run.notes
    full = [k for k, (a, b) in widths.items() if a == b]
    if full:
        notes.append(f"kept at full width by the {cfg.scope} ranking: {full}")
    details = {"steps": steps, "widths": widths, "before": before, "after": after}
    details["device"] = steps[-1].get("device", "cpu")  # of the recovery; pruning runs on the CPU
    return PruneOutcome(model=model, notes=notes, details=details)


def prune(
    art: Artifact, cfg: PruneConfig, ctx: PassContext, teacher: nn.Module | None = None
) -> PassResult:
    """The pruning pass: load ``art``, prune, recover, save; record params, MACs, bytes, accuracy.

    >>> result = prune(artifact, PruneConfig(macs_budget=0.5), PassContext(data, out))  # doctest: +SKIP
    >>> result.record.after.macs <= result.record.before.macs // 2                      # doctest: +SKIP
    True
    """
    model, ckpt = load_model(art)
    before = model_stats(model, ctx.data, art.size_bytes)
    with timed() as clock:
        outcome = prune_model(
            model,
            example_input(ckpt.input_spec, ctx.data),
            cfg,
            data=ctx.data,
            teacher=teacher,
            seed=ctx.seed,
            progress=ctx.progress,
            device=ctx.device,
        )
    model.eval()
    acc = model_stats(model, ctx.data, 0).accuracy
    new = save_pass_output(model, ckpt, ctx, "prune", cfg.to_dict(), {"test_accuracy": acc})
    after = model_stats(model, ctx.data, new.size_bytes)
    record = PassRecord(
        "prune", cfg.to_dict(), before, after, clock["seconds"], outcome.notes, outcome.details
    )
    return PassResult(artifact=new, model=model, record=record)
