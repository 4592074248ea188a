"""Quantization preparation in torch: quantization-aware training to a QDQ ONNX graph, and fp16.

:func:`qat` captures the model with ``torch.export``, inserts fake quantization with torchao's
``prepare_qat_pt2e`` and the X86 inductor quantizer (int8 per-channel symmetric weights; int8
symmetric activations by default, the zero-point-free form TensorRT needs and ONNX Runtime runs),
fine-tunes it, converts it with ``convert_pt2e`` and exports the result as an ONNX graph with
``QuantizeLinear`` / ``DequantizeLinear`` nodes and a dynamic batch dimension. The pass measures
that file's accuracy on ONNX Runtime, not on a simulation. What the quantizer annotates: conv and
linear layers (with their ReLU / add / pooling neighbours). GRU/LSTM cells, embeddings, attention
matmuls and LayerNorm stay float; the record's ``float_layers`` lists every one that did.

:func:`to_fp16` halves a checkpoint: float16 weights in the safetensors file.

>>> from modelpress.compress.quantize import QATConfig, qat              # doctest: +SKIP
>>> result = qat(artifact, QATConfig(epochs=3), PassContext(data, Path("runs/q")))
>>> result.artifact.path, result.record.after.accuracy                   # .onnx, on onnxruntime
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..artifact import Artifact, stage_id
from ..compute import describe_device, module_device, move_graph_module, resolve_device
from ..data.base import DataBundle, Split
from ..errors import BuildError, ConfigError
from ..metrics import accuracy
from ..quiet import quiet_logger
from .base import (
    ModelStats,
    PassContext,
    PassRecord,
    PassResult,
    load_model,
    model_stats,
    save_pass_output,
    timed,
)

ACTIVATIONS = ("symmetric", "asymmetric")


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware fine-tuning of a trained model, exported as QDQ ONNX."""

    epochs: int = 5
    lr: float = 5e-4
    weight_decay: float = 0.0
    batch_size: int = 64
    activations: str = "symmetric"  # int8, zero point 0 (ORT + TensorRT) | asymmetric: uint8
    keep_float: tuple[str, ...] = ()  # module paths left unquantized (see sensitivity())
    opset: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 2:
            raise ConfigError("QATConfig: epochs must be >= 0 and batch_size >= 2")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.weight_decay < 0:
            raise ConfigError("QATConfig: lr must be > 0 and weight_decay >= 0")
        if self.activations not in ACTIVATIONS:
            raise ConfigError(
                f"QATConfig.activations {self.activations!r} is unknown; choose one of {ACTIVATIONS}"
            )
        object.__setattr__(self, "keep_float", tuple(self.keep_float))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "keep_float": list(self.keep_float)}


def _quiet():
    """torchao logs a warning per optional CUDA kernel library it cannot load on CPU."""
    return quiet_logger("torchao", warnings_too=True)


def _quantizer(cfg: QATConfig):
    with _quiet():
        from torchao.quantization.pt2e import (
            FusedMovingAvgObsFakeQuantize,
            MovingAverageMinMaxObserver,
            MovingAveragePerChannelMinMaxObserver,
        )
        from torchao.quantization.pt2e.quantizer import QuantizationConfig, QuantizationSpec
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    sym = cfg.activations == "symmetric"
    act = QuantizationSpec(
        dtype=torch.int8 if sym else torch.uint8,
        quant_min=-128 if sym else 0,
        quant_max=127 if sym else 255,
        qscheme=torch.per_tensor_symmetric if sym else torch.per_tensor_affine,
        observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, eps=2**-12
        ),
    )
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, eps=2**-12
        ),
    )
    quantizer = X86InductorQuantizer().set_global(
        QuantizationConfig(act, act, weight, None, is_qat=True)
    )
    for name in cfg.keep_float:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def _split_repeated_calls(gm: torch.fx.GraphModule) -> None:
    """Give each call of a module used twice in one forward (``self.act`` in a residual block)
    its own name, so the quantizer's pattern matcher sees one partition per call."""
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack:
            continue
        key, (fqn, cls) = list(stack.items())[-1]
        if "@" in key:
            stack[key] = (f"{fqn}@{key.rsplit('@', 1)[1]}", cls)


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every ``Conv2d -> BatchNorm2d`` pair inside an ``nn.Sequential`` (eval statistics)
    into the convolution, in place; the norm becomes an identity. Returns how many were folded.

    QAT then trains the folded convolutions directly, which spares torchao's conv-bn pattern
    rewrites (~100 pattern exports, tens of seconds on CPU) and gives the same deployed graph.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        items = list(seq._modules.items())
        for (_, conv), (bn_name, bn) in zip(items, items[1:]):
            if isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d:
                fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
                conv.weight, conv.bias = fused.weight, fused.bias
                seq._modules[bn_name] = nn.Identity()
                folded += 1
    return folded


def prepare_qat(model: nn.Module, example: torch.Tensor, cfg: QATConfig) -> torch.fx.GraphModule:
    """Capture ``model`` (train mode, dynamic batch) and insert fake quantization.

    Batch norms in ``Conv2d -> BatchNorm2d`` sequences are folded first (:func:`fold_batch_norms`).
    """
    with _quiet():
        from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    model = copy.deepcopy(model).eval()
    fold_batch_norms(model)
    model.train()
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with _quiet():
            gm = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
            _split_repeated_calls(gm)
            return prepare_qat_pt2e(gm, _quantizer(cfg))
    except ConfigError:
        raise
    except Exception as exc:  # export / annotation raise many types; name the model
        raise BuildError(
            f"QAT preparation of {type(model).__name__} failed: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc


def _fq_accuracy(gm: torch.fx.GraphModule, split: Split, batch: int = 512) -> float:
    from torchao.quantization.pt2e import move_exported_model_to_eval

    move_exported_model_to_eval(gm)
    x, device = torch.as_tensor(split.x), module_device(gm)
    with torch.no_grad():
        logits = torch.cat([gm(x[i : i + batch].to(device)).cpu() for i in range(0, len(x), batch)])
    return accuracy(logits.numpy(), split.y)


def calibrate(gm: torch.fx.GraphModule, x: np.ndarray, batch: int = 128) -> None:
    """Set the quantization ranges from ``x`` (inference mode, observers on), on the graph's
    device."""
    from torchao.quantization.pt2e import enable_observer, move_exported_model_to_eval

    move_exported_model_to_eval(gm)
    gm.apply(enable_observer)
    t, device = torch.as_tensor(x), module_device(gm)
    with torch.no_grad():
        for i in range(0, len(t), batch):
            gm(t[i : i + batch].to(device))


def train_qat(
    gm: torch.fx.GraphModule,
    data: DataBundle,
    cfg: QATConfig,
    progress: bool = False,
    device: str | torch.device = "auto",
) -> list[dict[str, float]]:
    """Fine-tune a prepared model on train (cosine lr); keep the best val epoch's state.

    The graph trains on ``device`` (``auto``: CUDA when torch sees a GPU) and comes back to the
    CPU, where it is converted and exported, also when training fails."""
    move_graph_module(gm, resolve_device(device))
    try:
        return _qat_epochs(gm, data, cfg, progress)
    finally:
        move_graph_module(gm, torch.device("cpu"))


def _qat_epochs(
    gm: torch.fx.GraphModule, data: DataBundle, cfg: QATConfig, progress: bool
) -> list[dict[str, float]]:
    from torchao.quantization.pt2e import (
        disable_observer,
        enable_observer,
        move_exported_model_to_train,
    )

    from ..progress import reporter
    from ..train import EPOCH_LINE_S, random_shift

    device = module_device(gm)
    gen = torch.Generator().manual_seed(cfg.seed)
    x_all, y_all = torch.as_tensor(data.train.x), torch.as_tensor(data.train.y)
    steps = max(1, -(-len(y_all) // cfg.batch_size))
    opt = torch.optim.AdamW(gm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps))
    shift = data.preprocessing.get("layout") == "NCHW"
    calibrate(gm, data.calibration(256, seed=cfg.seed))
    gm.apply(disable_observer)
    best = {"acc": _fq_accuracy(gm, data.val), "state": copy.deepcopy(gm.state_dict())}
    history = [{"epoch": 0, "val_accuracy": best["acc"]}]
    with reporter(progress).task("qat", cfg.epochs, "epoch", min_interval=EPOCH_LINE_S) as task:
        for epoch in range(1, cfg.epochs + 1):
            move_exported_model_to_train(gm)
            gm.apply(enable_observer)
            perm = torch.randperm(len(y_all), generator=gen)
            for i in range(steps):
                idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                if len(idx) < 2:  # batch norm needs two samples in train mode
                    continue
                xb = random_shift(x_all[idx], gen) if shift else x_all[idx]
                loss = F.cross_entropy(gm(xb.to(device)), y_all[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            gm.apply(disable_observer)  # evaluation must not move the quantization ranges
            acc = _fq_accuracy(gm, data.val)
            history.append({"epoch": epoch, "val_accuracy": acc})
            if acc > best["acc"]:
                best = {"acc": acc, "state": copy.deepcopy(gm.state_dict())}
            task.advance(f"val {acc:.4f} (fake-quantized)")
    gm.load_state_dict(best["state"])
    return history


class _Frozen(nn.Module):
    """Wraps a converted pt2e graph so exporters may call ``.eval()`` on it (a no-op)."""

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__()
        self.gm = gm

    def train(self, mode: bool = True) -> _Frozen:  # the graph is already in inference form
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gm(x)


_WEIGHTED = ("conv", "linear", "gru", "lstm", "rnn", "embedding")


def float_layers(model: nn.Module, converted: torch.fx.GraphModule) -> list[str]:
    """Leaf modules with weights whose op in ``converted`` takes no dequantized weight.

    Batch norms are left out: QAT folds them into the convolution before them.
    """
    quantized = set()
    for node in converted.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or not stack:
            continue
        if not any(w in str(node.target) for w in _WEIGHTED):
            continue
        fed = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if any("dequantize" in str(a.target) for a in fed[1:]):  # args[1:]: weights, bias
            quantized.add(list(stack.values())[-1][0].split("@")[0])
    return [
        name
        for name, m in model.named_modules()
        if name
        and m._parameters
        and not list(m.children())
        and not isinstance(m, nn.modules.batchnorm._BatchNorm)
        and name not in quantized
    ]


def onnx_logits(path: str, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits of an ONNX file on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    )


def qat(art: Artifact, cfg: QATConfig, ctx: PassContext) -> PassResult:
    """Quantization-aware training of a checkpoint; the result is a QDQ ONNX file.

    ``record.after.accuracy`` is measured on ONNX Runtime on the test split. The fine-tuning
    runs on ``ctx.device``; capture, conversion and ONNX export run on the CPU.

    >>> result = qat(artifact, QATConfig(), PassContext(data, Path("runs/q")))  # doctest: +SKIP
    """
    from ..export import export_onnx

    model, ckpt = load_model(art)
    device = resolve_device(ctx.device)
    with timed() as clock:
        before = model_stats(model, ctx.data, art.size_bytes)
        torch.manual_seed(cfg.seed)
        gm = prepare_qat(model, torch.as_tensor(ctx.data.train.x[:8]), cfg)
        history = train_qat(gm, ctx.data, cfg, progress=ctx.progress, device=device)
        with _quiet():
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

            converted = convert_pt2e(gm)
        left_float = float_layers(model, converted)
        from ..targets.base import safe_stem  # the name comes from the file: never a path

        dest = ctx.out_dir / f"{safe_stem(ckpt.meta.model.name)}.qat.onnx"
        meta = _onnx_meta(ckpt.meta.model_dump(), cfg, left_float, history)
        onnx_art = export_onnx(
            _Frozen(converted), ckpt.input_spec, dest, meta, opset=cfg.opset, parent_id=art.id
        )
        onnx_art = replace(onnx_art, id=stage_id(art.id, "qat", cfg.to_dict()))  # the cache key
        logits = onnx_logits(str(onnx_art.path), ctx.data.test.x)
    test_acc = accuracy(logits, ctx.data.test.y)
    after = ModelStats(before.params, before.macs, onnx_art.size_bytes, test_acc)
    details = {
        "format": "onnx-qdq",
        "runtime": "onnxruntime CPUExecutionProvider",
        "device": describe_device(device),  # of the fine-tuning
        "qdq_nodes": _count_qdq(str(onnx_art.path)),
        "float_layers": left_float,
        "val_history": history,
        "fake_quant_val_accuracy": max(h["val_accuracy"] for h in history),  # kept state
    }
    notes = []
    if left_float:
        notes.append(
            f"left in float (the quantizer does not annotate them): {', '.join(left_float)}"
        )
    record = PassRecord("qat", cfg.to_dict(), before, after, clock["seconds"], notes, details)
    return PassResult(artifact=onnx_art, model=converted, record=record)


def _onnx_meta(
    parent: dict[str, Any], cfg: QATConfig, left_float: list[str], history: list[dict[str, float]]
) -> dict[str, Any]:
    keep = ("model", "input_spec", "labels", "preprocessing", "metrics")
    meta = {k: parent[k] for k in keep if k in parent}
    meta["lineage"] = [*parent.get("lineage", []), {"stage": "qat", **cfg.to_dict()}]
    act = "int8 symmetric" if cfg.activations == "symmetric" else "uint8 asymmetric"
    meta.update(
        precision="int8",
        parent_id=parent.get("id", ""),
        quantization={
            "format": "qdq",
            "weights": "int8 per-channel symmetric",
            "activations": f"{act} per-tensor",
            "float_layers": left_float,
            "best_val_accuracy_fake_quant": max(h["val_accuracy"] for h in history),
        },
    )
    return meta


def _count_qdq(path: str) -> dict[str, int]:
    import onnx

    ops = [n.op_type for n in onnx.load(path, load_external_data=False).graph.node]
    return {op: ops.count(op) for op in ("QuantizeLinear", "DequantizeLinear")}


def to_fp16(art: Artifact, ctx: PassContext) -> PassResult:
    """The checkpoint with float16 weights (half the bytes); it loads back into float32 modules.

    The after-accuracy is measured with float32 compute on the fp16-rounded weights (fp16
    compute is a CUDA target's business).

    >>> half = to_fp16(artifact, PassContext(data, Path("runs/fp16")))      # doctest: +SKIP
    """
    from ..checkpoint import load_checkpoint

    model, ckpt = load_model(art)
    with timed() as clock:
        before = model_stats(model, ctx.data, art.size_bytes)
        half = copy.deepcopy(model).half()
        out = save_pass_output(half, ckpt, ctx, "fp16", {"dtype": "float16"}, ckpt.meta.metrics)
        reloaded = load_checkpoint(out.path).model
        after = model_stats(reloaded, ctx.data, out.size_bytes)
    record = PassRecord(
        "fp16",
        {"dtype": "float16"},
        before,
        after,
        clock["seconds"],
        details={"bytes_ratio": after.bytes / before.bytes},
    )
    return PassResult(artifact=out, model=reloaded, record=record)
