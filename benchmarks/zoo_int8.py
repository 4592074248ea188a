"""The zoo's architectures, trained, through `modelpress run`'s int8 accuracy budget.

``benchmarks/zoo.py`` times the zoo with random weights (latency does not depend on them); this
script asks the other question of issue 11: does int8 hold its accuracy? Each architecture of
``tests/zoo_nets.py`` (ResNet, MobileNetV2, MobileNetV3-small, ViT, a plain
``nn.TransformerEncoder``) at small width is trained here on the bundled digits (resized to
32x32), saved as a state dict, and brought into a recipe with ``factory:`` + ``weights:`` as a
user would. The run builds fp32 and int8 (transformers: dynamic int8 too) on ONNX Runtime and
LiteRT and applies the budget ``quantize: {max_drop: 0.5}``: an int8 build that loses more is
localised, its worst layers kept in float and rebuilt, or marked ``over budget``. The table is
what the run's records say (drop vs the float model on the test split, before and after).

    .venv/bin/python benchmarks/zoo_int8.py [--models resnet,vit] [--epochs 30] \\
        [--out benchmarks/results/zoo_int8.md]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from machine import measuring, write_results

ROOT = Path(__file__).resolve().parents[1]
IMAGE = 32
MODELS = {  # name -> (factory, kwargs, transformer)
    "resnet": ("build_resnet", {}, False),
    "mobilenetv2": ("build_mobilenetv2", {"image": IMAGE}, False),
    "mobilenetv3_small": ("build_mobilenetv3_small", {"width": 0.5}, False),
    "vit": ("build_vit", {"image": IMAGE}, True),
    "encoder": ("build_torch_encoder", {"image": IMAGE}, True),
}
OUTPUTS = {"resnet": "logits", "mobilenetv2": "logits", "vit": "logits"}


def train_weights(name: str, data, epochs: int, dest: Path) -> tuple[float, float]:
    """Train the architecture on ``data``; its state dict to ``dest``. (test accuracy, seconds)"""
    import torch
    from safetensors.torch import save_file

    from modelpress.factory import build_from_factory
    from modelpress.model_io import adapt_output
    from modelpress.train import TrainConfig, train

    builder, kwargs, _ = MODELS[name]
    torch.manual_seed(0)
    model = build_from_factory(f"zoo_nets:{builder}", kwargs)
    start = time.perf_counter()
    result = train(
        adapt_output(model, OUTPUTS.get(name)),
        data,
        TrainConfig(epochs=epochs, patience=max(4, epochs // 3)),
        progress=False,
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(dest))
    return result.test_accuracy, time.perf_counter() - start


def recipe_text(names: list[str]) -> str:
    lines = [
        "name: zoo-int8",
        f"data: {{name: digits, resize: {IMAGE}, calibration: 256}}",
        "models:",
    ]
    for name in names:
        builder, kwargs, transformer = MODELS[name]
        output = f", output: {OUTPUTS[name]}" if name in OUTPUTS else ""
        precisions = "[fp32, dynamic_int8, int8]" if transformer else "[fp32, int8]"
        lines.append(
            f'  {name}: {{factory: "zoo_nets:{builder}", kwargs: {kwargs}, '
            f"weights: {name}.safetensors{output}, "
            f"input: {{kind: image, shape: [1, {IMAGE}, {IMAGE}]}}, "
            f"targets: {{onnxruntime: {{precisions: {precisions}, threads: 1}}, "
            f"litert: {{precisions: {precisions}, threads: 1}}}}}}"
        )
    lines += [
        "quantize: {max_drop: 0.5, max_tries: 4}",
        "benchmark: {batch_sizes: [1], min_calls: 20, min_seconds: 0.2, warmup_calls: 3}",
    ]
    return "\n".join(lines) + "\n"


def rows_of(records) -> list[str]:
    out = [
        "| model | runtime | precision | accuracy % | drop vs float (pt) | int8 budget: drop "
        "before -> after (pt) | layers kept float | tries | marks |",
        "|---|---|---|---:|---:|---|---|---:|---|",
    ]
    for r in sorted(records, key=lambda r: (r.model, r.target, r.precision)):
        if r.status != "ok":
            out.append(f"| {r.model} | {r.target} | {r.precision} | {r.status}: {r.reason} |||||")
            continue
        v = r.validation
        b = (r.runtime or {}).get("int8_budget")
        budget, kept, tries = "-", "-", "-"
        if b:
            before, after = b.get("drop_before"), b.get("drop_after")
            budget = f"{_pt(before)} -> {_pt(after)}" + ("" if b["within_budget"] else " (over)")
            kept = ", ".join(b.get("kept_float") or []) or "none"
            tries = str(len(b.get("tries") or []))
        drop = _pt(v.accuracy_drop) if v is not None else "-"
        acc = f"{100 * v.accuracy:.2f}" if v is not None else "-"
        marks = ", ".join(r.marks) or "-"
        out.append(
            f"| {r.model} | {r.target} | {r.precision} | {acc} | {drop} | {budget} | {kept} | "
            f"{tries} | {marks} |"
        )
    return out


def _pt(x) -> str:
    return "?" if x is None else f"{x:+.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/zoo_int8.md")
    args = p.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    from modelpress.data import load_dataset
    from modelpress.factory import add_factory_folder
    from modelpress.measure.results import load_results
    from modelpress.run import run

    add_factory_folder(ROOT / "tests")  # zoo_nets lives beside the tests
    trained = []
    with tempfile.TemporaryDirectory() as tmp, measuring(__file__, argv) as measured:
        work = Path(tmp)
        shutil.copy(ROOT / "tests" / "zoo_nets.py", work / "zoo_nets.py")
        data = load_dataset("digits", view="image", resize=IMAGE)
        for name in names:
            acc, secs = train_weights(name, data, args.epochs, work / f"{name}.safetensors")
            trained.append(f"| {name} | {100 * acc:.2f} | {secs:.0f} |")
            print(f"{name}: trained, test accuracy {100 * acc:.2f} % in {secs:.0f} s", flush=True)
        recipe = work / "recipe.yaml"
        recipe.write_text(recipe_text(names))
        outcome = run(recipe, out=work / "out", log=print)
        records = load_results(outcome.results_path).records
        recipe_shown = recipe.read_text()
    write_results(
        args.out,
        "The zoo, trained, through the int8 accuracy budget (`quantize: {max_drop: 0.5}`)",
        measured,
        [
            f"Trained here on digits resized to {IMAGE}x{IMAGE} (torch seed 0, "
            f"{args.epochs} epochs max, AdamW one-cycle, best val epoch kept):",
            "",
            "| model | torch test accuracy % | training s |",
            "|---|---:|---:|",
            *trained,
            "",
            "The run's recipe (`weights:` are the state dicts trained above):",
            "",
            "```yaml",
            textwrap.dedent(recipe_shown).rstrip(),
            "```",
            "",
            "Every artifact as the run's records have it. Drop = float model's test accuracy - "
            "this artifact's, on its runtime (fp32 rows: the runtime's own float error). "
            "int8 budget: the first build's drop -> the shipped build's drop, the layers kept "
            "in float (torch module paths) and the builds tried.",
            "",
            *rows_of(records),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
