"""Per-call overhead of the benchmark harness at batch 1 vs a bare ``session.run`` loop.

The digits CNN (resnet8, 1x8x8 input) is built for ONNX Runtime fp32 with one intra-op thread.
In one process, alternating rounds time:

- *bare*: ``for _ in range(n): session.run(None, feeds)`` with the feeds dict built once, timed
  as a whole (the cheapest loop a user could write);
- *harness*: :func:`modelpress.measure.worker.time_calls` on the call the harness times
  (:func:`~modelpress.measure.worker.fast_call` of the target's runner, on the same session),
  timed as a whole too, so its own clock reads and bookkeeping count.

Reported, as wall time and as CPU time of the process (``time.process_time``: with one ORT
thread the model runs on the calling thread, and time spent preempted by other processes on a
shared machine does not count): the median over rounds of (harness loop / bare loop) - 1, and
the harness's reported median per call against the bare loop's CPU time per call (how much
the measurement inflates the number it reports; the bare loop's wall time would count the time
other processes held the CPU). A third row times the harness loop on
``functools.partial(session.run, None, feeds)``: what a runner's optional ``prepare(x)`` hook
(see :func:`modelpress.measure.worker.fast_call`) would give. Latency does not depend on the
weights, so an untrained seeded model is used unless ``--checkpoint`` is given.

    python benchmarks/harness_overhead.py [--rounds 31] [--calls 2000] [--out FILE]
                                                  -> benchmarks/results/harness_overhead.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import measuring  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def digits_cnn_checkpoint(out: Path, checkpoint: Path | None):
    from modelpress.checkpoint import load_checkpoint, save_trained
    from modelpress.data import load_dataset
    from modelpress.models import create_model
    from modelpress.train import seed_everything

    if checkpoint is not None:
        return load_checkpoint(checkpoint).artifact, load_dataset("digits", view="image")
    data = load_dataset("digits", view="image")
    seed_everything(0)
    model = create_model("resnet8", input_spec=data.input_spec, num_classes=data.num_classes)
    return save_trained(out / "resnet8.safetensors", model, data), data


def measure_rounds(variants: dict, rounds: int, calls: int) -> dict[str, dict[str, list]]:
    """Wall and CPU (process) time of each variant's loop of ``calls`` calls, per round.

    A variant is ("bare", fn): ``for _ in range(calls): fn()``, or ("harness", fn): the
    harness's :func:`time_calls` on ``fn``. The order rotates every round.
    """
    from modelpress.measure.worker import time_calls

    out = {name: {"wall": [], "cpu": [], "p50": []} for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            kind, fn = variants[name]
            w0, c0 = time.perf_counter_ns(), time.process_time_ns()
            if kind == "bare":
                for _ in range(calls):
                    fn()
            else:
                samples = time_calls(fn, calls, 0.0)
                out[name]["p50"].append(float(np.median(samples)))
            out[name]["cpu"].append(time.process_time_ns() - c0)
            out[name]["wall"].append(time.perf_counter_ns() - w0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--calls", type=int, default=2000, help="calls per round and per loop")
    p.add_argument("--checkpoint", type=Path, help="a trained digits resnet8 (default: untrained)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/harness_overhead.md")
    a = p.parse_args(argv)
    from modelpress.fsutil import atomic_write_text

    with measuring(__file__, argv) as measured:
        res = measure(a.checkpoint, a.rounds, a.calls)
    text = render(measured.header_lines(), res, a.rounds, a.calls)
    atomic_write_text(a.out, text)
    print(text)
    return 0


def measure(checkpoint: Path | None, rounds: int, calls: int) -> dict[str, dict[str, list]]:
    """The three loops of the digits resnet8 on one ONNX Runtime session (1 thread, batch 1)."""
    import functools

    from modelpress.measure.worker import fast_call
    from modelpress.targets import get_target

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, data = digits_cnn_checkpoint(Path(tmp), checkpoint)
        target = get_target("onnxruntime", threads=1)
        art = target.build(ckpt, "fp32", None, Path(tmp) / "ort")
        runner = target.load(art)
        x = runner.check_input(np.ascontiguousarray(data.test.x[:1]))  # (1, 1, 8, 8)
        session = runner.session
        bare = functools.partial(session.run, None, {session.get_inputs()[0].name: x})
        variants = {
            "bare session.run loop": ("bare", bare),
            "harness (as shipped)": ("harness", fast_call(runner, x)),
            "harness + a runner prepare() hook": ("harness", bare),
        }
        for _, fn in variants.values():  # warm-up
            for _ in range(500):
                fn()
        return measure_rounds(variants, rounds, calls)


def render(header: list[str], res: dict[str, dict[str, list]], rounds: int, calls: int) -> str:
    out = [
        "# Benchmark harness: overhead per call at batch 1",
        "",
        *header,
        "",
        "The digits CNN (`resnet8`, input 1x8x8) built for ONNX Runtime fp32 with one intra-op "
        f"thread; {rounds} rounds x {calls} calls per loop in one process and one session, the "
        "order of the loops rotated each round. *bare*: `for _ in range(n): session.run(None, "
        "feeds)` with the feeds built once; *harness*: the harness's timed loop "
        "(`bench_worker.time_calls` on `fast_call(runner, x)`), its clock reads and bookkeeping "
        "included; the third row times the harness loop on `functools.partial(session.run, None, "
        "feeds)`, what a runner's `prepare(x)` hook gives. Overheads are medians of per-round "
        "ratios to the bare loop of the same round; CPU time is `time.process_time` of the "
        "process, which does not count the time other processes held the CPU. The last column "
        "sets the median per call that the harness reports against the bare loop's CPU time per "
        "call (how much the measurement inflates the number it reports). Target: <= 5 % "
        "overhead (CPU).",
        "",
        "| per call | wall, median round | CPU, median round | overhead, wall | overhead, CPU "
        "| reported p50 vs bare CPU |",
        "|---|---|---|---|---|---|",
    ]
    base = res["bare session.run loop"]
    bare_wall, bare_cpu = (np.array(base[k]) / calls for k in ("wall", "cpu"))
    for name, r in res.items():
        wall, cpu = np.array(r["wall"]) / calls, np.array(r["cpu"]) / calls
        cells = [f"{np.median(wall) / 1e3:.3f} us", f"{np.median(cpu) / 1e3:.3f} us"]
        if r["p50"]:  # paired by round: the ratio of the two loops of the same round
            cells += [
                f"{100 * (np.median(wall / bare_wall) - 1):+.2f} %",
                f"{100 * (np.median(cpu / bare_cpu) - 1):+.2f} %",
                f"{100 * (np.median(np.array(r['p50']) / bare_cpu) - 1):+.2f} %",
            ]
        else:
            cells += ["-", "-", "-"]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join([*out, ""])


if __name__ == "__main__":
    sys.exit(main())
