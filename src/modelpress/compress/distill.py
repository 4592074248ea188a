"""Knowledge distillation: a teacher's soft targets, features and attention teach a student.

Three terms, each with its own weight in :class:`DistillConfig`:

- **Hinton soft targets**: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE``;
- **feature hints** (FitNets): student features pass through a learned 1x1 adapter to the
  teacher's width and are matched with MSE; the adapters train with the student and are *not*
  saved in its checkpoint;
- **attention**: attention transfer (Zagoruyko & Komodakis) on activation maps for CNNs, RNNs and
  mixed pairs, or KL between attention probabilities when both models are transformers with the
  same token count (read through each block's ``attn_map`` identity).

Any family may teach any other; teacher and student may take two views (image / sequence) of the
same image data. :func:`kd_loss_fn` returns the loss the trainer calls as ``loss_fn(net, x, y)``;
:func:`distill` is the pass.

>>> from modelpress.compress.distill import DistillConfig, kd_loss_fn    # doctest: +SKIP
>>> loss = kd_loss_fn(teacher, DistillConfig())            # Hinton term only
>>> train(student, data, TrainConfig(epochs=20), loss_fn=loss)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..artifact import Artifact
from ..data.base import DataBundle
from ..errors import ConfigError
from ..train import TrainConfig
from .base import (
    PassContext,
    PassRecord,
    PassResult,
    load_model,
    model_stats,
    save_pass_output,
    timed,
)
from .distill_features import (
    attention_map_kl,
    attention_transfer,
    auto_attention_pairs,
    auto_hint_pairs,
    make_adapter,
    match_features,
    tap,
    view_converter,
)

Pairs = tuple[tuple[str, str], ...]


def _pairs(value: Any, field: str) -> str | Pairs:
    if value == "auto":
        return "auto"
    try:
        pairs = tuple((str(t), str(s)) for t, s in value)
    except (TypeError, ValueError):
        pairs = None
    if not pairs or any(not t or not s for t, s in pairs):
        raise ConfigError(
            f"DistillConfig.{field} must be 'auto' or (teacher layer, student layer) pairs, "
            f"e.g. [['blocks.2', 'blocks.2']], got {value!r}"
        )
    return pairs


@dataclass(frozen=True)
class DistillConfig:
    """What the student learns from the teacher. Only the Hinton term is on by default.

    Layer names are module paths (``model.named_modules()``); ``name:input`` reads the input of
    that module instead of its output (``fc:input`` = the features the classifier sees).
    """

    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft (teacher) term; 1 - alpha goes to the labels
    hint_weight: float = 0.0  # feature distillation through learned adapters (0 = off)
    hints: str | Pairs = "auto"  # auto: the classifier's input features of each model
    attention_weight: float = 0.0  # attention transfer / attention-map distillation (0 = off)
    attention: str | Pairs = "auto"  # auto: attn maps of both transformers, else last feature map
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(f"DistillConfig.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"DistillConfig.alpha must be in [0, 1], got {self.alpha}")
        for name in ("hint_weight", "attention_weight"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"DistillConfig.{name} must be >= 0, got {value}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"DistillConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )
        object.__setattr__(self, "hints", _pairs(self.hints, "hints"))
        object.__setattr__(self, "attention", _pairs(self.attention, "attention"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("hints", "attention"):
            if d[key] != "auto":
                d[key] = [list(p) for p in d[key]]
        return d


def hinton_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
) -> Tensor:
    """``alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE(s, y)``; KL averaged over the batch.

    The T^2 factor keeps the soft term's gradient scale independent of T (Hinton et al. 2015).
    """
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


class KDLoss:
    """The distillation loss the trainer calls as ``loss(net, x, y)`` (``net`` may be DDP).

    ``x`` is a batch in the student's view; ``teacher_input`` maps it to the teacher's. Hint
    adapters live in :attr:`adapters`; give :meth:`parameters` to the optimizer
    (``train(..., extra_params=loss.parameters())``). :attr:`last` holds the latest term values.
    """

    def __init__(
        self,
        teacher: nn.Module,
        cfg: DistillConfig,
        hint_pairs: Pairs = (),
        attention_pairs: Pairs = (),
        adapters: nn.ModuleList | None = None,
        teacher_input: Callable[[Tensor], Tensor] | None = None,
        notes: list[str] | None = None,
    ):
        self.teacher = teacher.eval()  # run under no_grad: never trained, never changed
        self.cfg = cfg
        self.hint_pairs, self.attention_pairs = hint_pairs, attention_pairs
        self.adapters = adapters if adapters is not None else nn.ModuleList()
        self.teacher_input = teacher_input or (lambda x: x)
        self.notes = notes or []
        self.last: dict[str, float] = {}

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.adapters.parameters()

    def to(self, device: torch.device | str) -> KDLoss:
        """Teacher and hint adapters to ``device``, where the student trains; returns self."""
        self.teacher.to(device)
        self.adapters.to(device)
        return self

    def __call__(self, net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        student, cfg = _unwrap(net), self.cfg
        t_layers = [t for t, _ in self.hint_pairs + self.attention_pairs]
        s_layers = [s for _, s in self.hint_pairs + self.attention_pairs]
        self.teacher.eval()
        with torch.no_grad(), tap(self.teacher, t_layers) as t_feats:
            t_logits = self.teacher(self.teacher_input(x))  # (B, classes)
        with tap(student, s_layers) as s_feats:
            s_logits = net(x)  # (B, classes)
        if t_logits.shape != s_logits.shape:
            raise ConfigError(
                f"teacher {type(self.teacher).__name__} outputs {tuple(t_logits.shape)} but student "
                f"{type(student).__name__} outputs {tuple(s_logits.shape)}; both must predict the same classes"
            )
        loss = hinton_loss(s_logits, t_logits, y, cfg.temperature, cfg.alpha, cfg.label_smoothing)
        self.last = {"hinton": loss.item()}
        if self.hint_pairs:
            hint = sum(
                match_features(adapter, self.teacher, student, t_feats[t], s_feats[s])
                for adapter, (t, s) in zip(self.adapters, self.hint_pairs)
            ) / len(self.hint_pairs)
            loss = loss + cfg.hint_weight * hint
            self.last["hint"] = hint.item()
        if self.attention_pairs:
            att = sum(
                self._attention_term(student, t_feats[t], s_feats[s], t)
                for t, s in self.attention_pairs
            ) / len(self.attention_pairs)
            loss = loss + cfg.attention_weight * att
            self.last["attention"] = att.item()
        return loss

    def _attention_term(self, student: nn.Module, t_feat: Tensor, s_feat: Tensor, t: str) -> Tensor:
        if t.endswith("attn_map"):
            return attention_map_kl(t_feat, s_feat)
        return attention_transfer(self.teacher, student, t_feat, s_feat)


def kd_loss_fn(
    teacher: nn.Module,
    cfg: DistillConfig,
    *,
    student: nn.Module | None = None,
    example: Tensor | None = None,
    teacher_input: Callable[[Tensor], Tensor] | None = None,
) -> KDLoss:
    """A ``loss_fn(net, x, y)`` for :func:`modelpress.train.train` that distils ``teacher``.

    With the defaults (Hinton term only) the teacher alone is needed. Hint or attention terms
    also need the ``student`` and an ``example`` batch (student view) to size the adapters and
    resolve ``"auto"`` layer pairs; pass ``loss.parameters()`` to ``train(extra_params=...)``.

    >>> loss = kd_loss_fn(teacher, DistillConfig())                            # doctest: +SKIP
    >>> train(student, data, TrainConfig(epochs=20), loss_fn=loss)
    """
    if not (cfg.hint_weight > 0 or cfg.attention_weight > 0):
        return KDLoss(teacher, cfg, teacher_input=teacher_input)
    if student is None or example is None:
        raise ConfigError(
            "hint/attention distillation needs the student and an example batch: "
            "kd_loss_fn(teacher, cfg, student=model, example=data.train.x[:2])"
        )
    to_teacher = teacher_input or (lambda x: x)
    example = torch.as_tensor(example)
    teacher.eval()
    hint_pairs, att_pairs, notes = _resolve_pairs(
        teacher, student, cfg, to_teacher(example), example
    )
    was_training = student.training
    student.eval()
    t_layers, s_layers = (
        [t for t, _ in hint_pairs + att_pairs],
        [s for _, s in hint_pairs + att_pairs],
    )
    with torch.no_grad(), tap(teacher, t_layers) as tf, tap(student, s_layers) as sf:
        teacher(to_teacher(example))
        student(example)
    student.train(was_training)
    _check_attention_pairs(att_pairs, tf, sf)
    adapters = nn.ModuleList(make_adapter(teacher, student, tf[t], sf[s]) for t, s in hint_pairs)
    return KDLoss(teacher, cfg, hint_pairs, att_pairs, adapters, teacher_input, notes)


def _resolve_pairs(
    teacher: nn.Module, student: nn.Module, cfg: DistillConfig, t_example: Tensor, s_example: Tensor
) -> tuple[Pairs, Pairs, list[str]]:
    """The (teacher, student) layer pairs of the hint and attention terms, "auto" resolved."""
    notes: list[str] = []
    hint_pairs: Pairs = ()
    if cfg.hint_weight > 0:
        hint_pairs = auto_hint_pairs(teacher, student) if cfg.hints == "auto" else cfg.hints
    att_pairs: Pairs = ()
    if cfg.attention_weight > 0 and cfg.attention == "auto":
        att_pairs, note = auto_attention_pairs(teacher, student, t_example, s_example)
        notes.append(note)
    elif cfg.attention_weight > 0:
        att_pairs = cfg.attention
    return hint_pairs, att_pairs, notes


def _check_attention_pairs(pairs: Pairs, tf: dict[str, Tensor], sf: dict[str, Tensor]) -> None:
    for t, s in pairs:
        if t.endswith("attn_map") != s.endswith("attn_map"):
            raise ConfigError(
                f"attention pair ({t!r}, {s!r}) mixes an attention map with a feature map; "
                "pair attn_map with attn_map, or feature layers with feature layers"
            )
        if t.endswith("attn_map") and tf[t].shape[-1] != sf[s].shape[-1]:
            raise ConfigError(
                f"attention maps {t!r} ({tf[t].shape[-1]} tokens) and {s!r} ({sf[s].shape[-1]} "
                "tokens) differ in length; pair feature layers instead (attention transfer)"
            )


def new_student(
    name: str,
    data: DataBundle,
    path: str | Path,
    *,
    width: float = 1.0,
    seed: int = 0,
    **overrides: Any,
) -> Artifact:
    """Create registry model ``name`` (seeded, untrained) for ``data`` and save it as a student.

    >>> student = new_student("resnet8", data, "runs/s.safetensors", width=0.25)  # doctest: +SKIP
    """
    from ..baselines import model_for_data
    from ..checkpoint import save_trained
    from ..train import seed_everything

    seed_everything(seed)
    model = model_for_data(name, data, width=width, **overrides)
    lineage = [{"stage": "init", "model": name, "width": width, "seed": seed}]
    return save_trained(path, model, data, lineage=lineage)


def _check_pair(t_meta: Any, s_meta: Any, data: DataBundle) -> None:
    if list(t_meta.labels) != list(s_meta.labels):
        raise ConfigError(
            f"teacher {t_meta.model.name} predicts {len(t_meta.labels)} labels {t_meta.labels[:5]} "
            f"but student {s_meta.model.name} {len(s_meta.labels)} labels {s_meta.labels[:5]}; "
            "distil between models of the same classes"
        )
    if s_meta.input_spec != data.input_spec.to_dict() or list(s_meta.labels) != data.labels:
        raise ConfigError(
            f"the pass data gives {data.input_spec.kind} {data.input_spec.shape} input with "
            f"{data.num_classes} labels but student {s_meta.model.name} expects "
            f"{s_meta.input_spec['kind']} {tuple(s_meta.input_spec['shape'])}; load the student's data view"
        )


def distill(
    teacher: Artifact,
    student: Artifact,
    cfg: DistillConfig,
    ctx: PassContext,
    train_cfg: TrainConfig | None = None,
) -> PassResult:
    """Train ``student`` (a checkpoint, trained or fresh) on ``ctx.data`` with ``teacher``'s help.

    ``ctx.data`` is the student's view of the data; the teacher may take the other image view.
    ``train_cfg`` defaults to the student model's recommended schedule, seeded with ``ctx.seed``.
    Teacher, student and adapters train on ``train_cfg.device``, or on ``ctx.device`` when that
    is ``auto``.

    >>> ctx = PassContext(data=load_dataset("digits"), out_dir=Path("runs/kd"))  # doctest: +SKIP
    >>> result = distill(teacher_art, new_student("resnet8", ctx.data, "s.safetensors", width=0.25),
    ...                  DistillConfig(), ctx)
    >>> result.record.after.accuracy
    """
    from ..baselines import train_config_for
    from ..metrics import accuracy
    from ..train import predict_logits, seed_everything, train, training_device

    t_model, t_ckpt = load_model(teacher)
    s_model, s_ckpt = load_model(student)
    _check_pair(t_ckpt.meta, s_ckpt.meta, ctx.data)
    to_teacher = view_converter(
        t_ckpt.meta.preprocessing, ctx.data.preprocessing, t_ckpt.input_spec, ctx.data.input_spec
    )
    view_converter(  # the student's own checkpoint must describe the same data as ctx.data
        s_ckpt.meta.preprocessing, ctx.data.preprocessing, s_ckpt.input_spec, ctx.data.input_spec
    )
    train_cfg = train_cfg or train_config_for(s_ckpt.meta.model.name, seed=ctx.seed)
    if train_cfg.device == "auto":
        train_cfg = dataclasses.replace(train_cfg, device=ctx.device)
    device = training_device(train_cfg.device)
    test = ctx.data.test
    with timed() as clock:
        before = model_stats(s_model, ctx.data, student.size_bytes)
        seed_everything(train_cfg.seed)
        example = torch.as_tensor(ctx.data.train.x[:2])
        loss = kd_loss_fn(t_model, cfg, student=s_model, example=example, teacher_input=to_teacher)
        loss.to(device)
        try:
            t_acc = accuracy(predict_logits(t_model, to_teacher(torch.as_tensor(test.x))), test.y)
            result = train(
                s_model,
                ctx.data,
                train_cfg,
                progress=ctx.progress,
                loss_fn=loss,
                extra_params=list(loss.parameters()),
            )
        finally:
            loss.to("cpu")
        config = {**cfg.to_dict(), "teacher": t_ckpt.meta.model.name, "teacher_id": t_ckpt.meta.id}
        metrics = {"test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy}
        art = save_pass_output(result.model, s_ckpt, ctx, "distill", config, metrics)
    after = model_stats(result.model, ctx.data, art.size_bytes)
    details = {
        "teacher": t_ckpt.meta.model.name,
        "teacher_id": t_ckpt.meta.id,
        "teacher_accuracy": t_acc,
        "hint_pairs": [list(p) for p in loss.hint_pairs],
        "attention_pairs": [list(p) for p in loss.attention_pairs],
        "adapter_params": sum(p.numel() for p in loss.parameters()),
        "device": result.device,
        "train": {**train_cfg.to_dict(), **result.summary()},
    }
    notes = [*loss.notes]
    if loss.hint_pairs:
        notes.append("hint adapters were trained with the student and are not saved with it")
    record = PassRecord("distill", cfg.to_dict(), before, after, clock["seconds"], notes, details)
    return PassResult(artifact=art, model=result.model, record=record)
