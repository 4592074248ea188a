"""Does an ONNX Runtime graph fusion pay on this CPU? SkipLayerNormFusion, measured two ways.

1. Kernels: one ``com.microsoft.SkipLayerNormalization`` node against the ``Add`` +
   ``LayerNormalization`` it replaces, on (1, tokens, hidden) float inputs, no graph
   optimisation (so each graph runs as written), both timed interleaved.
2. Models: BERT-mini (4 layers, 256 hidden, 128 tokens) and ViT-S/16 (224x224) from
   ``benchmarks/zoo.py``, random init, as fp32 and dynamic int8 built by the onnxruntime target,
   each loaded with every optimiser (``disabled_optimizers: []``) and without SkipLayerNormFusion
   (the target's default), all four sessions of a model timed interleaved.

This is what ``OrtConfig.disabled_optimizers``' default rests on; run it on the machine you ship
to and set ``disabled_optimizers: []`` in the recipe's onnxruntime options if the fusion pays there.

    .venv/bin/python benchmarks/ort_fusions.py [--threads 1] [--models bert_mini,vit_s16] \\
        [--min-seconds 10] [--out benchmarks/results/ort_fusions.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import measuring, model_names, write_results
from zoo_prune import interleaved_ms

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ((128, 256), (197, 384), (128, 768))  # (tokens, hidden): BERT-mini, ViT-S, BERT-base
FUSION = "SkipLayerNormFusion"


def layer_norm_graphs(tokens: int, hidden: int) -> dict[str, bytes]:
    """The fused node and the two nodes it replaces, as serialized ONNX models."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shape = [1, tokens, hidden]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")]
    output = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    weights = [
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "beta"),
    ]
    fused = [
        helper.make_node(
            "SkipLayerNormalization",
            ["x", "skip", "gamma", "beta"],
            ["y"],
            domain="com.microsoft",
            epsilon=1e-12,
        )
    ]
    plain = [
        helper.make_node("Add", ["x", "skip"], ["sum"]),
        helper.make_node(
            "LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12
        ),
    ]
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return {
        name: helper.make_model(
            helper.make_graph(nodes, name, inputs, output, weights), opset_imports=opsets
        ).SerializeToString()
        for name, nodes in (("SkipLayerNormalization", fused), ("Add + LayerNormalization", plain))
    }


def session(model, threads: int, disabled: list[str], level: str = "all"):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model),
        opts,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=disabled,
    )


def p50_and_ratio(times: dict[str, list[float]], key: str, base: str) -> tuple[float, str]:
    from modelpress.measure.stats import ratio_of_medians_ci

    ci = ratio_of_medians_ci(times[base], times[key])
    return statistics.median(times[key]), f"{ci.ratio:.2f}x [{ci.low:.2f}, {ci.high:.2f}]"


def kernel_rows(threads: int, rounds: int, seconds: float) -> list[str]:
    rows = [
        "| tokens x hidden | graph | p50 ms | SkipLayerNormalization p50 / this p50 [95 % CI] |",
        "|---|---|---:|---:|",
    ]
    for tokens, hidden in SHAPES:
        x = np.random.default_rng(1).standard_normal((1, tokens, hidden), dtype=np.float32)
        calls = {}
        for name, model in layer_norm_graphs(tokens, hidden).items():
            sess = session(model, threads, [], level="disable")
            feed = {"x": x, "skip": x}
            calls[name] = lambda s=sess, f=feed: s.run(None, f)
        times = interleaved_ms(calls, rounds, seconds)
        for name in calls:
            p50, ratio = p50_and_ratio(times, name, "SkipLayerNormalization")
            shown = "-" if name == "SkipLayerNormalization" else ratio
            rows.append(f"| {tokens} x {hidden} | {name} | {p50:.4f} | {shown} |")
    return rows


def model_rows(names: list[str], threads: int, rounds: int, seconds: float, work: Path):
    import torch
    import zoo
    from zoo_prune import Row, build_variants, sample

    from modelpress.targets import get_target

    rows = [
        "| model | precision | optimisers | p50 ms | with every optimiser p50 / this p50 "
        "[95 % CI] | max abs logit diff vs torch |",
        "|---|---|---|---:|---:|---:|",
    ]
    speedups = []
    for name in names:
        arch = zoo.MODELS[name]
        row = Row(name)
        build_variants(name, arch, arch.full, row, work, prune=False)
        dense = row.variants["dense"]
        x = sample(arch.full, 1, seed=2)
        with torch.no_grad():
            ref = dense.model(torch.as_tensor(x)).numpy()
        calls, diffs = {}, {}
        for precision in ("fp32", "dynamic_int8"):
            art = get_target("onnxruntime").build(
                dense.checkpoint, precision, None, work / f"{name}-{precision}"
            )
            for label, disabled in (("every optimiser", []), (f"without {FUSION}", [FUSION])):
                sess = session(art.path, threads, disabled)
                feed = {sess.get_inputs()[0].name: x}
                key = f"{precision}|{label}"
                diffs[key] = float(np.abs(sess.run(None, feed)[0] - ref).max())
                calls[key] = lambda s=sess, f=feed: s.run(None, f)
        times = interleaved_ms(calls, rounds, seconds)
        for key in calls:
            precision, label = key.split("|")
            base = f"{precision}|every optimiser"
            p50, ratio = p50_and_ratio(times, key, base)
            shown = "-" if key == base else ratio
            rows.append(
                f"| {name} | {precision} | {label} | {p50:.3f} | {shown} | {diffs[key]:.2e} |"
            )
        for label in ("every optimiser", f"without {FUSION}"):
            _, ratio = p50_and_ratio(times, f"dynamic_int8|{label}", f"fp32|{label}")
            speedups.append(f"| {name} | {label} | {ratio} |")
    return rows + [
        "",
        "Dynamic int8's speed-up over fp32, both loaded the same way:",
        "",
        "| model | optimisers | fp32 p50 / dynamic int8 p50 [95 % CI] |",
        "|---|---|---:|",
        *speedups,
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default="bert_mini,vit_s16")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--min-seconds", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ort_fusions.md")
    args = p.parse_args(argv)
    import zoo

    names = model_names(p, args.models, zoo.MODELS)
    from modelpress.factory import add_factory_folder

    add_factory_folder(ROOT / "tests")  # zoo_nets lives beside the tests
    with tempfile.TemporaryDirectory() as tmp, measuring(__file__, argv) as measured:
        kernels = kernel_rows(args.threads, args.rounds, args.min_seconds)
        models = model_rows(names, args.threads, args.rounds // 4, args.min_seconds, Path(tmp))
    write_results(
        args.out,
        "ONNX Runtime's SkipLayerNormFusion on this CPU: the fused kernel vs the nodes it replaces",
        measured,
        [
            f"{args.threads} thread(s); every row of a table section timed interleaved with the "
            "others of its shape or model (ratios from the same moments, 95 % bootstrap "
            "intervals of the ratio of medians). Random weights: latency, not accuracy.",
            "",
            "## Kernels (no graph optimisation: each graph runs as written)",
            "",
            *kernels,
            "",
            "## Models (built by the onnxruntime target, loaded at optimisation level all)",
            "",
            *models,
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
