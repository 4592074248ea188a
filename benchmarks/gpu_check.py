"""The GPU check: on a machine with CUDA, does the chain train and compress on the GPU, and do
the GPU runtimes build, validate and time like the others?

1. Training: the digits resnet8 trained twice from the same seed, on the CPU and on the GPU
   (``TrainConfig(device=...)``): seconds, test accuracy, the device the result records, and that
   the returned model (what checkpoints are written from) is back on the CPU.
2. The passes that train, on the GPU (``PassContext(device=...)``): distillation (the trained
   resnet8 teaching a half-width one), pruning to half the MACs with a fine-tune recovery, and
   QAT: seconds, accuracy, the device each recorded.
3. The runtimes, on the GPU-trained checkpoint, each build and measurement in its own process
   (``modelpress.measure.bench.benchmark``, as ``modelpress bench`` does): torch on CPU and CUDA, ONNX
   Runtime on CPU (fp32, int8) and with the CUDA provider (fp32, fp16), TensorRT fp32, fp16 and
   int8. Accuracy and agreement on the test split on the runtime itself, p50 end to end (host
   to host) and, for TensorRT, device compute alone (CUDA events). A runtime that is not
   installed is a row that says so.

    python benchmarks/gpu_check.py [--device cuda] [--epochs 15] [--quick] \
        [--min-seconds 1.0] [--out benchmarks/results/gpu.md]

``benchmarks/gpu_check.sh`` sets up the GPU extras first and runs this. ``--device cpu --quick``
is a smoke run of the script itself on a machine without a GPU (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from machine import measuring

from modelpress.checkpoint import save_trained
from modelpress.compress.base import PassContext
from modelpress.compress.distill import DistillConfig, distill, new_student
from modelpress.compress.prune import PruneConfig, prune
from modelpress.compress.quantize import QATConfig, qat
from modelpress.data import load_dataset
from modelpress.fsutil import atomic_write_text
from modelpress.measure.bench import BenchJob, BenchSettings, benchmark, reference_logits
from modelpress.models import create_model
from modelpress.train import TrainConfig, seed_everything, train

ROOT = Path(__file__).resolve().parents[1]


def gpu_lines(device: str) -> list[str]:
    """What the GPU side of this machine is: torch's CUDA, ONNX Runtime's providers, TensorRT."""
    import onnxruntime as ort

    lines = [f"- torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cap = ".".join(map(str, torch.cuda.get_device_capability(i)))
            lines.append(f"- GPU {i}: {torch.cuda.get_device_name(i)} (compute capability {cap})")
    else:
        lines.append("- no CUDA GPU visible to torch")
    lines.append(
        f"- onnxruntime {ort.__version__}: providers {', '.join(ort.get_available_providers())}"
    )
    try:
        import tensorrt

        lines.append(f"- tensorrt {tensorrt.__version__}")
    except ImportError as exc:
        lines.append(f"- tensorrt: not importable ({exc})")
    lines.append(f"- device asked for: `{device}`")
    return lines


def _on_cpu(model: torch.nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])


def train_section(data: Any, device: str, epochs: int, out: Path) -> tuple[list[str], Any]:
    rows = [
        "| trained on | epochs run | seconds | test accuracy | device recorded | model back on CPU |",
        "|---|---:|---:|---:|---|---|",
    ]
    art = None
    for dev in dict.fromkeys(("cpu", device)):
        seed_everything(0)
        model = create_model("resnet8", input_spec=data.input_spec, num_classes=data.num_classes)
        res = train(
            model, data, TrainConfig(epochs=epochs, patience=epochs, device=dev), progress=False
        )
        summary = res.summary()
        rows.append(
            f"| {dev} | {res.epochs_run} | {res.seconds:.1f} | {res.test_accuracy:.4f} "
            f"| {summary.get('device', '(not recorded)')} | {_on_cpu(res.model)} |"
        )
        art = save_trained(out / f"resnet8-{dev.replace(':', '')}.safetensors", res.model, data)
    return rows, art


def passes_section(data: Any, art: Any, device: str, epochs: int, out: Path) -> list[str]:
    ctx = PassContext(data=data, out_dir=out / "passes", seed=0, device=device)
    student = new_student("resnet8", data, out / "student.safetensors", width=0.5)
    steps = {
        "distill (resnet8 -> 0.5 width)": lambda: distill(
            art, student, DistillConfig(), ctx, TrainConfig(epochs=epochs, device=device)
        ),
        "prune (MACs 0.5, fine-tune)": lambda: prune(
            art,
            PruneConfig(macs_budget=0.5, recovery="finetune", recovery_epochs=max(1, epochs // 3)),
            ctx,
        ),
        "QAT (int8 QDQ)": lambda: qat(art, QATConfig(epochs=max(1, epochs // 5)), ctx),
    }
    rows = [
        "| pass | seconds | accuracy before | accuracy after | device recorded |",
        "|---|---:|---:|---:|---|",
    ]
    for name, step in steps.items():
        t0 = time.perf_counter()
        try:
            rec = step().record
        except Exception as exc:  # a failing pass is a row that says why
            rows.append(f"| {name} | {time.perf_counter() - t0:.1f} | | | failed: {exc} |")
            continue
        where = rec.details.get("device") or rec.config.get("device") or "(not recorded)"
        rows.append(
            f"| {name} | {rec.seconds:.1f} | {rec.before.accuracy:.4f} | "
            f"{rec.after.accuracy:.4f} | {where} |"
        )
    return rows


def runtime_jobs(art: Any, device: str, build_dir: Path, ref: Path) -> list[BenchJob]:
    cuda = device if device.startswith("cuda") else "cuda"
    plan = [
        ("torch", "fp32", {"device": "cpu"}),
        ("torch", "fp32", {"device": cuda}),
        ("onnxruntime", "fp32", {}),
        ("onnxruntime", "int8", {}),
        ("onnxruntime", "fp32", {"providers": ["cuda"]}),
        ("onnxruntime", "fp16", {"providers": ["cuda"]}),
        ("tensorrt", "fp32", {}),
        ("tensorrt", "fp16", {}),
        ("tensorrt", "int8", {}),
    ]
    return [
        BenchJob(
            artifact=art,
            target=target,
            precision=precision,
            target_options=options,
            build=True,
            build_dir=build_dir / f"{target}-{i}",
            reference_logits=ref,
        )
        for i, (target, precision, options) in enumerate(plan)
    ]


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def runtime_rows(results: Any, jobs: list[BenchJob]) -> list[str]:
    rows = [
        "| runtime | options | precision | status | accuracy | drop (pt) | agreement "
        "| p50 b1 (ms) | p50 b32 (ms) | compute p50 b1 | compute p50 b32 | device |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rec, job in zip(results.records, jobs):
        opts = ", ".join(f"{k}={v}" for k, v in job.target_options.items()) or "defaults"
        if rec.status != "ok":
            rows.append(
                f"| {job.target} | {opts} | {job.precision} | {rec.status}: {rec.reason} "
                "| | | | | | | | |"
            )
            continue
        lat = {x.batch: x for x in rec.latency}
        val = rec.validation
        device = (rec.runtime or {}).get("device", "") if isinstance(rec.runtime, dict) else ""
        rows.append(
            f"| {job.target} | {opts} | {job.precision} | ok | {val.accuracy:.4f} "
            f"| {val.accuracy_drop:+.2f} | {val.agreement:.4f} "
            f"| {_ms(lat[1].p50_ms if 1 in lat else None)} "
            f"| {_ms(lat[32].p50_ms if 32 in lat else None)} "
            f"| {_ms(lat[1].compute_p50_ms if 1 in lat else None)} "
            f"| {_ms(lat[32].compute_p50_ms if 32 in lat else None)} | {device} |"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a smoke run)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds per batch size")
    p.add_argument("--quick", action="store_true", help="few epochs and calls: a smoke run")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu.md")
    a = p.parse_args(argv)
    epochs = 2 if a.quick else a.epochs
    settings = (
        BenchSettings(batch_sizes=(1, 32), min_calls=5, min_seconds=0.0, warmup_calls=2)
        if a.quick
        else BenchSettings(
            batch_sizes=(1, 32), min_calls=200, min_seconds=a.min_seconds, warmup_calls=20
        )
    )
    data = load_dataset("digits")
    with measuring(__file__, argv) as measured, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env = gpu_lines(a.device)
        train_rows, art = train_section(data, a.device, epochs, out)
        pass_rows = passes_section(data, art, a.device, epochs, out)
        ref = reference_logits(art, out / "reference.npy")
        jobs = runtime_jobs(art, a.device, out / "built", ref)
        results = benchmark(jobs, settings, log=lambda s: print(s, file=sys.stderr, flush=True))
    text = "\n".join(
        [
            "# GPU check: training, passes and runtimes on CUDA",
            "",
            *measured.header_lines(),
            *env,
            "",
            f"## Training the digits resnet8 ({epochs} epochs, seed 0)",
            "",
            *train_rows,
            "",
            f"## Passes that train, on `{a.device}`",
            "",
            *pass_rows,
            "",
            "## Runtimes (each build and measurement in its own process)",
            "",
            "p50 is end to end (host array in, host logits out); compute p50 is TensorRT's device "
            "time alone (CUDA events around the engine). Accuracy is on the test split, on the "
            "runtime; drop and agreement against the torch model on the CPU.",
            "",
            *runtime_rows(results, jobs),
            "",
        ]
    )
    atomic_write_text(a.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
