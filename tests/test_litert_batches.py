"""LiteRT graphs per batch: a TFLite graph has a fixed batch, so a batch of 32 through the batch-1
graph is 32 calls. The target converts a graph per asked batch (``batches``), keeps one only if it
computes what the first graph computes, and runs a call of exactly that many samples on it, here
and on a remote device's runner; ``modelpress run`` asks for the benchmark's batch sizes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from modelpress.checkpoint import save_trained
from modelpress.data import load_dataset
from modelpress.devices import runner as device_runner
from modelpress.devices.remote import job_for
from modelpress.errors import ArtifactError, ConfigError
from modelpress.factory import allow_factory, build_from_factory
from modelpress.models import create_model
from modelpress.targets import with_bench_batches
from modelpress.targets.litert import LiteRTConfig, LiteRTTarget

BUILDABLE = LiteRTTarget().availability().ok and LiteRTTarget().converter_availability("int8").ok
needs_litert = pytest.mark.skipif(
    not BUILDABLE, reason="needs the LiteRT extra: pip install -e '.[tflite]'"
)
pytestmark = [pytest.mark.tflite, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def int8_b4(digits, tmp_path_factory):
    """An untrained small resnet8 built at int8 with a batch-4 graph next to the batch-1 one."""
    out = tmp_path_factory.mktemp("batches")
    torch.manual_seed(0)
    model = create_model("resnet8", input_spec=digits.input_spec, num_classes=10, width=0.25)
    art = save_trained(out / "resnet8.safetensors", model.eval(), digits)
    target = LiteRTTarget(batches=[4], observer="minmax")
    return target, target.build(art, "int8", digits.calibration(64), out / "int8")


@needs_litert
def test_a_batch_runs_its_own_graph_and_computes_what_the_first_does(digits, int8_b4, tmp_path):
    target, art = int8_b4
    first, other = art.files
    assert art.meta["batch_graphs"] == {"4": other.name} and other.name.endswith(".b4.tflite")
    assert art.size_bytes == first.stat().st_size  # one graph ships: the other is not counted
    assert not any("no batch-4 graph" in n for n in art.meta["quantization"]["notes"])
    runner = target.load(art)
    x = digits.test.x[:9]
    for n in (1, 3, 5, 9):  # no graph of their own: the batch-1 graph, n times
        runner.predict(x[:n])
    assert runner._loaded == {}
    own = runner.predict(x[:4])
    assert set(runner._loaded) == {4} and runner._loaded[4].batch == 4
    chunked = runner.predict(x[:5])[:4]
    # the same integer graph at another batch: equal here, within a few output steps anywhere
    np.testing.assert_allclose(own, chunked, atol=0.02 * np.abs(chunked).max())

    alone = tmp_path / first.name  # the file copied without its batch-4 graph still runs
    shutil.copy2(first, alone)
    lone = target.load(type(art)(path=alone, format="tflite", id=art.id))
    np.testing.assert_array_equal(lone.predict(x[:4]), chunked)
    assert lone._loaded == {}


@needs_litert
def test_an_edited_batch_graph_is_refused_at_its_first_call(digits, int8_b4, tmp_path):
    target, art = int8_b4
    for f in art.files:
        shutil.copy2(f, tmp_path / f.name)
    edited = tmp_path / art.files[1].name
    data = bytearray(edited.read_bytes())
    data[len(data) // 2] ^= 0xFF
    edited.write_bytes(bytes(data))
    runner = target.load(type(art)(path=tmp_path / art.files[0].name, format="tflite", id=art.id))
    runner.predict(digits.test.x[:1])
    with pytest.raises(ArtifactError, match="b4.tflite"):
        runner.predict(digits.test.x[:4])


class BatchMixing(nn.Module):
    """Logits minus their mean over the batch: a batch of one is all zeros, a batch of four is
    not; a graph for another batch computes something else and must not be kept."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x.reshape(x.shape[0], -1))
        return h - h.mean(0, keepdim=True)


class BatchBound(nn.Module):
    """Flattens the whole batch into one row: converts at batch 1 only."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(1, -1))


def batch_mixing() -> nn.Module:
    return BatchMixing()


def batch_bound() -> nn.Module:
    return BatchBound()


@needs_litert
@pytest.mark.parametrize("factory, why", [("batch_mixing", "outputs differ"), ("batch_bound", "")])
def test_a_graph_that_does_not_compute_the_same_is_not_kept(factory, why, digits, tmp_path):
    path = f"test_litert_batches:{factory}"
    allow_factory(path)
    torch.manual_seed(0)
    model = build_from_factory(path, {}).eval()
    art = save_trained(tmp_path / "m.safetensors", model, digits)
    built = LiteRTTarget(batches=[4]).build(art, "fp32", None, tmp_path / "out")
    assert built.files == (built.path,) and built.meta["batch_graphs"] == {}
    assert not list((tmp_path / "out").glob("*.b4.tflite"))
    (note,) = [n for n in built.meta["quantization"]["notes"] if "batch-4" in n]
    assert why in note and "runs the batch-1 graph 4 times" in note
    out = LiteRTTarget().load(built).predict(digits.test.x[:4])
    assert out.shape == (4, 10)


@needs_litert
def test_the_device_runner_runs_the_graph_of_each_batch(digits, int8_b4, tmp_path):
    target, art = int8_b4
    settings = {
        "batch_sizes": [1, 4, 3],
        "warmup_calls": 1,
        "warmup_seconds": 0.0,
        "min_calls": 2,
        "min_seconds": 0.0,
    }
    job = job_for(art, "litert", {"batches": [4]}, settings, "pool.npy")
    assert job["graphs"] == {"4": art.files[1].name}
    for f in art.files:
        shutil.copy2(f, tmp_path / f.name)
    np.save(tmp_path / "pool.npy", digits.test.x[:16])
    (tmp_path / "job.json").write_text(json.dumps(job))
    result = device_runner.run_job(tmp_path)
    assert result["status"] == "ok", result["reason"]
    ran = {e["batch"]: e["graph_batch"] for e in result["batches"]}
    assert ran == {1: 1, 4: 4, 3: 1}
    here = target.load(art).predict(digits.test.x[:16])
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), here)


def test_run_asks_litert_for_the_benchmark_batches():
    assert with_bench_batches("litert", {"threads": 1}, (1, 32)) == {"threads": 1, "batches": [32]}
    assert with_bench_batches("litert", {"batch": 8}, (1, 8)) == {"batch": 8, "batches": [1]}
    assert with_bench_batches("litert", {"batches": []}, (1, 32)) == {"batches": []}  # the recipe's
    assert with_bench_batches("litert", {}, (1,)) == {}
    assert with_bench_batches("onnxruntime", {}, (1, 32)) == {}


def test_bench_cli_asks_litert_for_its_batch(digits, tmp_path):
    import argparse

    from modelpress.measure.bench import jobs_from_args

    torch.manual_seed(0)
    model = create_model("resnet8", input_spec=digits.input_spec, num_classes=10, width=0.25)
    ckpt = save_trained(tmp_path / "r.safetensors", model.eval(), digits)
    args = argparse.Namespace(
        checkpoints=[ckpt.path], threads=1, no_validate=True, targets="litert,onnxruntime",
        precisions="fp32", inject_slowdown={},
    )  # fmt: skip
    lite, ort = jobs_from_args(args, tmp_path / "bench", (1, 16))
    assert lite.target_options == {"threads": 1, "batches": [16]}
    assert ort.target_options == {"threads": 1}


@given(st.lists(st.integers(1, 512), max_size=4), st.integers(1, 64))
def test_batches_keep_their_order_without_the_first_or_repeats(batches, batch):
    cfg = LiteRTConfig(batch=batch, batches=tuple(batches))
    assert cfg.batches == tuple(dict.fromkeys(b for b in batches if b != batch))


@pytest.mark.parametrize("bad", [32, "32", [0], [True], [1.5], [-4]])
def test_bad_batches_are_config_errors(bad):
    with pytest.raises(ConfigError, match="litert batches must be a list of integers >= 1"):
        LiteRTConfig(batches=bad)
