"""GRU / LSTM on ONNX Runtime: the fused recurrent op or the unrolled cell, fp32 or int8?

Our GRU and LSTM classifiers (``modelpress.models``, random init) at the demo's size (8 steps of
8 features, hidden 64) and a larger one (32 steps, hidden 256) are built by the onnxruntime
target five ways: fp32 with the native ``GRU`` / ``LSTM`` op (``rnn: native``, what fp32 builds
use), fp32 unrolled (``rnn: unrolled``: one MatMul per step and gate group), dynamic int8
unrolled (what ``dynamic_int8`` builds use: every step's MatMuls become MatMulInteger), dynamic
int8 over the native op (ORT's dynamic quantization leaves GRU and the exported LSTM float: only
the head is int8) and static int8 unrolled. Per model size and batch all five sessions are timed
interleaved on one thread; ratios are to fp32 native.

    .venv/bin/python benchmarks/rnn_int8.py [--rounds 200] [--min-seconds 8] \\
        [--out benchmarks/results/rnn_int8.md]
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


def build_all(name: str, steps: int, hidden: int, work: Path) -> dict[tuple[str, str], object]:
    import torch

    from modelpress.checkpoint import save_checkpoint
    from modelpress.data import InputSpec
    from modelpress.models import create_model
    from modelpress.targets import get_target

    spec = InputSpec("sequence", (steps, 8), "float32")
    torch.manual_seed(0)
    model = create_model(name, input_spec=spec, num_classes=10, hidden_size=hidden).eval()
    ckpt = save_checkpoint(
        work / f"{name}-{steps}-{hidden}.safetensors",
        model,
        input_spec=spec,
        labels=[str(i) for i in range(10)],
        preprocessing={},
    )
    calib = np.random.default_rng(3).standard_normal((64, steps, 8), dtype=np.float32)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--min-seconds", type=float, default=8.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/rnn_int8.md")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, measuring(__file__, argv) as measured:
        rows = measure(args.rounds, args.min_seconds, Path(tmp))
    write_results(
        args.out,
        "GRU / LSTM on ONNX Runtime: fused op or unrolled cell, fp32 or int8",
        measured,
        [
            "One thread; per (model, size, batch) the five builds timed interleaved (95 % "
            "bootstrap interval of the ratio of medians). Random weights: latency, not "
            "accuracy. Ops: the recurrent and integer ops in the built graph.",
            "",
            "| model | steps x hidden | batch | precision | rnn export | p50 ms | fp32 native p50 "
            "/ p50 [95 % CI] | bytes | ops |",
            "|---|---|---:|---|---|---:|---:|---:|---|",
            *rows,
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
