"""ONNX Runtime target on digits: every family x {fp32, fp16, dynamic_int8, int8}.

    python benchmarks/ort_precisions.py            -> benchmarks/results/onnxruntime.md

Trains each registry model (recommended schedule, seed 0), then for every precision builds,
validates on the ORT session itself (accuracy, agreement with the float torch model) and times
it in a fresh worker process (1 intra-op thread, batch 1 and 32) through modelpress.bench.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "dynamic_int8", "int8")


def main() -> int:
    from modelpress.baselines import fit
    from modelpress.bench import BenchJob, BenchSettings, benchmark, reference_logits
    from modelpress.checkpoint import save_trained
    from modelpress.data import load_dataset
    from modelpress.models import MODELS

    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mp-ort-"))
    jobs = []
    for name, entry in MODELS.items():
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
    res = benchmark(jobs, settings, log=print)
    by = {(r.model, r.precision): r for r in res.records}
    lines = [
        "# ONNX Runtime target on digits",
        "",
        f"- Command: `python benchmarks/ort_precisions.py` ({time.perf_counter() - start:.0f} s wall)",
        f"- Machine: {res.environment.cpu_model}, {res.environment.usable_cores} usable cores, onnxruntime "
        f"{res.environment.versions.get('onnxruntime')}, {platform.platform()}, {datetime.now(timezone.utc):%Y-%m-%d}",
        "- 1 intra-op thread; p50 over >= 300 calls and >= 1 s; accuracy on the ORT session, test split (360)",
        "",
        "| model | precision | status | accuracy % | drop pt | agreement | bytes | size vs fp32 | p50 b1 ms | p50 b32 ms | b32 vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
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
    out = Path(__file__).resolve().parent / "results" / "onnxruntime.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
