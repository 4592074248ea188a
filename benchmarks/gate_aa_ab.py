"""A/A and A/B check of the latency regression gate on this machine.

One artifact (the digits CNN, resnet8, built for ONNX Runtime fp32 with one thread) is measured
once as the baseline, then ``--runs`` more times unchanged (A/A: every failure is a false
failure) and ``--runs`` times with every timed call made ``--slowdown`` slower by the harness's
busy-wait injection (A/B: every failure is a detection). A/A and A/B runs alternate, so a
change in machine load hits both alike. Each run is a full harness run (fresh worker process,
batch 1 and 32) gated against the baseline with a regression policy (``--tolerance``,
``--confidence``; the defaults are those of ``examples/gates.yaml``).

    .venv/bin/python benchmarks/gate_aa_ab.py [--runs 20] [--min-seconds 1] [--tolerance 0.10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness_overhead import digits_cnn_checkpoint  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--slowdown", type=float, default=0.25)
    p.add_argument("--min-seconds", type=float, default=1.0)
    p.add_argument("--min-calls", type=int, default=200)
    p.add_argument("--tolerance", type=float, default=0.10)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--target", default="onnxruntime", choices=("onnxruntime", "torch"))
    a = p.parse_args(argv)

    from modelpress.bench import BenchJob, BenchSettings, benchmark
    from modelpress.gate import Policy, Regression, run_gates
    from modelpress.targets import get_target

    policy = Policy(regression=Regression(tolerance=a.tolerance, confidence=a.confidence))
    settings = BenchSettings(
        batch_sizes=(1, 32), min_calls=a.min_calls, min_seconds=a.min_seconds, validate=False
    )
    started = time.time()
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
    env = baseline.environment
    base = {lat.batch: lat for lat in baseline.records[0].latency}
    print(
        f"Machine: {env.cpu_model}, {env.logical_cores} logical cores; {env.platform}; "
        f"onnxruntime {env.versions.get('onnxruntime')}; took {time.time() - started:.0f} s\n"
    )
    print(
        f"Policy: regression tolerance {a.tolerance:.0%}, confidence {a.confidence:.0%}; "
        f"each run: batch 1 and 32, >= {a.min_calls} calls and >= {a.min_seconds:g} s per batch; "
        f"baseline p50 {base[1].p50_ms * 1e3:.1f} us (batch 1), {base[32].p50_ms * 1e3:.1f} us (batch 32)\n"
    )
    print(
        "| runs | gate failed | ratio of medians, batch 1 (min / median / max) | batch 32 | lowest CI low | highest CI low |"
    )
    print("|---|---|---|---|---|---|")
    for kind, all_rows in runs.items():
        rows = [r for r in all_rows if r["measured"]]  # a run whose harness failed has no ratio
        r1 = [r["batch1"][0] for r in rows]
        r32 = [r["batch32"][0] for r in rows]
        lows = [min(r["batch1"][1], r["batch32"][1]) for r in rows]
        highs = [max(r["batch1"][1], r["batch32"][1]) for r in rows]
        what = "A/A (unchanged)" if kind == "A/A" else f"A/B (+{a.slowdown:.0%} per call)"
        lost = len(all_rows) - len(rows)
        what += f"; {lost} run(s) not measured (harness failure)" if lost else ""
        print(
            f"| {what} | {sum(r['failed'] for r in all_rows)} / {len(all_rows)} | "
            f"{min(r1):.3f} / {np.median(r1):.3f} / {max(r1):.3f} | "
            f"{min(r32):.3f} / {np.median(r32):.3f} / {max(r32):.3f} | {min(lows):.3f} | {max(highs):.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
