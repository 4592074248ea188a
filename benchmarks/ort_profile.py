"""Where the time goes in an ONNX Runtime session: per op type, fp32 against its quantized builds.

Each model of ``benchmarks/zoo.py`` (random init, full size) is built by the onnxruntime target as
fp32 and as each quantized precision (CNNs: static int8; transformers: dynamic and static int8),
loaded with the target's session settings on one thread, and run with ORT's profiler on for
``--runs`` calls of batch 1 after a warm-up. Kernel times are summed per op type (the ops ORT
runs after its graph fusions: a Conv fused with its activation is one Conv) and divided by the
runs. The profiler adds overhead per node, so read shares and differences between builds, not
absolute latency; p50 without the profiler is timed separately (the builds alternating).

    .venv/bin/python benchmarks/ort_profile.py [--models mobilenetv3_small,bert_mini] \\
        [--runs 20] [--top 12] [--out benchmarks/results/ort_profile.md]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from machine import measuring, model_names, write_results
from zoo_prune import Row, build_variants, interleaved_ms, sample

ROOT = Path(__file__).resolve().parents[1]


def profile(path: Path, x: np.ndarray, runs: int, work: Path) -> dict[str, tuple[int, float]]:
    """{op type: (nodes per call, ms per call)} from ORT's profiler over ``runs`` calls."""
    import onnxruntime as ort

    from modelpress.targets import get_target

    tgt = get_target("onnxruntime", threads=1)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.log_severity_level = 3
    opts.enable_profiling = True
    opts.profile_file_prefix = str(work / "profile")
    session = ort.InferenceSession(
        str(path),
        opts,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(tgt.cfg.disabled_optimizers),
    )
    feed = {session.get_inputs()[0].name: x}
    for _ in range(3 + runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    runs_at = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )[3:]  # the first 3 calls of this session warm it up
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        if any(start <= e["ts"] <= end for start, end in runs_at):
            totals[e["args"]["op_name"]][0] += 1
            totals[e["args"]["op_name"]][1] += e["dur"] / 1e3
    n = max(len(runs_at), 1)
    return {op: (round(c / n), ms / n) for op, (c, ms) in totals.items()}


def model_rows(name: str, runs: int, top: int, work: Path) -> list[str]:
    import zoo

    from modelpress.targets import get_target

    arch = zoo.MODELS[name]
    row = Row(name)
    build_variants(name, arch, arch.full, row, work, prune=False)
    ckpt = row.variants["dense"].checkpoint
    calib, x = sample(arch.full, 16, seed=3), sample(arch.full, 1, seed=2)
    precisions = ["fp32"] + [p for s, p in zoo.variants(name) if s == "dense" and p != "fp32"]
    profiles, calls = {}, {}
    for precision in precisions:
        data = calib if precision == "int8" else None
        art = get_target("onnxruntime").build(ckpt, precision, data, work / f"{name}-{precision}")
        profiles[precision] = profile(art.path, x, runs, work)
        calls[precision] = get_target("onnxruntime", threads=1).load(art).prepare(x)
    times = interleaved_ms(calls, 50, 5.0)
    ops = sorted(
        {op for p in profiles.values() for op in p},
        key=lambda op: -max(p.get(op, (0, 0.0))[1] for p in profiles.values()),
    )
    head = " | ".join(f"{p} nodes | {p} ms" for p in precisions)
    out = [
        f"### {name}",
        "",
        "p50 without the profiler (batch 1, interleaved): "
        + ", ".join(f"{p} {np.median(t):.3f} ms" for p, t in times.items()),
        "",
        f"| op type | {head} |",
        "|---|" + "---:|" * (2 * len(precisions)),
    ]
    for op in ops[:top]:
        cells = []
        for p in precisions:
            nodes, ms = profiles[p].get(op, (0, 0.0))
            cells += [str(nodes) if nodes else "-", f"{ms:.3f}" if nodes else "-"]
        out.append(f"| {op} | " + " | ".join(cells) + " |")
    rest = ops[top:]
    if rest:
        sums = [sum(profiles[p].get(op, (0, 0.0))[1] for op in rest) for p in precisions]
        out.append(
            f"| {len(rest)} other op types | " + " | ".join(f"- | {s:.3f}" for s in sums) + " |"
        )
    totals = [sum(ms for _, ms in profiles[p].values()) for p in precisions]
    out.append("| all kernels | " + " | ".join(f"- | {t:.3f}" for t in totals) + " |")
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mobilenetv3_small,mobilenetv2,bert_mini")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ort_profile.md")
    args = p.parse_args(argv)
    import zoo

    names = model_names(p, args.models, zoo.MODELS)
    from modelpress.factory import add_factory_folder

    add_factory_folder(ROOT / "tests")  # zoo_nets lives beside the tests
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, measuring(__file__, argv) as measured:
        for name in names:
            rows += model_rows(name, args.runs, args.top, Path(tmp))
            print("\n".join(rows), flush=True)
    write_results(
        args.out,
        "ONNX Runtime kernel time per op type: fp32 against its quantized builds",
        measured,
        [
            f"One thread, batch 1, {args.runs} profiled calls after 3 warm-up calls, random "
            "weights (`benchmarks/zoo.py`'s models at full size). ms = kernel time per call "
            "summed over the op type's nodes, as ORT's profiler reports it (with its per-node "
            "overhead); nodes = nodes of that type run per call, after ORT's fusions.",
            "",
            *rows,
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
