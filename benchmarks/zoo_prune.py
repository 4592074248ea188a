"""Models that are not ours, pruned to half their MACs: does latency follow on ONNX Runtime and
LiteRT?

Every architecture of the test zoo (``tests/zoo_nets.py``: transformers BERT, DistilBERT, ViT,
ResNet, MobileNetV2, ConvNeXt, and a plain ``nn.TransformerEncoder`` classifier) is built through
its factory at a size where a batch-1 call takes milliseconds (random init: latency and shapes
are what is measured here, not accuracy), made to return its logits
(``model_io.adapt_output``), and a copy is pruned to at most half its MACs (``PruneConfig(
macs_budget=0.5, recovery="none")``, library defaults otherwise). Dense and pruned are saved as
factory checkpoints, built for ONNX Runtime fp32 (one graph, dynamic batch) and LiteRT fp32 (one
graph per batch: LiteRT graphs have a fixed batch), checked against torch (max |logit
difference| on 8 samples), and timed on the same runtime, dense and pruned calls interleaved,
at batch 1 and batch 8, on 1 thread. MAC -> latency efficiency = latency speed-up / MAC
reduction (Torch-Pruning's ResNet-50 table: 2.19 / 3.85 = 0.57). A step that fails (prune,
export, convert, run) is a row that says why; the others go on.

    .venv/bin/python benchmarks/zoo_prune.py [--archs bert,resnet] [--rounds 200] [--quick] \
        [--out benchmarks/results/zoo_prune.md]

``--quick``: tiny sizes and few rounds, a smoke run (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from machine import measuring

ROOT = Path(__file__).resolve().parents[1]
BATCHES = (1, 8)
RUNTIMES = ("onnxruntime", "litert")
PRUNE = {"macs_budget": 0.5, "recovery": "none"}  # importance l2, global, round_to 8: defaults


@dataclass(frozen=True)
class Size:
    """The builder's keyword arguments and one sample's input shape."""

    kwargs: dict[str, Any]
    shape: tuple[int, ...]  # (C, H, W) image or (T,) token ids


@dataclass(frozen=True)
class Arch:
    """A zoo builder, which output is the logits, and its sizes (full run, --quick)."""

    builder: str  # function name in tests/zoo_nets.py
    output: str | None  # model_io output selector
    full: Size
    quick: Size


IMAGE = {"channels": 3, "classes": 10}
TEXT = {"vocab": 1000, "classes": 2}
BIG, SMALL = (3, 64, 64), (3, 32, 32)
TOKENS = {"max_len": 128, "dim": 256, "layers": 2, "heads": 4, "ffn": 1024}
PATCHES = {"image": 64, "patch": 8, "dim": 192, "layers": 4, "heads": 6, "ffn": 768}
ARCHS = {
    "bert": Arch(
        "build_bert",
        "logits",
        Size({**TEXT, **TOKENS}, (128,)),
        Size({**TEXT, "max_len": 32}, (32,)),
    ),
    "distilbert": Arch(
        "build_distilbert",
        "logits",
        Size({**TEXT, **TOKENS}, (128,)),
        Size({**TEXT, "max_len": 32}, (32,)),
    ),
    "vit": Arch(
        "build_vit", "logits", Size({**IMAGE, **PATCHES}, BIG), Size({**IMAGE, "image": 32}, SMALL)
    ),
    "resnet": Arch(
        "build_resnet",
        "logits",
        Size(
            {**IMAGE, "embedding": 64, "widths": [64, 128, 256, 512], "depths": [2, 2, 2, 2]}, BIG
        ),
        Size(IMAGE, SMALL),
    ),
    "mobilenetv2": Arch(
        "build_mobilenetv2",
        "logits",
        Size({**IMAGE, "image": 64, "depth_multiplier": 1.0}, BIG),
        Size({**IMAGE, "image": 32}, SMALL),
    ),
    "convnext": Arch(
        "build_convnext",
        "logits",
        Size({**IMAGE, "patch": 4, "widths": [48, 96, 192, 384], "depths": [2, 2, 2, 2]}, BIG),
        Size(IMAGE, SMALL),
    ),
    "torch_encoder": Arch(
        "build_torch_encoder",
        None,
        Size({**IMAGE, **PATCHES}, BIG),
        Size({**IMAGE, "image": 32}, SMALL),
    ),
}


def input_spec(size: Size):
    from modelpress.data import InputSpec

    if len(size.shape) == 1:
        return InputSpec("tokens", size.shape, "int64")
    return InputSpec("image", size.shape, "float32")


def sample(size: Size, batch: int, seed: int) -> np.ndarray:
    """Random inputs: token ids uniform in [1, vocab), or standard normal pixels."""
    rng = np.random.default_rng(seed)
    if len(size.shape) == 1:
        return rng.integers(1, size.kwargs["vocab"], (batch, *size.shape), dtype=np.int64)
    return rng.standard_normal((batch, *size.shape), dtype=np.float32)


@dataclass
class Variant:
    """One model (dense or pruned): its torch module, counts, checkpoint and runtime calls."""

    model: torch.nn.Module
    params: int
    macs: int
    checkpoint: Any = None
    calls: dict[tuple[str, int], Callable[[], object]] = field(default_factory=dict)
    diffs: dict[str, float] = field(default_factory=dict)  # runtime -> max |logit diff|


@dataclass
class Row:
    arch: str
    variants: dict[str, Variant] = field(default_factory=dict)
    times: dict[tuple[str, int], dict[str, list[float]]] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (step, reason)
    widths: str = ""
    logit_scale: float = 0.0  # max |dense torch logit| on the check batch
    prune_s: float = 0.0


def build_variants(
    name: str, arch: Arch, size: Size, row: Row, work: Path, prune: bool = True
) -> None:
    """Dense model through its factory, a pruned copy (unless not ``prune``), each counted and
    saved as a checkpoint."""
    from modelpress.checkpoint import save_checkpoint
    from modelpress.factory import allow_factory, build_from_factory
    from modelpress.metrics import count_macs, count_params
    from modelpress.model_io import adapt_output

    path = f"zoo_nets:{arch.builder}"
    allow_factory(path)
    torch.manual_seed(0)
    dense = adapt_output(build_from_factory(path, size.kwargs), arch.output)
    calibrate_norms(dense, size)
    example = torch.as_tensor(sample(size, 2, seed=1))
    row.variants["dense"] = Variant(dense, count_params(dense), count_macs(dense, example))
    if prune:
        prune_copy(dense, example, row)
    labels = [str(i) for i in range(size.kwargs["classes"])]
    for key, v in row.variants.items():
        v.checkpoint = save_checkpoint(
            work / f"{name}-{key}.safetensors",
            v.model,
            input_spec=input_spec(size),
            labels=labels,
            preprocessing={},
        )


def prune_copy(dense: torch.nn.Module, example: torch.Tensor, row: Row) -> None:
    from modelpress.compress.prune import PruneConfig, prune_model
    from modelpress.metrics import count_macs, count_params

    pruned = copy.deepcopy(dense)
    start = time.perf_counter()
    outcome = prune_model(pruned, example, PruneConfig(**PRUNE))
    row.prune_s = time.perf_counter() - start
    pruned.eval()
    row.variants["pruned"] = Variant(pruned, count_params(pruned), count_macs(pruned, example))
    row.widths = "; ".join(f"{k} {a}->{b}" for k, (a, b) in outcome.details["widths"].items())


def calibrate_norms(model: torch.nn.Module, size: Size) -> None:
    """BatchNorm running statistics from 64 random inputs, then eval mode. At random init the
    statistics are (0, 1) and activations shrink layer after layer (MobileNetV2's logits are
    ~1e-25), which would make the logit check meaningless."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    if norms:
        model.train()
        with torch.no_grad():
            for seed in range(4):
                model(torch.as_tensor(sample(size, 16, seed=10 + seed)))
    model.eval()


def ort_calls(v: Variant, key: str, xs: dict[int, np.ndarray], work: Path, ref) -> None:
    from modelpress.targets import get_target

    target = get_target("onnxruntime", threads=1)
    art = target.build(v.checkpoint, "fp32", None, work / f"ort-{key}")
    runner = target.load(art)
    v.diffs["onnxruntime"] = float(np.abs(runner.predict(xs[8]) - ref).max())
    for b, x in xs.items():
        v.calls[("onnxruntime", b)] = runner.prepare(x)


def litert_calls(v: Variant, key: str, xs: dict[int, np.ndarray], work: Path, ref) -> None:
    from modelpress.targets import get_target

    diffs = []
    for b, x in xs.items():
        target = get_target("litert", threads=1, batch=b)
        art = target.build(v.checkpoint, "fp32", None, work / f"litert-{key}-b{b}")
        runner = target.load(art)
        diffs.append(float(np.abs(runner.predict(xs[8]) - ref).max()))
        v.calls[("litert", b)] = litert_call(runner, x)
    v.diffs["litert"] = max(diffs)


def litert_call(runner, x: np.ndarray) -> Callable[[], object]:
    """The timed LiteRT call on a fixed batch ``x`` (the graph's own batch): ``set_tensor`` +
    ``invoke`` + ``get_tensor`` (the runner is kept alive by the closure)."""
    from modelpress.targets.litert import encode_input

    interp, inp, out = runner.interpreter, runner.inp, runner.out
    feed = encode_input(x, inp)

    def call(interp=interp, inp=inp, out=out, feed=feed, runner=runner):
        interp.set_tensor(inp["index"], feed)
        interp.invoke()
        return interp.get_tensor(out["index"])

    return call


BUILDERS = {"onnxruntime": ort_calls, "litert": litert_calls}


def prepare_runtime(runtime: str, row: Row, xs: dict[int, np.ndarray], work: Path) -> bool:
    """Build, check and prepare both variants on ``runtime``; False (and a failure) if not."""
    from modelpress.errors import one_line

    for key, v in row.variants.items():
        with torch.no_grad():
            ref = v.model(torch.as_tensor(xs[8])).numpy()
        if key == "dense":
            row.logit_scale = float(np.abs(ref).max())
        try:
            BUILDERS[runtime](v, key, xs, work, ref)
        except Exception as exc:  # any build / run failure is this row's result
            row.failures.append((f"{runtime} {key}", f"{type(exc).__name__}: {one_line(exc)}"))
            return False
    return True


def interleaved_ms(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    min_seconds: float = 0.0,
    warmup: int | None = None,
) -> dict[str, list[float]]:
    """Per-call wall times (ms), the functions alternating (order reversed every other round),
    after a warm-up of ``warmup`` (default max(5, rounds // 10)) calls each: at least ``rounds``
    rounds, and rounds until ``min_seconds`` have passed since the first timed call."""
    for fn in fns.values():
        for _ in range(max(5, rounds // 10) if warmup is None else warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    i, deadline = 0, time.perf_counter() + min_seconds
    while i < rounds or time.perf_counter() < deadline:
        for key in keys if i % 2 == 0 else keys[::-1]:
            start = time.perf_counter()
            fns[key]()
            times[key].append((time.perf_counter() - start) * 1e3)
        i += 1
    return times


def measure_arch(name: str, arch: Arch, quick: bool, rounds: int, work: Path) -> Row:
    from modelpress.errors import one_line

    row = Row(name)
    size = arch.quick if quick else arch.full
    try:
        build_variants(name, arch, size, row, work)
    except Exception as exc:
        row.failures.append(("prune / save", f"{type(exc).__name__}: {one_line(exc)}"))
        return row
    xs = {b: sample(size, b, seed=2) for b in BATCHES}  # xs[8] checks logits
    for runtime in RUNTIMES:
        if not prepare_runtime(runtime, row, xs, work / name):
            continue
        for b in BATCHES:
            n = rounds if b == 1 else max(10, rounds // 4)
            fns = {k: v.calls[(runtime, b)] for k, v in row.variants.items()}
            row.times[(runtime, b)] = interleaved_ms(fns, n)
        for v in row.variants.values():  # free the sessions / interpreters
            v.calls = {k: c for k, c in v.calls.items() if k[0] != runtime}
    print(summary_line(row), flush=True)
    return row


def summary_line(row: Row) -> str:
    parts = [row.arch]
    for (runtime, b), t in row.times.items():
        parts.append(f"{runtime} b{b} {speedup(t):.2f}x")
    return ", ".join(parts + [f"failed: {f[0]}" for f in row.failures])


def speedup(t: dict[str, list[float]]) -> float:
    return statistics.median(t["dense"]) / statistics.median(t["pruned"])


def speedup_text(t: dict[str, list[float]]) -> str:
    from modelpress.measure.stats import ratio_of_medians_ci

    ci = ratio_of_medians_ci(t["dense"], t["pruned"])
    return f"{ci.ratio:.2f}x [{ci.low:.2f}, {ci.high:.2f}]"


def runtime_table(rows: list[Row], runtime: str) -> list[str]:
    med = statistics.median
    out = [
        "| arch | params dense -> pruned | MACs dense -> pruned (reduction) | max abs logit diff "
        "dense / pruned (max abs logit) | p50 b1 ms dense / pruned (speed-up [95 % CI]) | p50 b8 ms dense / "
        "pruned (speed-up [95 % CI]) | efficiency b1 | efficiency b8 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if (runtime, 1) not in row.times:
            continue
        d, p = row.variants["dense"], row.variants["pruned"]
        reduction = d.macs / p.macs
        cells = [
            row.arch,
            f"{d.params:,} -> {p.params:,}",
            f"{d.macs / 1e6:,.1f}M -> {p.macs / 1e6:,.1f}M ({reduction:.2f}x)",
            f"{d.diffs[runtime]:.1e} / {p.diffs[runtime]:.1e} ({row.logit_scale:.2g})",
        ]
        for b in BATCHES:
            t = row.times[(runtime, b)]
            cells.append(f"{med(t['dense']):.3f} / {med(t['pruned']):.3f} ({speedup_text(t)})")
        cells += [f"{speedup(row.times[(runtime, b)]) / reduction:.2f}" for b in BATCHES]
        out.append("| " + " | ".join(cells) + " |")
    return out


def render(header: list[str], rows: list[Row], rounds: int, quick: bool) -> str:
    out = [
        "# Zoo architectures pruned to <= 50 % MACs: latency on ONNX Runtime and LiteRT",
        "",
        *header,
        "",
        "Ratios from one run. Efficiency = latency speed-up (dense p50 / pruned p50) / MAC "
        "reduction (dense MACs / pruned MACs); Torch-Pruning's ResNet-50 table: 2.19 / 3.85 = "
        "0.57; goal >= 0.8.",
        "",
    ]
    if quick:
        out += ["**--quick: tiny models, few rounds; a smoke run, the numbers mean nothing.**", ""]
    titles = {"onnxruntime": "ONNX Runtime fp32 (CPU EP)", "litert": "LiteRT fp32 (XNNPACK)"}
    for runtime in RUNTIMES:
        out += [f"## {titles[runtime]}, 1 thread", "", *runtime_table(rows, runtime), ""]
    failures = [(r.arch, step, why) for r in rows for step, why in r.failures]
    out += ["## Failures", ""]
    out += [f"- {a}, {step}: {why}" for a, step, why in failures] or ["None."]
    out += ["", "## Sizes and pruned widths", ""]
    for r in rows:
        arch = ARCHS[r.arch]
        size = arch.quick if quick else arch.full
        out.append(
            f"- {r.arch}, input {size.shape} (`zoo_nets.{arch.builder}(**{size.kwargs})`, pruned "
            f"in {r.prune_s:.0f} s): {r.widths or 'not pruned'}"
        )
    out += ["", "## How it was measured", "", *method(rounds)]
    return "\n".join(out)


def method(rounds: int) -> list[str]:
    return [
        "Each model is built through its factory (`modelpress.factory.build_from_factory`, "
        "torch seed 0, random init; BatchNorm statistics set from 64 random inputs), adapted to "
        "return its logits, and a deep copy is pruned "
        f"with `prune_model(copy, example, PruneConfig({PRUNE}))` (importance l2, global "
        "scope, round_to 8, max_layer_ratio 0.9, heads prunable: the library defaults; no "
        "recovery, so accuracy is not measured). MACs are `modelpress.metrics.count_macs` "
        "(one sample; convolutions, linear layers and every attention product, the "
        "transformers models' scaled_dot_product_attention included). Both models are saved "
        "as factory checkpoints and built from them by "
        "the targets (`get_target('onnxruntime', threads=1)`, `get_target('litert', threads=1, "
        "batch=b)` for b in 1 and 8, fp32), so every artifact is also a checkpoint round trip. "
        "The logit difference is the largest |runtime - torch| over 8 random inputs (LiteRT: "
        "the larger of its batch-1 and batch-8 graphs). Timed: ONNX Runtime's `session.run` "
        "on a prepared feed, LiteRT's `set_tensor` + `invoke` + `get_tensor`, on random "
        "inputs (token ids uniform in [1, vocab)). Dense and pruned calls alternate (the "
        f"order reversed every other round): {rounds} rounds at batch 1, {max(10, rounds // 4)}"
        " at batch 8, after a warm-up of a tenth as many calls (at least 5). p50 = median; "
        "the speed-up's interval is a moving-block bootstrap of the ratio of medians "
        "(`modelpress.measure.stats.ratio_of_medians_ci`). Text models take `input_ids` only (no "
        "attention mask: every token attends to every token).",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=",".join(ARCHS), help=f"comma list of {', '.join(ARCHS)}")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds at batch 1")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few rounds (smoke run)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/zoo_prune.md")
    a = p.parse_args(argv)
    names = [n for n in a.archs.split(",") if n]
    unknown = sorted(set(names) - set(ARCHS))
    if unknown:
        p.error(f"unknown archs {unknown}; choose from {', '.join(ARCHS)}")
    rounds = a.rounds or (20 if a.quick else 200)
    from modelpress.factory import add_factory_folder
    from modelpress.fsutil import atomic_write_text

    add_factory_folder(ROOT / "tests")  # zoo_nets lives beside the tests
    torch.set_num_threads(1)
    with measuring(__file__, argv) as measured, tempfile.TemporaryDirectory() as tmp:
        rows = [measure_arch(n, ARCHS[n], a.quick, rounds, Path(tmp)) for n in names]
    text = render(measured.header_lines(), rows, rounds, a.quick)
    atomic_write_text(a.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
