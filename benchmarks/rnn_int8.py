"""GRU / LSTM on ONNX Runtime and LiteRT: the fused recurrent op or the unrolled cell, fp32 or int8?

Our GRU and LSTM classifiers (``modelpress.models``, random init) at the demo's size (8 steps of
8 features, hidden 64) and a larger one (32 steps, hidden 256) are built by the onnxruntime
target five ways: fp32 with the native ``GRU`` / ``LSTM`` op (``rnn: native``, what fp32 builds
use), fp32 unrolled (``rnn: unrolled``: one MatMul per step and gate group), dynamic int8
unrolled (what ``dynamic_int8`` builds use: every step's MatMuls become MatMulInteger), dynamic
int8 over the native op (ORT's dynamic quantization leaves GRU and the exported LSTM float: only
the head is int8) and static int8 unrolled. Per model size and batch all five sessions are timed
interleaved on one thread; ratios are to fp32 native.

LiteRT (``--runtimes onnxruntime,litert``): the litert target's builds at each batch (its graphs
have a fixed batch): fp32 native, dynamic_int8 native (an unrolled one does not load in LiteRT
2.3), int8 native (litert-torch's quantizer leaves the recurrent cell float) and int8 unrolled
(``rnn: unrolled``; ``auto`` is native on LiteRT),
timed interleaved with ORT's fp32 native build: ratios to LiteRT fp32 and to ORT fp32.

    .venv/bin/python benchmarks/rnn_int8.py [--rounds 200] [--min-seconds 8] \\
        [--runtimes onnxruntime,litert] [--out benchmarks/results/rnn_int8.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import measuring, write_results
from zoo_prune import interleaved_ms

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((8, 64), (32, 256))  # (steps, hidden)
BATCHES = (1, 32)
WAYS = (
    ("fp32", "native"),
    ("fp32", "unrolled"),
    ("dynamic_int8", "unrolled"),
    ("dynamic_int8", "native"),
    ("int8", "unrolled"),
)
SHOWN_OPS = ("GRU", "LSTM", "DynamicQuantizeLSTM", "MatMulInteger", "QuantizeLinear")
LITERT_WAYS = (
    ("fp32", "native"),
    ("dynamic_int8", "native"),
    ("int8", "native"),
    ("int8", "unrolled"),
)


def checkpoint(name: str, steps: int, hidden: int, work: Path):
    import torch

    from modelpress.checkpoint import save_checkpoint
    from modelpress.data import InputSpec
    from modelpress.models import create_model

    spec = InputSpec("sequence", (steps, 8), "float32")
    torch.manual_seed(0)
    model = create_model(name, input_spec=spec, num_classes=10, hidden_size=hidden).eval()
    return save_checkpoint(
        work / f"{name}-{steps}-{hidden}.safetensors",
        model,
        input_spec=spec,
        labels=[str(i) for i in range(10)],
        preprocessing={},
    )


def calibration(steps: int) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((64, steps, 8), dtype=np.float32)


def build_all(name: str, steps: int, hidden: int, work: Path) -> dict[tuple[str, str], object]:
    from modelpress.targets import get_target

    ckpt = checkpoint(name, steps, hidden, work)
    calib = calibration(steps)
    arts = {}
    for precision, rnn in WAYS:
        dest = work / f"{name}-{steps}-{hidden}-{precision}-{rnn}"
        data = calib if precision == "int8" else None
        arts[(precision, rnn)] = get_target("onnxruntime", rnn=rnn).build(
            ckpt, precision, data, dest
        )
    return arts


def measure(rounds: int, seconds: float, work: Path) -> list[str]:
    from modelpress.measure.stats import ratio_of_medians_ci
    from modelpress.targets import get_target
    from modelpress.targets.onnxruntime import op_counts

    rows = []
    for name in ("gru", "lstm"):
        for steps, hidden in SIZES:
            arts = build_all(name, steps, hidden, work)
            for batch in BATCHES:
                x = np.random.default_rng(2).standard_normal((batch, steps, 8), dtype=np.float32)
                calls = {
                    f"{p} {r}": get_target("onnxruntime", threads=1).load(a).prepare(x)
                    for (p, r), a in arts.items()
                }
                times = interleaved_ms(calls, rounds, seconds)
                base = times["fp32 native"]
                for (p, r), art in arts.items():
                    key = f"{p} {r}"
                    ci = ratio_of_medians_ci(base, times[key])
                    ops = op_counts(art.path)
                    shown = ", ".join(f"{o} {ops[o]}" for o in SHOWN_OPS if ops[o]) or "-"
                    ratio = (
                        "-"
                        if key == "fp32 native"
                        else (f"{ci.ratio:.2f}x [{ci.low:.2f}, {ci.high:.2f}]")
                    )
                    rows.append(
                        f"| {name} | {steps} x {hidden} | {batch} | {p} | {r} | "
                        f"{np.median(times[key]):.4f} | {ratio} | {art.size_bytes:,} | {shown} |"
                    )
                print("\n".join(rows[-len(arts) :]), flush=True)
    return rows


def litert_rows(rounds: int, seconds: float, work: Path) -> list[str]:
    """LiteRT builds of each (model, size, batch), timed interleaved with ORT's fp32 native."""
    from zoo_prune import litert_call

    from modelpress.measure.stats import ratio_of_medians_ci
    from modelpress.targets import get_target

    rows = []
    for name in ("gru", "lstm"):
        for steps, hidden in SIZES:
            ckpt = checkpoint(name, steps, hidden, work)
            ort = get_target("onnxruntime", rnn="native").build(
                ckpt, "fp32", None, work / f"{name}-{steps}-{hidden}-ort"
            )
            for batch in BATCHES:
                x = np.random.default_rng(2).standard_normal((batch, steps, 8), dtype=np.float32)
                calls = {"ort": get_target("onnxruntime", threads=1).load(ort).prepare(x)}
                arts = {}
                for precision, rnn in LITERT_WAYS:
                    target = get_target(
                        "litert", threads=1, batch=batch, rnn=rnn, observer="minmax"
                    )
                    data = calibration(steps) if precision == "int8" else None
                    dest = work / f"{name}-{steps}-{hidden}-lrt-{batch}-{precision}-{rnn}"
                    arts[(precision, rnn)] = art = target.build(ckpt, precision, data, dest)
                    calls[(precision, rnn)] = litert_call(target.load(art), x)
                times = interleaved_ms(calls, rounds, seconds)
                for (p, r), art in arts.items():
                    vs_lrt = ratio_of_medians_ci(times[("fp32", "native")], times[(p, r)])
                    vs_ort = ratio_of_medians_ci(times["ort"], times[(p, r)])
                    floats = art.meta["quantization"].get("float_ops") or {}
                    shown = ", ".join(f"{o} {n}" for o, n in sorted(floats.items())) or "-"
                    lrt = "-" if (p, r) == ("fp32", "native") else _ci(vs_lrt)
                    rows.append(
                        f"| {name} | {steps} x {hidden} | {batch} | {p} | {r} | "
                        f"{np.median(times[(p, r)]):.4f} | {lrt} | {_ci(vs_ort)} | "
                        f"{art.size_bytes:,} | {shown if p == 'int8' else '-'} |"
                    )
                print("\n".join(rows[-len(arts) :]), flush=True)
    return rows


def _ci(ci) -> str:
    return f"{ci.ratio:.2f}x [{ci.low:.2f}, {ci.high:.2f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--min-seconds", type=float, default=8.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/rnn_int8.md")
    p.add_argument("--runtimes", default="onnxruntime,litert", help="onnxruntime and/or litert")
    args = p.parse_args(argv)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if not runtimes or set(runtimes) - {"onnxruntime", "litert"}:
        p.error(f"--runtimes: onnxruntime and/or litert, got {args.runtimes!r}")
    rows: list[str] = []
    lrt: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, measuring(__file__, argv) as measured:
        if "onnxruntime" in runtimes:
            rows = measure(args.rounds, args.min_seconds, Path(tmp))
        if "litert" in runtimes:
            lrt = litert_rows(args.rounds, args.min_seconds, Path(tmp))
    ort_table = [
        "## ONNX Runtime",
        "",
        "One thread; per (model, size, batch) the five builds timed interleaved (95 % "
        "bootstrap interval of the ratio of medians). Random weights: latency, not "
        "accuracy. Ops: the recurrent and integer ops in the built graph.",
        "",
        "| model | steps x hidden | batch | precision | rnn export | p50 ms | fp32 native p50 "
        "/ p50 [95 % CI] | bytes | ops |",
        "|---|---|---:|---|---|---:|---:|---:|---|",
        *rows,
        "",
    ]
    litert_table = [
        "## LiteRT (XNNPACK)",
        "",
        "The litert target's builds at each batch (fixed-batch graphs, minmax observer), timed "
        "interleaved with ORT's fp32 native build on one thread. Float ops: what the int8 graph "
        "still computes in float.",
        "",
        "| model | steps x hidden | batch | precision | rnn export | p50 ms | LiteRT fp32 p50 / "
        "p50 [95 % CI] | ORT fp32 native p50 / p50 [95 % CI] | bytes | float ops |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---|",
        *lrt,
        "",
    ]
    write_results(
        args.out,
        "GRU / LSTM on ONNX Runtime and LiteRT: fused op or unrolled cell, fp32 or int8",
        measured,
        (ort_table if rows else []) + (litert_table if lrt else []),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
