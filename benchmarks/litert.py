"""LiteRT / TFLite: every family x {fp32, fp16, dynamic_int8, int8} on the LiteRT interpreter.

On digits (scikit-learn, bundled), each registry model is trained with its recommended schedule
(``modelpress.baselines.fit``), converted with litert-torch at each precision (int8 calibrated
on 256 train samples), and validated on the test split on the interpreter itself: accuracy,
top-1 agreement with the float torch model, max |logit difference|. Bytes on disk, and p50
latency at batch 1 on XNNPACK with 1 and 2 threads: the interpreter's own call (set_tensor +
invoke + get_tensor) and the runner's ``predict`` (input checks and (de)quantization included),
the precisions of one model interleaved call by call so that they share the machine's noise.

Then the localisation check: mobilenet with one depthwise channel made to output a constant
1e4 that the next conv ignores (the float model barely changes; per-tensor int8 activations
after it lose everything else), validated and localised.

    .venv/bin/python benchmarks/litert.py [--models resnet8,gru] [--calls 300] \
        [--baselines DIR] [--out benchmarks/results/litert.md]

``--baselines DIR`` reuses ``DIR/<model>.safetensors`` when present (and writes it otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import measuring

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet8", "mobilenet", "gru", "lstm", "vit", "transformer")
PRECISIONS = ("fp32", "fp16", "dynamic_int8", "int8")
THREADS = (1, 2)
NOTES = [
    "Notes on reading it:",
    "",
    "- `raw` is the interpreter's own call; `predict` adds the runner's input checks and numpy (de)quantization. When other processes hold the CPU (see the load line above), the 2-thread column measures contention as much as the runtime: compare precisions within the 1-thread columns; ratios are from one run, absolute times vary with the load.",
    "- fp16 stores weights in half precision; on this CPU they are computed in float32, so only the size changes.",
    "- Full int8 leaves a GRU / LSTM cell in float (see below): for the RNNs `dynamic_int8` is the one that shrinks the file.",
]


def baseline(name: str, data, cache: Path | None, work: Path):
    from modelpress.baselines import fit
    from modelpress.checkpoint import load_checkpoint, save_trained

    path = (cache or work) / f"{name}.safetensors"
    if cache and path.exists():
        ckpt = load_checkpoint(path)
        return ckpt.artifact, ckpt.model
    result = fit(name, data)
    art = save_trained(path, result.model, data, metrics={"test_accuracy": result.test_accuracy})
    return art, result.model.eval()


def p50_us(fns: dict[str, Callable[[], object]], calls: int) -> dict[str, float]:
    """Median microseconds per call of each function, calls interleaved, after a warm-up."""
    for fn in fns.values():
        for _ in range(20):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(calls):
        for key, fn in fns.items():
            start = time.perf_counter_ns()
            fn()
            times[key].append((time.perf_counter_ns() - start) / 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def raw_call(runner, x1: np.ndarray):
    """The interpreter alone: set_tensor + invoke + get_tensor on an already encoded input."""
    from modelpress.targets.litert import encode_input

    interp, inp, out = runner.interpreter, runner.inp, runner.out
    feed = encode_input(runner.check_input(x1), inp)

    def call():
        interp.set_tensor(inp["index"], feed)
        interp.invoke()
        return interp.get_tensor(out["index"])

    return call


def measure_model(name: str, data, args, work: Path) -> list[dict]:
    from modelpress.errors import ModelPressError
    from modelpress.targets.litert import LiteRTTarget
    from modelpress.validate import validate

    art, model = baseline(name, data, args.baselines, work)
    with torch.no_grad():
        ref = model(torch.from_numpy(data.test.x)).numpy()
    rows, built = [], {}
    for precision in PRECISIONS:
        row = {"model": name, "precision": precision}
        try:
            start = time.perf_counter()
            calib = data.calibration(256, seed=0)
            built[precision] = LiteRTTarget().build(art, precision, calib, work / "tflite")
            row["build_s"] = time.perf_counter() - start
            rec = validate(LiteRTTarget().load(built[precision]), data.test, ref)
            row.update(rec=rec, bytes=built[precision].size_bytes, meta=built[precision].meta)
        except ModelPressError as exc:  # one failing precision is a row that says why
            row["error"] = str(exc)
        rows.append(row)
    x1 = data.test.x[:1]
    with torch.no_grad():
        torch_us = p50_us({"torch": lambda: model(torch.from_numpy(x1))}, args.calls)["torch"]
    for threads in THREADS:
        runners = {p: LiteRTTarget(threads=threads).load(a) for p, a in built.items()}
        raw = p50_us({p: raw_call(r, x1) for p, r in runners.items()}, args.calls)
        full = p50_us({p: (lambda r=r: r.predict(x1)) for p, r in runners.items()}, args.calls)
        for row in rows:
            if row["precision"] in runners:
                row[f"raw_{threads}"], row[f"predict_{threads}"] = (
                    raw[row["precision"]],
                    full[row["precision"]],
                )
    for row in rows:
        row["torch_us"] = torch_us
    return rows


def fragile_check(data, args, work: Path) -> list[str]:
    from modelpress.checkpoint import save_trained
    from modelpress.models import create_model
    from modelpress.targets.litert import LiteRTTarget
    from modelpress.targets.litert_debug import validate_artifact

    art, model = baseline("mobilenet", data, args.baselines, work)
    fragile = create_model("mobilenet", input_spec=data.input_spec)
    fragile.load_state_dict(model.state_dict())
    fragile.eval()
    pointwise = fragile.blocks[2].pointwise[0]
    channel = int(pointwise.weight.detach().abs().sum(dim=(0, 2, 3)).argmin())
    with torch.no_grad():
        bn = fragile.blocks[2].depthwise[1]
        bn.weight[channel], bn.bias[channel] = 0.0, 1e4
        pointwise.weight[:, channel] = 0.0
    ckpt = save_trained(work / "fragile.safetensors", fragile, data)
    lines = []
    for label, source in (("healthy", art), ("fragile", ckpt)):
        q = LiteRTTarget().build(source, "int8", data.calibration(256, seed=0), work / label)
        rec, report = validate_artifact(q, source, data.test)
        lines.append(
            f"- {label} mobilenet int8: float acc {100 * rec.reference_accuracy:.2f} %, "
            f"int8 acc on the interpreter {100 * rec.accuracy:.2f} %, agreement "
            f"{100 * rec.agreement:.2f} %"
            + (
                "; report: "
                + ", ".join(
                    f"`{d.layer}` {d.op} (output {d.sqnr_db:.1f} dB, lost {d.sqnr_drop_db:.1f} dB)"
                    for d in report.worst(3)
                )
                if report
                else "; no report (within tolerance)"
            )
        )
    lines.append(f"- (channel {channel} of `blocks.2.depthwise` set to a constant 1e4)")
    return lines


def table(rows: list[dict]) -> list[str]:
    head = (
        "| model | precision | acc % (torch) | agree % | max abs diff | bytes | vs fp32 | "
        "raw p50 us 1t | raw p50 us 2t | predict p50 us 1t | vs fp32 (raw 1t) | torch p50 us |"
    )
    out = [head, "|" + "---|" * 12]
    fp32 = {r["model"]: r for r in rows if r["precision"] == "fp32" and "rec" in r}
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | {r['precision']} | failed: {r['error']} |" + " |" * 9)
            continue
        rec, base = r["rec"], fp32.get(r["model"])
        size_ratio = f"{r['bytes'] / base['bytes']:.2f}x" if base else ""
        speed = f"{r['raw_1'] / base['raw_1']:.2f}x" if base else ""
        out.append(
            f"| {r['model']} | {r['precision']} | {100 * rec.accuracy:.2f} ({100 * rec.reference_accuracy:.2f}) "
            f"| {100 * rec.agreement:.2f} | {rec.max_abs_diff:.4f} | {r['bytes']:,} | {size_ratio} "
            f"| {r['raw_1']:.1f} | {r['raw_2']:.1f} | {r['predict_1']:.1f} | {speed} | {r['torch_us']:.1f} |"
        )
    return out


def float_ops_notes(rows: list[dict]) -> list[str]:
    notes = []
    for r in rows:
        if r["precision"] == "fp32" or "meta" not in r:
            continue
        q = r["meta"]["quantization"]
        weights = ", ".join(f"{k} {v:,}" for k, v in q["weight_bytes"].items())
        line = f"- {r['model']} {r['precision']}: constants (bytes) {weights}"
        if r["precision"] == "int8":
            ops = ", ".join(f"{k} x{v}" for k, v in q["float_ops"].items()) or "none"
            line += f"; float ops: {ops}"
        if q.get("notes"):
            line += f" ({'; '.join(q['notes'])})"
        notes.append(line)
    return notes


def main(argv: list[str] | None = None) -> int:
    from modelpress.data import load_dataset
    from modelpress.models import MODELS as REGISTRY
    from modelpress.targets.litert import LiteRTTarget

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--baselines", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/litert.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    start, rows = time.perf_counter(), []
    with measuring(__file__, argv) as measured, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.baselines:
            args.baselines.mkdir(parents=True, exist_ok=True)
        views = {}
        for name in names:
            view = "image" if "image" in REGISTRY[name].input_kinds else "sequence"
            views.setdefault(view, load_dataset("digits", view=view))
            rows += measure_model(name, views[view], args, work)
            print(f"{name}: done at {time.perf_counter() - start:.0f} s", file=sys.stderr)
        fragile = fragile_check(views.get("image") or load_dataset("digits"), args, work)
    info = LiteRTTarget().describe()
    text = [
        "# LiteRT / TFLite on digits",
        "",
        *measured.header_lines(),
        f"- Runtime: {info.runtime} {info.version}, {info.details['converter']}; torch with 1 thread",
        "",
        "Each model trained with its recommended schedule; test split of 360 samples (one sample "
        "= 0.28 points). Accuracy and agreement measured on the LiteRT interpreter (XNNPACK); "
        "`vs fp32` is bytes (or raw 1-thread p50) divided by the fp32 artifact's. Latency is at "
        f"batch 1, p50 of {args.calls} calls, precisions interleaved.",
        "",
        *table(rows),
        "",
        *NOTES,
        "",
        "What each artifact stores in which dtype (`quantization.weight_bytes`) and, for int8, the "
        "ops it still computes in float (`quantization.float_ops`):",
        "",
        *float_ops_notes(rows),
        "",
        "## Localisation check (a layer made fragile on purpose)",
        "",
        *fragile,
        "",
    ]
    from modelpress.fsutil import atomic_write_text

    atomic_write_text(args.out, "\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
