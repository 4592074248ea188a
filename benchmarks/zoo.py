"""The zoo at real input sizes: fp32, int8, pruned (MACs 0.5) and pruned + int8 on ONNX Runtime
and LiteRT, batch 1 and 8, one and two threads: params, MACs, bytes, p50 and ratios in one run.

Models (``tests/zoo_nets.py``, random init: latency does not depend on the weights): ResNet-18,
ResNet-50 (bottleneck blocks), MobileNetV2 and MobileNetV3-small at 224x224, a ViT-S/16 at
224x224, and a BERT-mini (4 layers, 256 hidden, 4 heads) on 128 tokens. Each is pruned to at most
half its MACs (``zoo_prune.build_variants``: ``PruneConfig(macs_budget=0.5, recovery="none")``);
dense and pruned are built as fp32 and int8 (CNNs: static int8; transformers: dynamic int8 and
static int8), per runtime (ORT: one graph, dynamic batch; LiteRT: one graph per batch, int8 with
the min/max observer). Calibration uses random inputs of the model's shape: accuracy is not
measured here, only a sanity check of each artifact against torch. Per (runtime, threads, batch)
every variant's calls are interleaved, so ratios to fp32 come from the same moments. A step that
fails (prune, build, load, run) is a row that says why; the others go on.

    .venv/bin/python benchmarks/zoo.py [--models resnet18,bert_mini] [--runtimes onnxruntime] \\
        [--batches 1,8] [--threads 1,2] [--rounds 30] [--min-seconds 5] [--quick] \\
        [--out benchmarks/results/zoo.md]

``--quick``: tiny sizes and few rounds, a smoke run (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
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
from zoo_prune import PRUNE, Arch, Row, Size, build_variants, interleaved_ms, litert_call, sample

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("onnxruntime", "litert")
TITLES = {"onnxruntime": "ONNX Runtime (CPU EP)", "litert": "LiteRT (XNNPACK)"}
CNNS = ("resnet18", "resnet50", "mobilenetv2", "mobilenetv3_small")
CALIB = {False: 16, True: 8}  # random calibration samples (full, --quick)
WARMUP = 3  # untimed calls per variant before each interleaved cell
IMAGENET, TINY = {"channels": 3, "classes": 1000}, {"channels": 3, "classes": 10}
IMAGE, SMALL = (3, 224, 224), (3, 32, 32)
RESNET18 = {"embedding": 64, "widths": [64, 128, 256, 512], "depths": [2, 2, 2, 2]}
RESNET50 = {"embedding": 64, "widths": [256, 512, 1024, 2048], "depths": [3, 4, 6, 3]}
VIT_S16 = {"image": 224, "patch": 16, "dim": 384, "layers": 12, "heads": 6, "ffn": 1536}
BERT_MINI = {"vocab": 30522, "classes": 2, "max_len": 512, "dim": 256, "layers": 4, "heads": 4}
MODELS = {
    "resnet18": Arch(
        "build_resnet", "logits", Size({**IMAGENET, **RESNET18}, IMAGE), Size(TINY, SMALL)
    ),
    "resnet50": Arch(
        "build_resnet",
        "logits",
        Size({**IMAGENET, **RESNET50, "layer_type": "bottleneck"}, IMAGE),
        Size({**TINY, "layer_type": "bottleneck"}, SMALL),
    ),
    "mobilenetv2": Arch(
        "build_mobilenetv2",
        "logits",
        Size({**IMAGENET, "image": 224, "depth_multiplier": 1.0}, IMAGE),
        Size({**TINY, "image": 32}, SMALL),
    ),
    "mobilenetv3_small": Arch(
        "build_mobilenetv3_small", None, Size(IMAGENET, IMAGE), Size({**TINY, "width": 0.5}, SMALL)
    ),
    "vit_s16": Arch(
        "build_vit",
        "logits",
        Size({**IMAGENET, **VIT_S16}, IMAGE),
        Size({**TINY, "image": 32}, SMALL),
    ),
    "bert_mini": Arch(
        "build_bert",
        "logits",
        Size({**BERT_MINI, "ffn": 1024}, (128,)),
        Size({"vocab": 1000, "classes": 2, "max_len": 32}, (32,)),
    ),
}


@dataclass(frozen=True)
class Goal:
    """One target of the issue: ``variant`` vs fp32 at batch 1 (or pruning's MAC efficiency)."""

    text: str
    models: tuple[str, ...]
    runtime: str
    variant: str
    minimum: float
    efficiency: bool = False


GOALS = (
    Goal("ResNet int8 >= 2.0x fp32", ("resnet18", "resnet50"), "onnxruntime", "int8", 2.0),
    Goal("MobileNetV2 int8 >= 1.6x fp32", ("mobilenetv2",), "onnxruntime", "int8", 1.6),
    Goal("pruned (0.5 MACs) + int8 >= 3.5x fp32, CNNs", CNNS, "onnxruntime", "pruned+int8", 3.5),
    Goal("BERT-mini dynamic int8 >= 2.0x fp32", ("bert_mini",), "onnxruntime", "dynamic_int8", 2.0),
    Goal("int8 >= 2x fp32 for the CNNs", CNNS, "litert", "int8", 2.0),
    Goal(
        "MAC -> latency efficiency of pruning >= 0.8, CNNs",
        CNNS,
        "onnxruntime",
        "pruned",
        0.8,
        True,
    ),
)


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...]
    runtimes: tuple[str, ...]
    batches: tuple[int, ...]
    threads: tuple[int, ...]
    rounds: int
    min_seconds: float
    quick: bool


@dataclass
class Result:
    """One model: zoo_prune's row (dense / pruned models, counts, checkpoints, widths, failures),
    and per variant label its bytes, check and interleaved times."""

    name: str
    row: Row
    bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # (runtime, label)
    checks: dict[tuple[str, str], float] = field(default_factory=dict)  # max |diff| / max |logit|
    times: dict[tuple[str, int, int], dict[str, list[float]]] = field(default_factory=dict)

    def fail(self, step: str, exc: Exception) -> None:
        from modelpress.errors import one_line

        self.row.failures.append((step, f"{type(exc).__name__}: {one_line(exc)}"))


def variants(name: str) -> list[tuple[str, str]]:
    """(source model, precision) pairs: dense and pruned, each fp32 and quantized."""
    quantized = ("int8",) if name in CNNS else ("dynamic_int8", "int8")
    return [(source, p) for source in ("dense", "pruned") for p in ("fp32", *quantized)]


def label(source: str, precision: str) -> str:
    if source == "dense":
        return precision
    return "pruned" if precision == "fp32" else f"pruned+{precision}"


def attempt(res: Result, step: str, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or None with a failure row (the other steps go on)."""
    try:
        return fn(*args)
    except Exception as exc:  # any prune / build / load / run failure is this row's result
        res.fail(step, exc)
        return None


def build_one(runtime: str, batch: int | None, ckpt, precision: str, calib, out: Path):
    from modelpress.targets import get_target

    options = {"threads": 1} if batch is None else {"batch": batch, "observer": "minmax"}
    return get_target(runtime, **options).build(ckpt, precision, calib, out)


def build_artifacts(res: Result, runtime: str, cfg: Settings, calib: np.ndarray, work: Path):
    """Every variant built for ``runtime``: {(label, batch): Artifact} (ORT: one graph for all
    batches; LiteRT: one graph per batch). A failed build is a failure row."""
    arts = {}
    for source, precision in variants(res.name):
        key, ckpt = label(source, precision), res.row.variants[source].checkpoint
        data = calib if precision == "int8" else None
        for b in [None] if runtime == "onnxruntime" else cfg.batches:
            step = f"{runtime} {key} build" + ("" if b is None else f" (batch {b})")
            out = work / f"{runtime}-{key}-b{b}"
            art = attempt(res, step, build_one, runtime, b, ckpt, precision, data, out)
            if art is None:
                break
            res.bytes.setdefault((runtime, key), art.size_bytes)
            arts.update({(key, batch): art for batch in ([b] if b else cfg.batches)})
    return arts


def load_calls(res: Result, runtime: str, arts: dict, t: int, b: int, x: np.ndarray, check):
    """Zero-argument timed calls of every built variant on batch ``x`` with ``t`` threads, each
    run once (a failing one is a row and leaves ``arts``); a variant's first load checks it."""
    from modelpress.targets import get_target

    calls = {}
    for (key, batch), art in list(arts.items()):
        if batch != b or (key, batch) not in arts:
            continue
        options = {"threads": t} if runtime == "onnxruntime" else {"threads": t, "batch": b}

        def prepare(art=art, options=options, key=key):
            runner = get_target(runtime, **options).load(art)
            if (runtime, key) not in res.checks:
                res.checks[(runtime, key)] = check(key, runner.predict)
            call = runner.prepare(x) if runtime == "onnxruntime" else litert_call(runner, x)
            call()
            return call

        call = attempt(res, f"{runtime} {key} run ({t} thread(s), batch {b})", prepare)
        if call is not None:
            calls[key] = call
        else:  # one row says why; the later cells leave this variant out
            for k in [k for k in arts if k[0] == key]:
                del arts[k]
    return calls


def measure_model(name: str, cfg: Settings, work: Path) -> Result:
    res = Result(name, Row(name))
    arch = MODELS[name]
    size = arch.quick if cfg.quick else arch.full
    start = time.perf_counter()
    attempt(res, "prune / save", lambda: build_variants(name, arch, size, res.row, work))
    print(f"{name}: pruned and saved in {time.perf_counter() - start:.0f} s", flush=True)
    if res.row.failures:
        return res
    xs = {b: sample(size, b, seed=2) for b in cfg.batches}
    probe = sample(size, 8, seed=4)
    with torch.no_grad():
        refs = {k: v.model(torch.as_tensor(probe)).numpy() for k, v in res.row.variants.items()}

    def check(key: str, predict) -> float:
        ref = refs["pruned" if key.startswith("pruned") else "dense"]
        return float(np.abs(predict(probe) - ref).max() / max(np.abs(ref).max(), 1e-12))

    calib = sample(size, CALIB[cfg.quick], seed=3)
    for runtime in cfg.runtimes:
        start = time.perf_counter()
        arts = build_artifacts(res, runtime, cfg, calib, work)
        built, start = time.perf_counter() - start, time.perf_counter()
        for t in cfg.threads:
            for b in cfg.batches:
                calls = load_calls(res, runtime, arts, t, b, xs[b], check)
                if calls:
                    cell = interleaved_ms(calls, cfg.rounds, cfg.min_seconds, WARMUP)
                    res.times[(runtime, t, b)] = cell
                del calls  # free the sessions / interpreters before the next cell
        timed = time.perf_counter() - start
        print(
            f"{name} {runtime} (built in {built:.0f} s, timed in {timed:.0f} s): "
            f"{summary(res, runtime)}",
            flush=True,
        )
    return res


def summary(res: Result, runtime: str) -> str:
    parts = []
    for (rt, t, b), cell in res.times.items():
        if rt == runtime and "fp32" in cell:
            ratios = " ".join(f"{k} {speedup(cell, k):.2f}x" for k in cell if k != "fp32")
            parts.append(f"{t}t b{b}: {ratios}")
    return "; ".join(parts) or "nothing timed"


def speedup(cell: dict[str, list[float]], key: str, base: str = "fp32") -> float:
    return statistics.median(cell[base]) / statistics.median(cell[key])


def baseline_of(key: str) -> str:
    """What pruning's efficiency of ``key`` is measured against: pruned vs fp32, pruned+q vs q."""
    return "fp32" if key == "pruned" else key.removeprefix("pruned+")


def ratio_text(cell: dict[str, list[float]], key: str, base: str = "fp32", scale: float = 1.0):
    """(base p50 / key p50) / scale with its 95 % interval, and the point value."""
    from modelpress.measure.stats import ratio_of_medians_ci

    ci = ratio_of_medians_ci(cell[base], cell[key])
    lo, mid, hi = ci.low / scale, ci.ratio / scale, ci.high / scale
    return f"{mid:.2f}{'' if scale != 1.0 else 'x'} [{lo:.2f}, {hi:.2f}]", (lo, mid, hi)


def reduction(res: Result) -> float:
    v = res.row.variants
    return v["dense"].macs / v["pruned"].macs


def goal_rows(results: list[Result], cfg: Settings) -> list[str]:
    out = ["| target | runtime | model | threads | measured (batch 1) [95 % CI] | verdict |"]
    out.append("|---|---|---|---:|---:|---|")
    by_name = {r.name: r for r in results}
    for g in GOALS:
        head = f"| {g.text} | {g.runtime} |"
        names = [n for n in g.models if n in by_name]
        if not names or g.runtime not in cfg.runtimes or 1 not in cfg.batches:
            out.append(
                f"{head} | | | not measured: its models, runtime or batch 1 not in this run |"
            )
            continue
        for n, t in ((n, t) for n in names for t in cfg.threads):
            cell = by_name[n].times.get((g.runtime, t, 1), {})
            if g.variant not in cell or "fp32" not in cell:
                out.append(f"{head} {n} | {t} | | not measured: a step failed (see Failures) |")
                continue
            scale = reduction(by_name[n]) if g.efficiency else 1.0
            text, (lo, mid, hi) = ratio_text(cell, g.variant, "fp32", scale)
            verdict = "met" if mid >= g.minimum else "not met"
            if lo < g.minimum <= hi:
                verdict += " (the interval spans the target)"
            out.append(f"{head} {n} | {t} | {text} | {verdict} |")
    return out


def size_rows(results: list[Result], cfg: Settings) -> list[str]:
    """Params and MACs of the torch model a variant comes from; bytes on disk of each artifact
    (ONNX external data included; LiteRT: its first batch's graph) with the ratio to fp32."""
    rts = cfg.runtimes
    out = [
        "| model | variant | params | MACs | "
        + " | ".join(f"{TITLES[r].split(' (')[0]} bytes (vs fp32)" for r in rts)
        + " | "
        + " | ".join(f"{TITLES[r].split(' (')[0]} check" for r in rts)
        + " |",
        "|---|---|---:|---:|" + "---:|" * (2 * len(rts)),
    ]
    for res in results:
        if "pruned" not in res.row.variants:  # pruning failed: see Failures
            continue
        for source, precision in variants(res.name):
            key, v = label(source, precision), res.row.variants[source]
            cells = [res.name, key, f"{v.params:,}", f"{v.macs / 1e6:,.1f}M"]
            for r in rts:
                n, base = res.bytes.get((r, key)), res.bytes.get((r, "fp32"))
                ratio = f" ({n / base:.2f}x)" if n and base else ""
                cells.append(f"{n:,}{ratio}" if n else "failed")
            cells += [f"{res.checks[(r, key)]:.1e}" if (r, key) in res.checks else "-" for r in rts]
            out.append("| " + " | ".join(cells) + " |")
    return out


def latency_rows(results: list[Result], runtime: str) -> list[str]:
    out = [
        "| model | threads | batch | variant | p50 ms | fp32 p50 / p50 [95 % CI] | "
        "pruning efficiency [95 % CI] |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for res in results:
        for (rt, t, b), cell in res.times.items():
            if rt != runtime:
                continue
            for key, ms in cell.items():
                ratio = ratio_text(cell, key)[0] if "fp32" in cell and key != "fp32" else "-"
                base = baseline_of(key)
                eff = "-"
                if key.startswith("pruned") and base in cell:
                    eff = ratio_text(cell, key, base, reduction(res))[0] + f" vs {base}"
                p50 = statistics.median(ms)
                out.append(f"| {res.name} | {t} | {b} | {key} | {p50:.3f} | {ratio} | {eff} |")
    return out


def render(header: list[str], results: list[Result], cfg: Settings) -> str:
    out = [
        "# The zoo at real input sizes: fp32, int8, pruned and pruned + int8 on ONNX Runtime and LiteRT",
        "",
        *header,
        "",
        "Ratios from one run (every variant of a model timed interleaved per runtime, threads and "
        "batch). Random weights and random calibration inputs: latency, sizes and bytes are what "
        "is measured, not accuracy.",
        "",
    ]
    if cfg.quick:
        out += ["**--quick: tiny models, few rounds; a smoke run, the numbers mean nothing.**", ""]
    out += ["## Targets (issue 11, batch 1)", ""]
    if cfg.quick:
        out += ["Not 224x224 models (--quick): these verdicts judge nothing.", ""]
    out += [*goal_rows(results, cfg), ""]
    out += ["## Sizes", "", *size_rows(results, cfg), ""]
    for runtime in cfg.runtimes:
        out += [f"## {TITLES[runtime]}", "", *latency_rows(results, runtime), ""]
    failures = [(r.name, step, why) for r in results for step, why in r.row.failures]
    out += ["## Failures", ""]
    out += [f"- {n}, {step}: {why}" for n, step, why in failures] or ["None."]
    out += ["", "## Models and pruned widths", ""]
    for r in results:
        arch = MODELS[r.name]
        size = arch.quick if cfg.quick else arch.full
        out.append(
            f"- {r.name}, input {size.shape} (`zoo_nets.{arch.builder}(**{size.kwargs})`, "
            f"pruned in {r.row.prune_s:.0f} s"
            + (f", MACs / {reduction(r):.2f}" if "pruned" in r.row.variants else "")
            + f"): {r.row.widths or 'not pruned'}"
        )
    out += ["", "## How it was measured", "", *method(cfg)]
    return "\n".join(out)


def method(cfg: Settings) -> list[str]:
    return [
        "Each model is built through its factory (torch seed 0, random init, BatchNorm "
        "statistics from 64 random inputs) and a deep copy is pruned with "
        f"`prune_model(copy, example, PruneConfig({PRUNE}))` (the library defaults otherwise; "
        "`benchmarks/zoo_prune.py`'s `build_variants`). Both are saved as factory checkpoints "
        "and built by the targets: ONNX Runtime `fp32`, `int8` (static QDQ, per-channel, MinMax) "
        "and, for the transformers, `dynamic_int8`; LiteRT (`get_target('litert', batch=b, "
        "observer='minmax')`, one graph per batch) the same precisions. Static int8 calibrates "
        f"on {CALIB[cfg.quick]} random inputs (standard normal pixels, token ids uniform in "
        "[1, vocab)). The int8 variants have their float model's params and MACs. Bytes: every "
        "file of the artifact on disk (ONNX external data included; LiteRT: the graph of the "
        "first batch). Check = "
        "max |runtime - torch| / max |torch logit| over 8 random inputs (LiteRT: its first "
        "batch's graph), a sanity check of the artifact, not an accuracy. Timed: ONNX Runtime's "
        "`session.run` on a prepared feed; LiteRT's `set_tensor` + `invoke` + `get_tensor`. Per "
        f"(runtime, threads, batch) every variant is loaded, run once, warmed up {WARMUP} calls, "
        "then the variants alternate (order reversed every other round) for at least "
        f"{cfg.rounds} rounds and at least {cfg.min_seconds:g} s. p50 = median; a ratio's "
        "interval is a moving-block bootstrap of the ratio of medians "
        "(`modelpress.measure.stats.ratio_of_medians_ci`). Pruning efficiency = speed-up / MAC "
        "reduction (pruned vs fp32, pruned + q vs q); Torch-Pruning's ResNet-50 table: 2.19 / "
        "3.85 = 0.57. A target is met when the point ratio reaches it. Text models take "
        "`input_ids` only (every token attends to every token).",
    ]


def int_list(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v)
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of integers >= 1")
    return values


def parse(argv: list[str] | None) -> tuple[Settings, Path]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="onnxruntime,litert")
    p.add_argument("--batches", type=int_list, default=(1, 8))
    p.add_argument("--threads", type=int_list, default=(1, 2))
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per cell (min)")
    p.add_argument("--min-seconds", type=float, default=None, help="seconds per cell (min)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, few rounds (smoke run)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/zoo.md")
    a = p.parse_args(argv)
    models = tuple(n for n in a.models.split(",") if n)
    runtimes = tuple(n for n in a.runtimes.split(",") if n)
    for given, known in ((models, MODELS), (runtimes, RUNTIMES)):
        unknown = sorted(set(given) - set(known))
        if unknown or not given:
            p.error(f"unknown or no names {unknown}; choose from {', '.join(known)}")
    rounds = a.rounds or (3 if a.quick else 30)
    seconds = a.min_seconds if a.min_seconds is not None else (0.0 if a.quick else 5.0)
    cfg = Settings(models, runtimes, a.batches, a.threads, rounds, seconds, a.quick)
    return cfg, a.out


def main(argv: list[str] | None = None) -> int:
    cfg, out = parse(argv)
    from modelpress.factory import add_factory_folder
    from modelpress.fsutil import atomic_write_text

    add_factory_folder(ROOT / "tests")  # zoo_nets lives beside the tests
    torch.set_num_threads(max(cfg.threads))  # torch only builds; the runtimes time
    with measuring(__file__, argv) as measured, tempfile.TemporaryDirectory() as tmp:
        results = [measure_model(n, cfg, Path(tmp) / n) for n in cfg.models]
    text = render(measured.header_lines(), results, cfg)
    atomic_write_text(out, text + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
