"""`modelpress run` end to end on real data: small recipes, few epochs, tiny benchmarks."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from modelpress.measure.results import load_results
from modelpress.run import run

TESTS = Path(__file__).parent
BENCH = "benchmark: {batch_sizes: [1, 8], min_calls: 5, min_seconds: 0.0, warmup_calls: 1}\n"

SMALL = (
    """\
name: small
data: {name: digits, calibration: 64}
models:
  cnn:
    model: resnet8
    width: 0.5
    train: {epochs: 3}
    teacher: {model: resnet8, train: {epochs: 3}}
passes:
  - distill: {train: {epochs: 2}}
  - prune: {macs_budget: 0.5, recovery_epochs: 1, round_to: 4}
targets:
  onnxruntime: {precisions: [fp32, int8, qdq], threads: 1}
  tensorrt: {precisions: [fp16]}
"""
    + BENCH
)


def _recipe(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    path = _recipe(tmp, SMALL)
    return path, run(path, out=tmp / "out", log=lambda s: None)


def test_small_recipe_end_to_end(small_run):
    path, outcome = small_run
    res = load_results(outcome.results_path)
    by = {(r.model, r.target, r.precision): r for r in res.records}
    for model in ("cnn", "cnn+distill+prune"):
        for precision in ("fp32", "int8"):
            rec = by[(model, "onnxruntime", precision)]
            assert rec.status == "ok", rec.reason
            assert rec.validation.accuracy > 0.5 and rec.size_bytes > 0
            assert [lat.batch for lat in rec.latency] == [1, 8]
    # a failing build and an unavailable runtime are rows with reasons; the rest went on
    assert by[("cnn", "onnxruntime", "qdq")].status == "failed"
    assert "QuantizeLinear" in by[("cnn", "onnxruntime", "qdq")].reason
    trt = by[("cnn", "tensorrt", "fp16")]
    assert trt.status in ("skipped", "ok") and (trt.status == "ok" or trt.reason)
    small = by[("cnn+distill+prune", "onnxruntime", "fp32")].size_bytes
    assert small < by[("cnn", "onnxruntime", "fp32")].size_bytes
    passes = json.loads((outcome.results_path.parent / "passes.json").read_text())
    assert passes["cnn"]["chain"] == ["distill", "prune"]
    prune = passes["cnn"]["records"][1]
    assert prune["after"]["macs"] <= 0.5 * prune["before"]["macs"] * 1.01
    assert outcome.report_html.is_file() and "<img" in outcome.report_html.read_text()
    assert outcome.exit_code == 0


def test_rerun_skips_finished_stages(small_run, tmp_path):
    path, first = small_run
    lines = []
    again = run(path, out=first.results_path.parent, log=lines.append)
    assert again.cache_misses == 0 and again.cache_hits >= 8, lines
    assert any("[cached] train cnn" in ln for ln in lines)
    a = load_results(first.results_path)
    assert [r.model for r in a.records] == [
        r.model for r in load_results(again.results_path).records
    ]


def _subprocess_run(path: Path, out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if fault:
        env["MODELPRESS_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "modelpress", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


RESUME = (
    """\
name: resume
data: {name: digits, calibration: 64}
models:
  rnn: {model: gru, options: {hidden_size: 16}, train: {epochs: 2}}
passes:
  - prune: {ratio: 0.5, recovery_epochs: 1}
targets:
  onnxruntime: {precisions: [fp32]}
"""
    + BENCH
)


def test_resume_after_sigkill_mid_stage(tmp_path):
    path = _recipe(tmp_path, RESUME)
    out = tmp_path / "out"
    killed = _subprocess_run(path, out, fault="kill:prune")
    assert killed.returncode == -9, killed.stderr[-500:]
    cache = out / "cache"
    assert [p.name.split("-")[0] for p in cache.iterdir() if not p.name.startswith(".")] == [
        "train"
    ]
    assert not (out / "results.json").exists()
    done = _subprocess_run(path, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "[cached] train rnn" in done.stdout and "[run]    prune rnn" in done.stdout
    assert not list(cache.glob(".*.tmp"))  # the killed run's half-written folder is gone
    records = load_results(out / "results.json").records
    assert {r.status for r in records} == {"ok"} and len(records) == 2


def test_user_model_end_to_end(tmp_path):
    """A model defined only in tests/byo_nets.py: factory + safetensors weights, pruned (the
    pruned checkpoint reloads through the factory), built and measured; plus the same model
    handed over as an .onnx file, which skips the torch passes and torch-only targets."""
    from safetensors.torch import save_file

    from modelpress.data import load_dataset
    from modelpress.export import export_onnx
    from modelpress.train import TrainConfig, train

    sys.path.insert(0, str(TESTS))
    import byo_nets

    data = load_dataset("digits")
    torch.manual_seed(0)
    model = byo_nets.build_model(width=16)
    trained = train(model, data, TrainConfig(epochs=8), progress=False)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(tmp_path / "tiny.safetensors"),
    )
    export_onnx(model, data.input_spec, tmp_path / "tiny.onnx", {})
    text = (
        """\
    name: byo
    data: {name: digits, calibration: 64}
    models:
      mine:
        factory: byo_nets:build_model
        kwargs: {width: 16}
        weights: tiny.safetensors
        input: {kind: image, shape: [1, 8, 8]}
        passes: [{prune: {ratio: 0.5, recovery_epochs: 1}}]
      exported:
        onnx: tiny.onnx
        input: {kind: image, shape: [1, 8, 8]}
        targets:  # a factory model on LiteRT: tests/test_zoo.py
          onnxruntime: {precisions: [fp32, int8]}
          litert: {precisions: [fp32]}
    targets:
      onnxruntime: {precisions: [fp32, int8]}
    """
        + BENCH
    )
    (tmp_path / "byo_nets.py").write_text((TESTS / "byo_nets.py").read_text())
    sys.path.remove(str(TESTS))
    outcome = run(_recipe(tmp_path, text), out=tmp_path / "out", log=lambda s: None)
    by = {(r.model, r.target, r.precision): r for r in load_results(outcome.results_path).records}
    # the imported weights are the trained ones: ORT agrees with torch's accuracy (to one sample)
    mine = by[("mine", "onnxruntime", "fp32")].validation.accuracy
    assert mine == pytest.approx(trained.test_accuracy, abs=0.003) and mine > 0.6
    pruned = by[("mine+prune", "onnxruntime", "fp32")]
    assert (
        pruned.status == "ok" and pruned.size_bytes < by[("mine", "onnxruntime", "fp32")].size_bytes
    )
    exported8 = by[("exported", "onnxruntime", "int8")]
    assert exported8.status == "ok"
    # its own fp32 run is the float reference: drop and agreement are measured for its int8
    assert exported8.validation.reference_accuracy == pytest.approx(mine, abs=0.003)
    assert exported8.validation.agreement is not None
    assert by[("exported", "onnxruntime", "fp32")].validation.accuracy == pytest.approx(
        by[("mine", "onnxruntime", "fp32")].validation.accuracy
    )
    assert by[("exported", "litert", "fp32")].status == "skipped"
