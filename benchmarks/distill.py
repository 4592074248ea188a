"""Knowledge distillation vs training alone, over seeds; QAT-ONNX accuracy on onnxruntime.

On digits (scikit-learn, bundled), one larger teacher (resnet8 at ``--teacher-width``, image
view, trained once with its recommended schedule) teaches two small students:

- ``resnet8`` at width 0.25 (image view, same family),
- ``gru`` with hidden size 16 (sequence view: the teacher sees the same rows as an image).

For each seed a student is built from that seed and trained once per arm with the same schedule
(its registry recommendation: lr, augmentation, ...; ``--epochs`` / ``--patience`` override the
length for every arm alike): alone (cross-entropy), distilled with ``DistillConfig()`` (the Hinton
term) and, with ``--with-features``, with hints + attention too. Test accuracy is reported as
mean +- sample std over seeds, with the paired per-seed gain.

Then quantization: the teacher and the distilled resnet8 student go through ``qat`` (QDQ ONNX,
measured on onnxruntime CPU) and ``to_fp16``; the float model's test accuracy sits beside them.

    PYTHONPATH=src .venv/bin/python benchmarks/distill.py [--seeds 3] [--teacher-width 2] \
        [--epochs 120 --patience 120] [--with-features] [--out benchmarks/results/distill.md]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from machine import measuring

STUDENTS = (("resnet8", "image", {"width": 0.25}), ("gru", "sequence", {"hidden_size": 16}))


EPOCHS: dict[str, int] = {}  # --epochs / --patience override the students' recommended schedule


def train_student(name: str, data, options: dict[str, Any], seed: int, loss=None):
    from modelpress.baselines import train_config_for
    from modelpress.models import create_model
    from modelpress.train import seed_everything, train

    seed_everything(seed)
    width = options.get("width", 1.0)
    extra = {k: v for k, v in options.items() if k != "width"}
    model = create_model(
        name, input_spec=data.input_spec, num_classes=data.num_classes, width=width, **extra
    )
    cfg = train_config_for(name, seed=seed, **EPOCHS)
    make_loss = loss(model, data) if loss else None
    params = list(make_loss.parameters()) if make_loss else []
    return train(model, data, cfg, progress=False, loss_fn=make_loss, extra_params=params)


def kd_factory(teacher, teacher_data, cfg):
    from modelpress.compress.distill import kd_loss_fn
    from modelpress.compress.distill_features import view_converter

    def make(student, data):
        to_teacher = view_converter(
            teacher_data.preprocessing, data.preprocessing, teacher_data.input_spec, data.input_spec
        )
        example = torch.as_tensor(data.train.x[:2])
        return kd_loss_fn(teacher, cfg, student=student, example=example, teacher_input=to_teacher)

    return make


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} +- {100 * sd:.2f}"


def distill_rows(teacher, views, seeds, arms) -> list[str]:
    rows = []
    for name, view, options in STUDENTS:
        data = views[view]
        acc: dict[str, list[float]] = {arm: [] for arm in arms}
        started = time.perf_counter()
        for seed in seeds:
            for arm, cfg in arms.items():
                loss = None if cfg is None else kd_factory(teacher, views["image"], cfg)
                acc[arm].append(train_student(name, data, options, seed, loss).test_accuracy)
                print(f"{name} seed {seed} {arm}: {acc[arm][-1]:.4f}", flush=True)
        label = f"{name} ({', '.join(f'{k} {v}' for k, v in options.items())}, {view})"
        for arm in arms:
            gains = [a - b for a, b in zip(acc[arm], acc["alone"])]
            gain = (
                ""
                if arm == "alone"
                else f"{mean_std(gains)} ({sum(g > 0 for g in gains)}/{len(gains)} seeds up)"
            )
            per_seed = ", ".join(f"{100 * a:.2f}" for a in acc[arm])
            rows.append(f"| {label} | {arm} | {mean_std(acc[arm])} | {gain} | {per_seed} |")
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return rows


def quant_rows(checkpoints, views, out_dir: Path) -> list[str]:
    from modelpress.compress.base import PassContext
    from modelpress.compress.quantize import QATConfig, qat, to_fp16

    rows = []
    for label, art, view in checkpoints:
        ctx = PassContext(data=views[view], out_dir=out_dir)
        q = qat(art, QATConfig(), ctx).record
        h = to_fp16(art, ctx).record
        floats = ", ".join(q.details["float_layers"]) or "none"
        rows.append(
            f"| {label} | {100 * q.before.accuracy:.2f} | {100 * q.after.accuracy:.2f} | "
            f"{100 * h.after.accuracy:.2f} | {q.before.bytes:,} | {q.after.bytes:,} | "
            f"{h.after.bytes:,} | {q.details['qdq_nodes']['QuantizeLinear']}/"
            f"{q.details['qdq_nodes']['DequantizeLinear']} | {floats} |"
        )
        print(rows[-1], flush=True)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--teacher-width", type=float, default=2.0)
    p.add_argument("--with-features", action="store_true", help="add a hints+attention arm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="student epochs (default: recommended)")
    p.add_argument("--patience", type=int, default=None, help="student early-stopping patience")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--teacher-epochs", type=int, default=None, help="default: recommended")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/distill.md"))
    return p.parse_args(argv)


def teacher_and_student_quant_rows(teacher, views, teacher_width: float) -> list[str]:
    """Distil the width-0.25 resnet8 (seed 0) from ``teacher``; the quantization rows of both."""
    from modelpress.baselines import train_config_for
    from modelpress.checkpoint import save_trained
    from modelpress.compress.base import PassContext
    from modelpress.compress.distill import DistillConfig, distill, new_student

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t_art = save_trained(out / "teacher.safetensors", teacher, views["image"])
        s_art = new_student("resnet8", views["image"], out / "s.safetensors", width=0.25)
        ctx = PassContext(data=views["image"], out_dir=out)
        student = distill(t_art, s_art, DistillConfig(), ctx, train_config_for("resnet8", **EPOCHS))
        return quant_rows(
            [
                (f"resnet8 width {teacher_width} (teacher)", t_art, "image"),
                ("resnet8 width 0.25, distilled (seed 0)", student.artifact, "image"),
            ],
            views,
            out,
        )


def render(a: argparse.Namespace, header, teacher_fit, seeds, kd_rows, q_rows) -> str:
    from modelpress.metrics import count_params

    schedule = ", ".join(f"{k} {v}" for k, v in EPOCHS.items()) or "none"
    t_schedule = f"{a.teacher_epochs} epochs" if a.teacher_epochs else "recommended schedule"
    return "\n".join(
        [
            "# Distillation and quantization preparation on digits",
            "",
            *header,
            f"- torch with {a.threads} thread(s)",
            "",
            f"Teacher: resnet8 width {a.teacher_width} ({count_params(teacher_fit.model):,} params), "
            f"test accuracy {100 * teacher_fit.test_accuracy:.2f} % (seed 0, {t_schedule}).",
            f"Students: seeds {seeds}; each arm trains with the model's recommended schedule "
            f"(overrides: {schedule}), the same for every arm; the kept weights are those of the "
            "best val epoch. Test split of 360 images (one image = 0.28 points).",
            "",
            "| student | training | test accuracy % (mean +- std) | gain vs alone (points) | per seed |",
            "|---|---|---:|---:|---|",
            *kd_rows,
            "",
            "## Quantization (QAT 5 epochs -> QDQ ONNX on onnxruntime CPU; fp16 checkpoint)",
            "",
            "| model | float acc % | QAT ONNX acc % (onnxruntime) | fp16 acc % | float bytes |"
            " QDQ ONNX bytes | fp16 bytes | Q/DQ nodes | left in float |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|",
            *q_rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    EPOCHS.update({k: v for k, v in (("epochs", a.epochs), ("patience", a.patience)) if v})

    from modelpress.baselines import fit
    from modelpress.compress.distill import DistillConfig
    from modelpress.data import load_dataset
    from modelpress.fsutil import atomic_write_text

    measured = measuring(__file__, argv).start()
    views = {v: load_dataset("digits", view=v) for v in ("image", "sequence")}
    teacher_fit = fit(
        "resnet8", views["image"], width=a.teacher_width, seed=0, epochs=a.teacher_epochs
    )
    teacher = teacher_fit.model
    print(f"teacher: {teacher_fit.test_accuracy:.4f} in {teacher_fit.seconds:.0f} s", flush=True)
    arms: dict[str, DistillConfig | None] = {"alone": None, "kd (Hinton)": DistillConfig()}
    if a.with_features:
        arms["kd + hints + attention"] = DistillConfig(hint_weight=1.0, attention_weight=1.0)
    seeds = list(range(a.first_seed, a.first_seed + a.seeds))
    kd_rows = distill_rows(teacher, views, seeds, arms)
    q_rows = teacher_and_student_quant_rows(teacher, views, a.teacher_width)
    measured.finish()
    text = render(a, measured.header_lines(), teacher_fit, seeds, kd_rows, q_rows)
    atomic_write_text(a.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
