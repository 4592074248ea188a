"""The project's headline benchmark: `python benchmarks/run.py` (or `make bench`).

Runs benchmarks/suite.yaml through the pipeline (train, distill, prune, build, validate, measure:
each target in its own fresh process), then writes benchmarks/results/headline.md: per family,
torch eager fp32, ONNX Runtime fp32 / int8, pruned + KD + ONNX Runtime int8, LiteRT fp32 / int8,
with accuracy on the runtime, bytes on disk, p50 latency at batch 1 and 32, and speed-ups as
ratios to torch eager fp32 and to ONNX Runtime fp32 measured in the same run.

    python benchmarks/run.py [--fresh] [--out FILE]   # --fresh: ignore cached stages, retrain everything

Every run measures afresh: the benchmark stage never replays a cached record (latency belongs to
the machine and the moment it was measured); training and builds stay cached unless --fresh.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from machine import measuring

HERE = Path(__file__).resolve().parent
ORDER = [
    ("torch", "fp32", False),
    ("onnxruntime", "fp32", False),
    ("onnxruntime", "int8", False),
    ("onnxruntime", "dynamic_int8", False),
    ("onnxruntime", "fp32", True),
    ("onnxruntime", "int8", True),
    ("onnxruntime", "dynamic_int8", True),
    ("litert", "fp32", False),
    ("litert", "int8", False),
    ("litert", "dynamic_int8", False),
    ("litert", "fp32", True),
    ("litert", "int8", True),
    ("litert", "dynamic_int8", True),
]


def _fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value else "-"


def table(results, families: list[str]) -> list[str]:
    from modelpress.measure.speedup import baseline_record, size_ratio, speedup

    lines = []
    for family in families:
        recs = [r for r in results.records if r.model.split("+")[0] == family and r.status == "ok"]
        ref = baseline_record(recs, family, "torch", "fp32")
        ort = baseline_record(recs, family, "onnxruntime", "fp32")
        lines += [
            f"### {family}",
            "",
            "| artifact | target | precision | accuracy | drop (pt) | bytes | x smaller vs ORT fp32 | p50 b1 (ms) | p50 b32 (ms) | x faster b32 vs torch | x faster b32 vs ORT fp32 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for target, precision, compressed in ORDER:
            rec = next(
                (
                    r
                    for r in recs
                    if r.target == target
                    and r.precision == precision
                    and ("+" in r.model) == compressed
                ),
                None,
            )
            if rec is None:
                continue
            b1, b32 = rec.latency_at(1), rec.latency_at(32)
            lines.append(
                f"| {rec.model} | {target} | {precision} | {100 * rec.validation.accuracy:.2f} % "
                f"| {rec.validation.accuracy_drop:+.2f} | {rec.size_bytes:,} | "
                f"{_fmt_ratio(size_ratio(rec, ort))} | {b1.p50_ms:.4f} | {b32.p50_ms:.4f} | "
                f"{_fmt_ratio(speedup(rec, ref, 32))} | {_fmt_ratio(speedup(rec, ort, 32))} |"
            )
        lines.append("")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="redo every stage")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "headline.md")
    args = parser.parse_args()
    from modelpress.run import run

    with measuring(__file__) as measured:
        outcome = run(
            HERE / "suite.yaml", use_cache=not args.fresh, fresh_measurements=True, progress=True
        )
    from modelpress.measure.results import load_results

    results = load_results(outcome.results_path)
    skipped = sorted(
        {f"{r.target} {r.precision}: {r.reason}" for r in results.records if r.status != "ok"}
    )
    lines = [
        "# Headline benchmark: digits, three families, every runtime, one run",
        "",
        *measured.header_lines(),
        "- Single-threaded runtimes; p50 over >= 300 calls and >= 1 s per batch size, warm-up excluded",
        "- Accuracy: test split (360 images), measured on each runtime; drop vs the float torch baseline",
        "",
        *table(results, ["cnn", "rnn", "attention"]),
        "Not measured here:",
        *[f"- {s}" for s in skipped],
        "",
        f"Full records (raw latency samples included): `{outcome.results_path}`; report: `{outcome.report_html}`.",
        "",
    ]
    from modelpress.fsutil import atomic_write_text

    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
