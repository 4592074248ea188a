"""LiteRT at batch 32: the batch-32 graph against the batch-1 graph run 32 times, next to ORT.

TFLite graphs have a fixed batch. Before the litert target converted a graph per benchmark batch
(``batches``, set by ``modelpress run``), the demo's "batch 32" LiteRT rows ran the batch-1 graph
32 times, and its table showed LiteRT's GRU at a fraction of ONNX Runtime's speed. Here the
demo's three families (``modelpress.models`` at the digits size, random init: latency does not
depend on the weights) are built by the litert target with ``batches: [32]`` at the demo's
precisions and by the onnxruntime target at fp32. Per model and precision three calls are timed
interleaved on one thread, each on the same 32 samples: LiteRT's batch-32 graph, LiteRT's batch-1
graph 32 times (the old path: the same artifact's runner without its other graphs), and ORT fp32
(one session call at batch 32).

    .venv/bin/python benchmarks/litert_batches.py [--rounds 200] [--min-seconds 4] \\
        [--out benchmarks/results/litert_batches.md]
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
BATCH = 32
# the demo's models (recipes/digits.yaml) and LiteRT precisions: name -> (data view, precisions)
MODELS = {
    "resnet8": ("image", ("fp32", "int8")),
    "gru": ("sequence", ("fp32", "dynamic_int8")),
    "transformer": ("sequence", ("fp32", "int8")),
}


def model_rows(name: str, rounds: int, min_seconds: float, work: Path) -> list[str]:
    import torch

    from modelpress.checkpoint import save_trained
    from modelpress.data import load_dataset
    from modelpress.measure.stats import ratio_of_medians_ci
    from modelpress.measure.timing import fast_call
    from modelpress.models import create_model
    from modelpress.targets import get_target

    view, precisions = MODELS[name]
    data = load_dataset("digits", view=view)
    torch.manual_seed(0)
    model = create_model(name, input_spec=data.input_spec, num_classes=10).eval()
    ckpt = save_trained(work / f"{name}.safetensors", model, data)
    x = np.ascontiguousarray(data.test.x[:BATCH])
    ort = get_target("onnxruntime", threads=1)
    ort_call = ort.load(ort.build(ckpt, "fp32", None, work / f"{name}-ort")).prepare(x)
    rows = []
    for precision in precisions:
        lite = get_target("litert", threads=1, batches=[BATCH], observer="minmax")
        calib = data.calibration(256) if precision == "int8" else None
        art = lite.build(ckpt, precision, calib, work / f"{name}-{precision}")
        own = lite.load(art)
        chunked = lite.load(art)
        chunked.others = {}  # the old path: the batch-1 graph, 32 times
        same = float(np.abs(own.predict(x) - chunked.predict(x)).max())
        t = interleaved_ms(
            {"own": fast_call(own, x), "chunked": fast_call(chunked, x), "ort": ort_call},
            rounds,
            min_seconds,
        )
        p50 = {k: float(np.median(v)) for k, v in t.items()}

        def ratio(num: str, den: str, t: dict[str, list[float]] = t) -> str:
            ci = ratio_of_medians_ci(t[num], t[den])
            return f"{ci.ratio:.2f}x [{ci.low:.2f}, {ci.high:.2f}]"

        rows.append(
            f"| {name} | {precision} | {p50['own']:.3f} | {p50['chunked']:.3f} | "
            f"{p50['ort']:.3f} | {ratio('chunked', 'own')} | {ratio('ort', 'chunked')} | "
            f"{ratio('ort', 'own')} | {same:.1e} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--min-seconds", type=float, default=4.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/litert_batches.md")
    args = p.parse_args(argv)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, measuring(__file__, argv) as measured:
        for name in MODELS:
            rows += model_rows(name, args.rounds, args.min_seconds, Path(tmp))
    write_results(
        args.out,
        "LiteRT at batch 32: a graph of its own against the batch-1 graph 32 times",
        measured,
        [
            f"One thread, {BATCH} digits test samples per call; per model and precision the "
            f"three calls alternate (order reversed every other round) for at least "
            f"{args.rounds} rounds and {args.min_seconds:g} s. Ratios are of medians with 95 % "
            "moving-block bootstrap intervals. `max diff` = max |b32 graph - b1 graph x 32| "
            "over the 32 samples' logits.",
            "",
            "| model | LiteRT precision | LiteRT b32 graph p50 ms | LiteRT b1 graph x 32 p50 "
            "ms | ORT fp32 b32 p50 ms | b32 graph speed-up over b1 x 32 | LiteRT vs ORT fp32, "
            "before (b1 x 32) | LiteRT vs ORT fp32, now (b32 graph) | max diff |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "LiteRT vs ORT = ORT p50 / LiteRT p50 (above 1: LiteRT is faster).",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
