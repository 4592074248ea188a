"""ONNX Runtime target on digits: every family x {fp32, fp16, dynamic_int8, int8}.

    python benchmarks/ort_precisions.py [--models resnet8,gru] [--out FILE]
                                                   -> benchmarks/results/onnxruntime.md

Trains each registry model (recommended schedule, seed 0), then for every precision builds,
validates on the ORT session itself (accuracy, agreement with the float torch model) and times
it in a fresh worker process (1 intra-op thread, batch 1 and 32) through modelpress.measure.bench.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from machine import measuring

PRECISIONS = ("fp32", "fp16", "dynamic_int8", "int8")


def main(argv: list[str] | None = None) -> int:
    from modelpress.fsutil import atomic_write_text
    from modelpress.models import MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "onnxruntime.md"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(MODELS)}")
    with measuring(__file__, argv) as measured, tempfile.TemporaryDirectory() as tmp:
        res = measure(names, Path(tmp))
    lines = [
        "# ONNX Runtime target on digits",
        "",
        *measured.header_lines(),
        "- 1 intra-op thread; p50 over >= 300 calls and >= 1 s; accuracy on the ORT session, test split (360)",
        "",
        "| model | precision | status | accuracy % | drop pt | agreement | bytes | size vs fp32 | p50 b1 ms | p50 b32 ms | b32 vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *table(res, names),
    ]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


def measure(names: list[str], tmp: Path):
    """Train each model, then build, validate and time it at every precision (worker processes)."""
    from modelpress.baselines import fit
    from modelpress.checkpoint import save_trained
    from modelpress.data import load_dataset
    from modelpress.measure.bench import BenchJob, BenchSettings, benchmark, reference_logits
    from modelpress.models import MODELS

    jobs = []
    for name in names:
        entry = MODELS[name]
        data = load_dataset("digits", view=entry.input_kinds[0])
        art = save_trained(tmp / f"{name}.safetensors", fit(name, data, seed=0).model, data)
        ref = reference_logits(art, tmp / f"{name}.ref.npy")
        for precision in PRECISIONS:
            jobs.append(
                BenchJob(
                    art,
                    "onnxruntime",
                    precision,
                    {"threads": 1},
                    build=True,
                    build_dir=tmp / name / precision,
                    reference_logits=ref,
                )
            )
    settings = BenchSettings(batch_sizes=(1, 32), min_calls=300, min_seconds=1.0, warmup_calls=50)
    return benchmark(jobs, settings, log=print)


def table(res, names: list[str]) -> list[str]:
    """One row per model and precision; sizes and batch-32 speed relative to the model's fp32."""
    by = {(r.model, r.precision): r for r in res.records}
    lines = []
    for name in names:
        base = by.get((name, "fp32"))
        for precision in PRECISIONS:
            r = by[(name, precision)]
            if r.status != "ok":
                lines.append(f"| {name} | {precision} | {r.status}: {r.reason} | | | | | | | | |")
                continue
            v, b1, b32 = r.validation, r.latency_at(1), r.latency_at(32)
            size = base.size_bytes / r.size_bytes if base and base.status == "ok" else float("nan")
            speed = (
                base.latency_at(32).p50_ms / b32.p50_ms
                if base and base.status == "ok"
                else float("nan")
            )
            lines.append(
                f"| {name} | {precision} | ok | {100 * v.accuracy:.2f} | {v.accuracy_drop:+.2f} | "
                f"{v.agreement:.4f} | {r.size_bytes:,} | {1 / size:.2f}x | {b1.p50_ms:.4f} | "
                f"{b32.p50_ms:.4f} | {speed:.2f}x |"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())
