"""A/A and A/B check of the latency regression gate on this machine.

One artifact (the digits CNN, resnet8, built for ONNX Runtime fp32 with one thread) is measured
once as the baseline, then ``--runs`` more times unchanged (A/A: every failure is a false
failure) and ``--runs`` times with every timed call made ``--slowdown`` slower by the harness's
busy-wait injection (A/B: every failure is a detection). A/A and A/B runs alternate, so a
change in machine load hits both alike. Each run is a full harness run (fresh worker process,
batch 1 and 32) gated against the baseline with a regression policy (``--tolerance``,
``--confidence``; the defaults are those of ``examples/gates.yaml``).

    python benchmarks/gate_aa_ab.py [--runs 20] [--min-seconds 1] [--tolerance 0.10] [--out FILE]
                                                        -> benchmarks/results/gates.md

With ``--interleaved`` there is no baseline run: each run is one worker process that loads the
artifact twice (A and B, two sessions) and times them in alternating ABBA blocks
(:mod:`modelpress.measure.interleave`); the gate fails when the CI low of B/A is above
``1 + --tolerance``. A/A runs leave B as is, A/B runs make every B call ``--slowdown`` slower.

    python benchmarks/gate_aa_ab.py --interleaved --runs 50 --slowdown 0.05 --tolerance 0.02
                                                        -> benchmarks/results/gates_interleaved.md

The per-call overhead of the harness itself is benchmarks/harness_overhead.py's (its own file,
benchmarks/results/harness_overhead.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness_overhead import digits_cnn_checkpoint  # noqa: E402
from machine import measuring  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--slowdown", type=float, default=0.25)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--min-calls", type=int, default=200)
    p.add_argument("--tolerance", type=float, default=0.10)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--target", default="onnxruntime", choices=("onnxruntime", "torch"))
    p.add_argument("--out", type=Path, help="default: benchmarks/results/gates[_interleaved].md")
    p.add_argument("--interleaved", action="store_true", help="A and B in one worker, ABBA blocks")
    p.add_argument("--blocks", type=int, default=20, help="--interleaved: block pairs per batch")
    p.add_argument("--calls-per-block", type=int, default=50, help="--interleaved: calls a block")
    p.add_argument(
        "--estimator",
        default="hodges-lehmann",
        choices=("hodges-lehmann", "t"),
        help="--interleaved: the ratio's interval (Wilcoxon's, or the t-interval)",
    )
    p.add_argument(
        "--no-reload",
        action="store_true",
        help="--interleaved: keep one pair of sessions (default: fresh ones every block pair)",
    )
    a = p.parse_args(argv)
    from modelpress.fsutil import atomic_write_text

    name = "gates_interleaved.md" if a.interleaved else "gates.md"
    a.out = a.out or ROOT / "benchmarks/results" / name
    with measuring(__file__, argv) as measured:
        if a.interleaved:
            runs = measure_interleaved_runs(a)
        else:
            baseline, runs = measure(a)
    if a.interleaved:
        text = render_interleaved(a, measured.header_lines(), runs)
    else:
        text = render(a, measured.header_lines(), baseline, runs)
    atomic_write_text(a.out, text)
    print(text)
    return 0


def measure(a: argparse.Namespace):
    """The baseline, then ``a.runs`` A/A and A/B runs alternating, each gated against it."""
    from modelpress.measure.bench import BenchJob, BenchSettings, benchmark
    from modelpress.measure.gate import Policy, Regression, run_gates
    from modelpress.targets import get_target

    policy = Policy(regression=Regression(tolerance=a.tolerance, confidence=a.confidence))
    settings = BenchSettings(
        batch_sizes=(1, 32), min_calls=a.min_calls, min_seconds=a.min_seconds, validate=False
    )
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, _ = digits_cnn_checkpoint(Path(tmp), None)
        target = get_target(a.target, threads=1)
        art = target.build(ckpt, "fp32", None, Path(tmp) / "built")
        job = BenchJob(art, a.target, "fp32", {"threads": 1})
        slow = BenchJob(art, a.target, "fp32", {"threads": 1}, slowdown=a.slowdown)
        baseline = benchmark([job], settings)
        assert baseline.records[0].status == "ok", baseline.records[0].reason
        runs: dict[str, list[dict]] = {"A/A": [], "A/B": []}
        for i in range(a.runs):
            for kind, j in (
                (("A/A", job), ("A/B", slow)) if i % 2 == 0 else (("A/B", slow), ("A/A", job))
            ):
                res = benchmark([j], settings)
                report = run_gates(res, policy, baseline)
                rec = res.records[0]
                checks = {c.name.split("@")[1]: c for c in report.checks if "@" in c.name}
                runs[kind].append(
                    {
                        "failed": report.exit_code != 0,
                        "measured": rec.status == "ok",
                        **{b: (c.measured, c.details["ci_low"]) for b, c in checks.items()},
                    }
                )
                line = ", ".join(
                    f"{b} ratio {c.measured:.3f} CI low {c.details['ci_low']:.3f}"
                    for b, c in checks.items()
                )
                why = "" if rec.status == "ok" else f"{rec.status}: {rec.reason}"
                print(f"{kind} run {i + 1}: exit {report.exit_code} {line}{why}", file=sys.stderr)
    return baseline, runs


def measure_interleaved_runs(a: argparse.Namespace) -> dict[str, list[dict]]:
    """``a.runs`` A/A and A/B interleaved runs alternating, each in its own worker process."""
    from modelpress.measure.bench import run_worker
    from modelpress.measure.interleave import InterleavedResult, interleaved_verdict
    from modelpress.targets import get_target

    settings = {
        "batch_sizes": [1, 32],
        "blocks": a.blocks,
        "calls_per_block": a.calls_per_block,
        "warmup": max(a.calls_per_block, 10),
        "confidence": a.confidence,
        "reload": not a.no_reload,
        "estimator": a.estimator,
    }
    runs: dict[str, list[dict]] = {"A/A": [], "A/B": []}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, _ = digits_cnn_checkpoint(Path(tmp), None)
        art = get_target(a.target, threads=1).build(ckpt, "fp32", None, Path(tmp) / "built")
        for i in range(a.runs):
            kinds = (("A/A", 0.0), ("A/B", a.slowdown))
            for kind, slowdown in kinds if i % 2 == 0 else kinds[::-1]:
                job = {
                    "mode": "interleave",
                    "artifact_a": art.to_dict(),
                    "artifact_b": art.to_dict(),
                    "target": a.target,
                    "target_options": {"threads": 1},
                    "slowdown_b": slowdown,
                    "settings": settings,
                }
                out = run_worker(job, 900.0, Path(tmp))
                row: dict = {"measured": out["status"] == "ok", "failed": out["status"] != "ok"}
                for entry in out.get("batches", []):
                    res = InterleavedResult.from_dict(entry)
                    status, why = interleaved_verdict(res, a.tolerance)
                    row["failed"] |= status == "fail"
                    row[f"batch{entry['batch']}"] = (res.ratio, res.ci_low, res.ci_high)
                    print(f"{kind} run {i + 1} batch {entry['batch']}: {why}", file=sys.stderr)
                if not row["measured"]:
                    print(
                        f"{kind} run {i + 1}: {out['status']}: {out.get('reason')}", file=sys.stderr
                    )
                runs[kind].append(row)
    return runs


def _row_head(what: str, all_rows: list[dict]) -> tuple[str, list[dict]]:
    """A table row's first cells (which runs, how many failed the gate) and the measured runs
    (a run whose harness failed has no ratio; it counts as a gate failure)."""
    rows = [r for r in all_rows if r["measured"]]
    lost = len(all_rows) - len(rows)
    what += f"; {lost} run(s) not measured (harness failure)" if lost else ""
    failed = f"{sum(r['failed'] for r in all_rows)} / {len(all_rows)}"
    return f"| {what} | {failed} |", rows


def _ratio_cells(rows: list[dict]) -> str:
    """min / median / max of the ratios at batch 1 and batch 32, two table cells."""
    r1, r32 = ([r[b][0] for r in rows] for b in ("batch1", "batch32"))
    return (
        f"{min(r1):.3f} / {np.median(r1):.3f} / {max(r1):.3f} | "
        f"{min(r32):.3f} / {np.median(r32):.3f} / {max(r32):.3f}"
    )


def render_interleaved(
    a: argparse.Namespace, header: list[str], runs: dict[str, list[dict]]
) -> str:
    line = 1 + a.tolerance
    out = [
        "# Latency regression gate, interleaved: A/A and A/B on this machine",
        "",
        *header,
        "",
        f"The digits CNN (`resnet8`, untrained, seed 0), built for {a.target} fp32 with one "
        f"thread, is loaded twice in one worker process (A and B"
        + (
            "; a fresh pair of sessions, loaded in alternating order, for every block pair"
            if not a.no_reload
            else "; one pair of sessions for the whole run"
        )
        + f") and timed in {a.blocks} ABBA-ordered block pairs of {a.calls_per_block} calls at batch 1 and 32 "
        "(`modelpress.measure.interleave`); the ratio B/A is "
        + (
            "the Hodges-Lehmann estimate of the pairs' log ratios of block medians, with its "
            f"{a.confidence:.0%} Wilcoxon signed-rank interval"
            if a.estimator == "hodges-lehmann"
            else f"the geometric mean of the pairs' ratios of block medians, with a "
            f"{a.confidence:.0%} t-interval"
        )
        + f". {a.runs} runs leave B "
        f"unchanged (A/A: every gate failure is a false failure; target 0) and {a.runs} make "
        f"every B call {a.slowdown:.0%} slower by the harness's busy wait (A/B: every failure is "
        f"a detection; target: all), alternating, each in a fresh worker process. A run fails "
        f"when at either batch size the CI low of B/A is above {line:.3f} (tolerance "
        f"{a.tolerance:.1%}).",
        "",
        "| runs | gate failed | B/A, batch 1 (min / median / max) | batch 32 "
        "| highest CI low | lowest CI low |",
        "|---|---|---|---|---|---|",
    ]
    for kind, all_rows in runs.items():
        what = "A/A (unchanged)" if kind == "A/A" else f"A/B (+{a.slowdown:.0%} per call on B)"
        head, rows = _row_head(what, all_rows)
        if not rows:
            out.append(f"{head} - | - | - | - |")
            continue
        lows = [max(r["batch1"][1], r["batch32"][1]) for r in rows]  # what decides the run
        out.append(f"{head} {_ratio_cells(rows)} | {max(lows):.3f} | {min(lows):.3f} |")
    out += [
        "",
        "A failed run (harness failure) counts as a gate failure. The tolerance must sit above "
        "the A/A rows' highest CI low (a steady difference between two sessions of one model "
        "that pairing cannot cancel) and below the A/B rows' lowest CI low.",
        "",
        "The same runs judged at other tolerances (a run fails when its CI low at either batch "
        "size is above 1 + tolerance):",
        "",
        "| tolerance | A/A false failures | A/B detections |",
        "|---|---|---|",
        *_at_tolerances(runs, (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05)),
        "",
    ]
    return "\n".join(out)


def _at_tolerances(runs: dict[str, list[dict]], tolerances: tuple[float, ...]) -> list[str]:
    """One table row per tolerance: how many A/A and A/B runs fail at it (a harness failure
    always counts as a failure)."""

    def fails(rows: list[dict], tol: float) -> str:
        n = sum("batch1" not in r or max(r["batch1"][1], r["batch32"][1]) > 1 + tol for r in rows)
        return f"{n} / {len(rows)}"

    return [
        f"| {tol:.1%} | {fails(runs['A/A'], tol)} | {fails(runs['A/B'], tol)} |"
        for tol in tolerances
    ]


def render(a: argparse.Namespace, header: list[str], baseline, runs: dict[str, list[dict]]) -> str:
    base = {lat.batch: lat for lat in baseline.records[0].latency}
    line = 1 + a.tolerance
    out = [
        "# Latency regression gate: A/A and A/B on this machine",
        "",
        *header,
        "",
        f"The digits CNN (`resnet8`, untrained, seed 0: latency does not depend on the weights), "
        f"built for {a.target} fp32 with one thread, is measured once as the baseline (p50 "
        f"{base[1].p50_ms * 1e3:.1f} us at batch 1, {base[32].p50_ms * 1e3:.1f} us at batch 32), "
        f"then in {a.runs} runs unchanged (A/A: every gate failure is a false failure; target 0) "
        f"and {a.runs} runs with every timed call made {a.slowdown:.0%} slower by the harness's "
        "busy-wait injection (A/B: every failure is a detection; target: all), A/A and A/B "
        "alternating so that a change in the machine's load hits both alike. Each run is a full "
        f"harness run in a fresh worker process (batch 1 and 32, >= {a.min_calls} calls and "
        f">= {a.min_seconds:g} s per batch) gated against the baseline: regression tolerance "
        f"{a.tolerance:.0%}, confidence {a.confidence:.0%}; a check fails when the whole "
        f"interval of the ratio of medians lies above {line:.2f} (its CI low > {line:.2f}).",
        "",
        "| runs | gate failed | ratio of medians, batch 1 (min / median / max) | batch 32 "
        "| lowest CI low | highest CI low |",
        "|---|---|---|---|---|---|",
    ]
    for kind, all_rows in runs.items():
        what = "A/A (unchanged)" if kind == "A/A" else f"A/B (+{a.slowdown:.0%} per call)"
        head, rows = _row_head(what, all_rows)
        if not rows:
            out.append(f"{head} - | - | - | - |")
            continue
        lows = [min(r["batch1"][1], r["batch32"][1]) for r in rows]
        highs = [max(r["batch1"][1], r["batch32"][1]) for r in rows]
        out.append(f"{head} {_ratio_cells(rows)} | {min(lows):.3f} | {max(highs):.3f} |")
    out += [
        "",
        "A failed run (harness failure) counts as a gate failure, as it does in CI. What moves "
        "the A/A ratios is drift of the whole machine between runs, which the tolerance absorbs: "
        "on a runner whose run-to-run spread is larger than the tolerance, raise the tolerance "
        "or `--min-seconds` and rerun this script to check that the slowdown you care about is "
        "still caught.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
