"""How kept channel counts are rounded decides whether half the MACs is twice as fast.

Each CNN of ``benchmarks/zoo.py`` at 224x224 (random init, BatchNorm statistics from random
inputs) is pruned to half its MACs (``PruneConfig(macs_budget=0.5, recovery="none")``) once per
``round_to`` (8, 16, 32 and ``auto``, the default), each built for ONNX Runtime as fp32 and
static int8 (16 random calibration inputs), and all of a model's sessions are timed
interleaved on batch 1. MAC -> latency efficiency = speed-up over the dense model of the same
precision / MAC reduction (1.0: latency falls as fast as MACs).

    .venv/bin/python benchmarks/prune_rounding.py [--models mobilenetv2,resnet18] \\
        [--threads 1] [--rounds 60] [--min-seconds 15] [--out benchmarks/results/prune_rounding.md]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from machine import measuring, model_names, write_results
from zoo_prune import PRUNE, Row, build_variants, input_spec, interleaved_ms, sample

ROOT = Path(__file__).resolve().parents[1]
ROUNDINGS = (8, 16, 32, "auto")
PRECISIONS = ("fp32", "int8")


def pruned_checkpoints(name: str, work: Path) -> tuple[dict, dict[str, str]]:
    """{variant: (checkpoint, MAC reduction)} for dense and every rounding; widths per rounding."""
    import zoo

    from modelpress.checkpoint import save_checkpoint
    from modelpress.compress.prune import PruneConfig, prune_model
    from modelpress.metrics import count_macs

    arch = zoo.MODELS[name]
    row = Row(name)
    build_variants(name, arch, arch.full, row, work, prune=False)
    dense = row.variants["dense"]
    example = torch.as_tensor(sample(arch.full, 2, seed=1))
    out = {"dense": (dense.checkpoint, 1.0)}
    widths = {}
    for r in ROUNDINGS:
        model = copy.deepcopy(dense.model)
        outcome = prune_model(model, example, PruneConfig(**{**PRUNE, "round_to": r}))
        model.eval()
        kept = sorted({b for _, b in outcome.details["widths"].values()})
        widths[f"round_to {r}"] = ", ".join(map(str, kept))
        ckpt = save_checkpoint(
            work / f"{name}-r{r}.safetensors",
            model,
            input_spec=input_spec(arch.full),
            labels=[str(i) for i in range(arch.full.kwargs["classes"])],
            preprocessing={},
        )
        out[f"round_to {r}"] = (ckpt, dense.macs / count_macs(model, example))
    return out, widths


def measure(name: str, threads: int, rounds: int, seconds: float, work: Path):
    import zoo

    from modelpress.targets import get_target

    size = zoo.MODELS[name].full
    ckpts, widths = pruned_checkpoints(name, work)
    calib, x = sample(size, 16, seed=3), sample(size, 1, seed=2)
    calls = {}
    for variant, (ckpt, _) in ckpts.items():
        for precision in PRECISIONS:
            data = calib if precision == "int8" else None
            dest = work / f"{name}-{variant.replace(' ', '')}-{precision}"
            art = get_target("onnxruntime").build(ckpt, precision, data, dest)
            runner = get_target("onnxruntime", threads=threads).load(art)
            calls[(variant, precision)] = runner.prepare(x)
    keys = list(calls)
    times = interleaved_ms({f"{v}|{p}": calls[(v, p)] for v, p in keys}, rounds, seconds)
    return ckpts, widths, times


def rows_of(name: str, ckpts, widths, times) -> list[str]:
    from modelpress.measure.stats import ratio_of_medians_ci

    out = []
    for variant, (_, reduction) in ckpts.items():
        for precision in PRECISIONS:
            mine, dense = times[f"{variant}|{precision}"], times[f"dense|{precision}"]
            p50 = float(np.median(mine))
            if variant == "dense":
                out.append(f"| {name} | {variant} | {precision} | 1.00 | {p50:.3f} | - | - |")
                continue
            ci = ratio_of_medians_ci(dense, mine)
            eff = (ci.ratio / reduction, ci.low / reduction, ci.high / reduction)
            out.append(
                f"| {name} | {variant} | {precision} | {reduction:.2f} | {p50:.3f} | "
                f"{ci.ratio:.2f}x [{ci.low:.2f}, {ci.high:.2f}] | "
                f"{eff[0]:.2f} [{eff[1]:.2f}, {eff[2]:.2f}] |"
            )
    out.append("")
    out += [f"- {name}, {k}: kept widths {v}" for k, v in widths.items()]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mobilenetv2,resnet18,mobilenetv3_small")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--min-seconds", type=float, default=15.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/prune_rounding.md")
    args = p.parse_args(argv)
    import zoo

    names = model_names(p, args.models, zoo.MODELS)
    from modelpress.factory import add_factory_folder

    add_factory_folder(ROOT / "tests")  # zoo_nets lives beside the tests
    table, notes = [], []
    with tempfile.TemporaryDirectory() as tmp, measuring(__file__, argv) as measured:
        for name in names:
            got = measure(name, args.threads, args.rounds, args.min_seconds, Path(tmp))
            rows = rows_of(name, *got)
            cut = rows.index("")
            table += rows[:cut]
            notes += rows[cut + 1 :]
            print("\n".join(rows[:cut]), flush=True)
    write_results(
        args.out,
        "Pruned CNNs at 224x224: how rounding kept channel counts changes their speed",
        measured,
        [
            f"ONNX Runtime CPU, {args.threads} thread(s), batch 1; every row of a model timed "
            "interleaved with the others (ratios from the same moments, 95 % bootstrap "
            "intervals of the ratio of medians). Random weights: latency, not accuracy. "
            "Efficiency = speed-up over dense of the same precision / MAC reduction.",
            "",
            "| model | pruned with | precision | MAC reduction | p50 ms | dense p50 / p50 "
            "[95 % CI] | MAC -> latency efficiency [95 % CI] |",
            "|---|---|---|---:|---:|---:|---:|",
            *table,
            "",
            "## Kept widths",
            "",
            *notes,
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
