"""Per-call overhead of the benchmark harness at batch 1 vs a bare ``session.run`` loop.

The digits CNN (resnet8, 1x8x8 input) is built for ONNX Runtime fp32 with one intra-op thread.
In one process, alternating rounds time:

- *bare*: ``for _ in range(n): session.run(None, feeds)`` with the feeds dict built once, timed
  as a whole (the cheapest loop a user could write);
- *harness*: :func:`modelpress.bench_worker.time_calls` on the call the harness times
  (:func:`~modelpress.bench_worker.fast_call` of the target's runner, on the same session),
  timed as a whole too, so its own clock reads and bookkeeping count.

Reported, as wall time and as CPU time of the process (``time.process_time``: with one ORT
thread the model runs on the calling thread, and time spent preempted by other processes on a
shared machine does not count): the median over rounds of (harness loop / bare loop) - 1, and
the harness's reported median per call against the bare loop's CPU time per call (how much
the measurement inflates the number it reports; the bare loop's wall time would count the time
other processes held the CPU). A third row times the harness loop on
``functools.partial(session.run, None, feeds)``: what a runner's optional ``prepare(x)`` hook
(see :func:`modelpress.bench_worker.fast_call`) would give. Latency does not depend on the
weights, so an untrained seeded model is used unless ``--checkpoint`` is given.

    .venv/bin/python benchmarks/harness_overhead.py [--rounds 21] [--calls 3000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


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
    from modelpress.bench_worker import time_calls

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
    a = p.parse_args(argv)

    import functools

    import onnxruntime as ort

    from modelpress.bench_worker import fast_call
    from modelpress.targets import get_target

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, data = digits_cnn_checkpoint(Path(tmp), a.checkpoint)
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
        res = measure_rounds(variants, a.rounds, a.calls)
    print(
        f"onnxruntime {ort.__version__}, 1 intra-op thread, batch 1, digits resnet8 fp32; "
        f"{a.rounds} rounds x {a.calls} calls per loop, order rotated each round\n"
    )
    print(
        "| per call | wall, median round | CPU, median round | overhead, wall | overhead, CPU "
        "| reported p50 vs bare CPU |"
    )
    print("|---|---|---|---|---|---|")
    base = res["bare session.run loop"]
    bare_wall, bare_cpu = (np.array(base[k]) / a.calls for k in ("wall", "cpu"))
    for name, r in res.items():
        wall, cpu = np.array(r["wall"]) / a.calls, np.array(r["cpu"]) / a.calls
        cells = [f"{np.median(wall) / 1e3:.3f} us", f"{np.median(cpu) / 1e3:.3f} us"]
        if r["p50"]:  # paired by round: the ratio of the two loops of the same round
            cells += [
                f"{100 * (np.median(wall / bare_wall) - 1):+.2f} %",
                f"{100 * (np.median(cpu / bare_cpu) - 1):+.2f} %",
                f"{100 * (np.median(np.array(r['p50']) / bare_cpu) - 1):+.2f} %",
            ]
        else:
            cells += ["-", "-", "-"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
