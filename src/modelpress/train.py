"""Training and evaluation loops: AdamW + one-cycle schedule, early stopping on val, seeded.

Runs single-process or under ``torchrun`` (DDP: gloo on the CPU, nccl on CUDA with one GPU per
rank, ``cuda:LOCAL_RANK``): each rank takes a disjoint shard of every shuffled epoch and the
global batch stays ``batch_size``. ``TrainConfig.device`` (``auto``: CUDA when torch sees a GPU)
is where the model trains; the data stays on the CPU and moves one batch at a time, and the
trained model comes back on the CPU, so checkpoints never hold device tensors.

>>> from modelpress.data import load_dataset
>>> from modelpress.models import create_model
>>> from modelpress.train import TrainConfig, seed_everything, train
>>> data = load_dataset("digits")
>>> seed_everything(0)
>>> model = create_model("resnet8", input_spec=data.input_spec, num_classes=data.num_classes)
>>> result = train(model, data, TrainConfig(epochs=2), progress=False)   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .compute import check_device_spelling, describe_device, module_device, resolve_device
from .data.base import DataBundle, Split
from .errors import ConfigError
from .metrics import accuracy
from .progress import Reporter, reporter

AUGMENTS = ("auto", "none", "shift")
EPOCH_LINE_S = 2.0  # without a terminal: at most one epoch line per this many seconds
BATCH_TICK_S = 1.0  # inside an epoch slower than this, progress moves with the batches


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    patience: int = 12  # epochs without a better val accuracy before stopping
    augment: str = "auto"  # auto: 1-pixel shifts for image data (either view), else none
    grad_clip: float = 1.0
    seed: int = 0
    max_seconds: float | None = None  # stop after the epoch that crosses this wall time
    device: str = "auto"  # auto | cpu | cuda | cuda:N; resolved when training starts

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("epochs, batch_size and patience must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise ConfigError("lr must be > 0, weight_decay >= 0 and label_smoothing in [0, 1)")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"augment {self.augment!r} is unknown; choose one of {AUGMENTS}")
        check_device_spelling(self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    model: nn.Module
    best_epoch: int
    epochs_run: int
    val_accuracy: float
    test_accuracy: float
    seconds: float
    world_size: int
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"  # where it trained, in words: cpu, cuda:0 (NVIDIA H200)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("model", "history")}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (call before building the model for a reproducible init)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a torchrun process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def training_device(spec: str | None) -> torch.device:
    """The device a training of ``spec`` runs on: :func:`~modelpress.compute.resolve_device`,
    except in a torchrun process group (see :func:`rank_device`)."""
    return rank_device(spec) if dist_info()[1] > 1 else resolve_device(spec)


def rank_device(spec: str | None) -> torch.device:
    """This torchrun rank's device: with CUDA, one GPU per rank, ``cuda:LOCAL_RANK``.

    ``auto`` takes the CPU when the node has fewer GPUs than processes (every rank decides the
    same); an explicit ``cuda`` then is a ConfigError."""
    device = resolve_device(spec)
    if device.type != "cuda":
        return device
    per_node, count = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
    if per_node <= count:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if spec in (None, "auto"):
        return torch.device("cpu")
    raise ConfigError(
        f"torchrun starts {per_node} processes per node but torch sees {count} GPU(s) for "
        f"device {spec!r}: one GPU per process, so start at most {count} (--nproc_per_node), "
        "or use device: cpu"
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512
) -> np.ndarray:
    """Logits for every row of ``x`` (eval mode, no grad), computed on the model's device and
    returned as a CPU array."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    x = torch.as_tensor(x)
    outs = [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)


def evaluate(model: nn.Module, split: Split) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``split``."""
    logits = predict_logits(model, split.x)
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(split.y)).item()
    return {"accuracy": accuracy(logits, split.y), "loss": loss}


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each (…, H, W) sample by up to ``max_shift`` pixels, edges replicated."""
    h, w = x.shape[-2:]
    flat = x.reshape(-1, 1, h, w) if x.dim() == 3 else x
    padded = F.pad(flat, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=gen)
    out = torch.empty_like(flat)
    for dy in range(2 * max_shift + 1):
        for dx in range(2 * max_shift + 1):
            sel = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
            if sel.any():
                out[sel] = padded[sel, :, dy : dy + h, dx : dx + w]
    return out.reshape(x.shape)


def _augmenter(
    cfg: TrainConfig, data: DataBundle
) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
    if cfg.augment == "shift" and data.input_spec.kind == "tokens":
        raise ConfigError("augment='shift' needs image or sequence input, not tokens")
    image_like = data.preprocessing.get("layout") == "NCHW"  # images, or rows of images as steps
    if cfg.augment == "shift" or (cfg.augment == "auto" and image_like):
        return random_shift
    return None


def train(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    *,
    progress: bool | Reporter = True,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    extra_params: Iterable[nn.Parameter] = (),
) -> TrainResult:
    """Train ``model`` on ``data.train``, keep the weights of the best val epoch, report test.

    ``loss_fn(model, x, y)`` replaces the cross-entropy step (distillation plugs in here);
    ``extra_params`` are trained alongside the model but not saved with it (distillation adapters).
    ``progress``: epochs (and the batches of slow epochs) with an ETA, as live bars on a
    terminal or plain lines elsewhere (see :mod:`modelpress.progress`); rank 0 only.
    ``cfg.device``: the model, ``extra_params`` and a ``loss_fn`` that has a ``.to`` method (a
    distillation loss with its teacher, an ``nn.Module``) train there (:func:`training_device`)
    and come back to the CPU at the end, also when training fails.
    """
    cfg = cfg or TrainConfig()
    device = training_device(cfg.device)
    extra = list(extra_params)
    _move(model, extra, loss_fn, device)
    try:
        return _fit(model, data, cfg, device, progress, loss_fn, extra)
    finally:
        _move(model, extra, loss_fn, torch.device("cpu"))


def _move(model: nn.Module, extra: list[nn.Parameter], loss_fn: Any, device: torch.device) -> None:
    """``model``, the loose parameters ``extra`` and ``loss_fn`` (when it has ``.to``) to
    ``device``, in place (the same parameter objects: an optimizer built on them before its first
    step still holds them)."""
    model.to(device)
    if callable(getattr(loss_fn, "to", None)):
        loss_fn.to(device)
    for p in extra:
        p.data = p.data.to(device)
        if p.grad is not None:
            p.grad = p.grad.to(device)


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class _Epochs:
    """What every epoch of :func:`_fit` uses: the (DDP-wrapped) net, its optimiser and schedule,
    the training set on the CPU and this rank's share of each shuffled epoch."""

    net: nn.Module
    params: list[nn.Parameter]
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    criterion: LossFn
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None
    x: torch.Tensor  # (N, ...) the train split, on the CPU
    y: torch.Tensor  # (N,)
    gen: torch.Generator  # shuffles and augments: the same on every rank
    device: torch.device
    rank: int
    world: int
    per_rank: int  # batch size on each rank
    steps: int  # batches per epoch
    grad_clip: float

    def order(self) -> torch.Tensor:
        """This rank's sample indices for one epoch: a shuffle padded to whole global batches."""
        perm = torch.randperm(len(self.y), generator=self.gen)
        perm = torch.cat([perm, perm[: self.steps * self.per_rank * self.world - len(perm)]])
        return perm[self.rank :: self.world]

    def run(self, task) -> float:
        """Train one epoch; returns the mean training loss. A slow epoch shows its batches."""
        self.net.train()
        perm = self.order()
        total_loss, tick = 0.0, time.perf_counter()
        for i in range(self.steps):
            idx = perm[i * self.per_rank : (i + 1) * self.per_rank]
            xb, yb = self.x[idx], self.y[idx]
            if self.augment is not None:  # on the CPU: the same shifts on every device
                xb = self.augment(xb, self.gen)
            xb, yb = xb.to(self.device), yb.to(self.device)
            loss = self.criterion(self.net, xb, yb)
            total_loss += _step(loss, self.opt, self.sched, self.params, self.grad_clip)
            if time.perf_counter() - tick > BATCH_TICK_S:
                task.partial((i + 1) / self.steps, f"batch {i + 1}/{self.steps}")
                tick = time.perf_counter()
        return total_loss / self.steps


def _epochs(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    device: torch.device,
    loss_fn: LossFn | None,
    extra_params: list[nn.Parameter],
) -> _Epochs:
    """Set up the loop: DDP when distributed, AdamW + one-cycle, augmentation, the loss."""
    rank, world = dist_info()
    y = torch.as_tensor(data.train.y)
    per_rank = max(1, cfg.batch_size // world)
    steps = max(1, -(-len(y) // (per_rank * world)))
    net: nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    params = [*model.parameters(), *extra_params]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps)
    criterion = loss_fn or (
        lambda m, x, y: F.cross_entropy(m(x), y, label_smoothing=cfg.label_smoothing)
    )
    return _Epochs(
        net=net,
        params=params,
        opt=opt,
        sched=sched,
        criterion=criterion,
        augment=_augmenter(cfg, data),
        x=torch.as_tensor(data.train.x),
        y=y,
        gen=torch.Generator().manual_seed(cfg.seed),
        device=device,
        rank=rank,
        world=world,
        per_rank=per_rank,
        steps=steps,
        grad_clip=cfg.grad_clip,
    )


@dataclass
class _Best:
    """The best validation epoch so far (accuracy, then lower loss) and a copy of its weights."""

    acc: float = -1.0
    loss: float = float("inf")
    epoch: int = 0
    state: dict[str, Any] | None = None

    def offer(self, epoch: int, val: dict[str, float], model: nn.Module) -> None:
        if (val["accuracy"], -val["loss"]) > (self.acc, -self.loss):
            self.acc, self.loss, self.epoch = val["accuracy"], val["loss"], epoch
            self.state = copy.deepcopy(model.state_dict())


def _fit(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    device: torch.device,
    progress: bool | Reporter,
    loss_fn: LossFn | None,
    extra_params: list[nn.Parameter],
) -> TrainResult:
    """The training loop of :func:`train`, with the model already on ``device``."""
    epochs = _epochs(model, data, cfg, device, loss_fn, extra_params)
    best, history = _Best(), []
    start = time.perf_counter()
    name = getattr(model, "registry_name", type(model).__name__)
    rep = reporter(progress if epochs.rank == 0 else False)
    with rep.task(f"train {name}", cfg.epochs, "epoch", min_interval=EPOCH_LINE_S) as task:
        for epoch in range(1, cfg.epochs + 1):
            train_loss = epochs.run(task)
            val = evaluate(model, data.val)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_accuracy": val["accuracy"],
                    "val_loss": val["loss"],
                }
            )
            best.offer(epoch, val, model)
            stop = _stop_reason(cfg, epoch - best.epoch, time.perf_counter() - start)
            message = f"loss {train_loss:.4f}, val {val['accuracy']:.4f}"
            if stop:
                message += f"; {stop}, best val {best.acc:.4f} at epoch {best.epoch}"
            task.advance(message, final=bool(stop))
            if stop:
                break
    model.load_state_dict(best.state)
    model.eval()
    return TrainResult(
        model=model,
        best_epoch=best.epoch,
        epochs_run=epoch,
        val_accuracy=best.acc,
        test_accuracy=evaluate(model, data.test)["accuracy"],
        seconds=time.perf_counter() - start,
        world_size=epochs.world,
        history=history,
        device=describe_device(device),
    )


def _step(loss: torch.Tensor, opt, sched, params: list, grad_clip: float) -> float:
    """One optimiser step on ``loss``; returns its value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    sched.step()
    return loss.item()


def _stop_reason(cfg: TrainConfig, since_best: int, elapsed: float) -> str:
    """Why training stops after this epoch ('' to go on): patience or the time budget."""
    if since_best >= cfg.patience:
        return f"early stop: no better val for {since_best} epochs"
    if cfg.max_seconds and elapsed > cfg.max_seconds:
        return f"stop: time budget of {cfg.max_seconds:g} s spent"
    return ""


def init_distributed(device: str | None = "auto") -> bool:
    """Join the torchrun process group when launched by torchrun; True if distributed.

    The backend follows the training ``device`` (the same spelling as ``TrainConfig.device``,
    decided by :func:`rank_device`): nccl when it is CUDA, each rank on ``cuda:LOCAL_RANK``;
    gloo on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not torch.distributed.is_initialized():
        rank = rank_device(device)
        if rank.type == "cuda":
            torch.cuda.set_device(rank)
        torch.distributed.init_process_group(backend="nccl" if rank.type == "cuda" else "gloo")
    return True
