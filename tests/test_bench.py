import importlib.util
import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelpress.artifact import Artifact
from modelpress.errors import ConfigError
from modelpress.measure.bench import BenchJob, BenchSettings, benchmark, main, parse_slowdown
from modelpress.measure.results import load_results, save_results
from modelpress.measure.worker import fast_call, latency_entry, run_bench, slowed, time_calls
from modelpress.models import MODELS

FAST = BenchSettings(
    batch_sizes=(1, 4),
    warmup_calls=1,
    warmup_seconds=0.0,
    min_calls=5,
    min_seconds=0.02,
    keep_samples=3,
)
HAS_ORT_TARGET = importlib.util.find_spec("modelpress.targets.onnxruntime") is not None


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One small untrained checkpoint per registry model, with its float test logits."""
    import torch

    from modelpress.baselines import view_for
    from modelpress.checkpoint import save_trained
    from modelpress.data import DataConfig, load_dataset
    from modelpress.models import create_model

    out = tmp_path_factory.mktemp("bench")
    arts = {}
    for name in MODELS:
        data = load_dataset(view_for(name, DataConfig("digits")))
        torch.manual_seed(0)
        model = create_model(name, input_spec=data.input_spec, num_classes=10, width=0.25).eval()
        art = save_trained(out / f"{name}.safetensors", model, data)
        with torch.inference_mode():
            logits = model(torch.from_numpy(data.test.x)).numpy()
        np.save(out / f"{name}.npy", logits)
        arts[name] = (art, out / f"{name}.npy")
    return arts


def test_time_calls_stops_after_min_calls_and_min_seconds():
    assert time_calls(lambda: None, 7, 0.0).size == 7
    t0 = time.perf_counter()
    samples = time_calls(lambda: None, 3, 0.05)
    assert time.perf_counter() - t0 >= 0.05 and samples.size > 3 and samples.dtype == np.int64


def test_slowed_adds_at_least_the_busy_wait():
    samples = time_calls(slowed(lambda: None, 200_000), 20, 0.0)
    assert samples.min() >= 200_000  # ns


def test_latency_entry_percentiles_and_downsampling():
    ns = np.arange(1, 101, dtype=np.int64) * 1000  # 1..100 us
    entry = latency_entry(ns, batch=8, seconds=0.1, keep=30)
    assert (entry["p50_ms"], entry["p90_ms"], entry["p99_ms"]) == (0.05, 0.09, 0.099)
    assert entry["calls"] == 100 and entry["sample_stride"] == 4 and len(entry["samples_us"]) == 25
    assert entry["throughput_sps"] == pytest.approx(8 * 100 / (ns.sum() / 1e9))


def test_fast_call_runs_the_model_on_the_checked_batch(checkpoints):
    from modelpress.targets import get_target

    art, _ = checkpoints["resnet8"]
    runner = get_target("torch").load(art)
    x = np.zeros((2, 1, 8, 8), dtype=np.float64)  # converted once to the spec's float32
    np.testing.assert_allclose(fast_call(runner, x)(), runner.predict(x), rtol=1e-6)
    with pytest.raises(ConfigError, match="does not match"):
        fast_call(runner, np.zeros((2, 3, 8, 8), dtype=np.float32))


def worker_job(art, target="torch", options=None, ref=None) -> dict:
    return {
        "mode": "bench",
        "artifact": art.to_dict(),
        "target": target,
        "target_options": options or {},
        "reference_logits": str(ref) if ref else None,
        "settings": FAST.to_dict(),
    }


@pytest.mark.parametrize("name", list(MODELS))
def test_worker_measures_every_model(checkpoints, name):
    """The worker's measurement, run in this process for speed (the same code as in a worker)."""
    art, ref = checkpoints[name]
    out = run_bench(worker_job(art, options={"threads": 1}, ref=ref))
    assert out["status"] == "ok", out.get("reason")
    assert [lat["batch"] for lat in out["latency"]] == [1, 4] and out["threads"] == 1
    for lat in out["latency"]:
        assert lat["calls"] >= 5 and lat["seconds"] >= 0.02 and len(lat["samples_us"]) <= 3
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        assert lat["warmup_calls"] >= 1
    assert out["validation"]["agreement"] == 1.0 and out["validation"]["accuracy_drop"] == 0.0
    assert out["load_s"] > 0 and out["peak_rss_bytes"] >= out["rss_before_load_bytes"] > 0


def test_worker_reports_failed_and_skipped_with_reasons(checkpoints, tmp_path):
    art, _ = checkpoints["gru"]
    gone = Artifact(tmp_path / "gone.safetensors", "torch", "x", art.meta)
    out = run_bench(worker_job(gone))
    assert out["status"] == "failed" and out["reason"].startswith("load: CheckpointError")
    import torch

    out = run_bench(worker_job(art, options={"device": "cuda"}))
    assert out["status"] == ("ok" if torch.cuda.is_available() else "skipped")
    if out["status"] == "skipped":
        assert "CUDA" in out["reason"]


def test_benchmark_runs_each_job_in_a_fresh_worker(checkpoints, tmp_path):
    art, ref = checkpoints["resnet8"]
    res = benchmark([BenchJob(art, "torch", "fp32", {"threads": 1}, reference_logits=ref)], FAST)
    (rec,) = res.records
    assert (rec.model, rec.family, rec.status, rec.format) == ("resnet8", "cnn", "ok", "torch")
    assert rec.size_bytes == art.path.stat().st_size and rec.validation.agreement == 1.0
    # VmHWM of the worker, not inherited from this (bigger) test process
    assert 0 < rec.rss_before_load_bytes < rec.peak_rss_bytes
    assert res.environment.logical_cores >= 1 and "numpy" in res.environment.versions
    save_results(res, tmp_path / "r.json")
    assert load_results(tmp_path / "r.json") == res
    slow = benchmark([BenchJob(art, "torch")], BenchSettings(timeout_s=0.2))
    assert slow.records[0].status == "failed" and "timed out after 0.2 s" in slow.records[0].reason


def test_bad_jobs_and_settings_are_config_errors(checkpoints):
    art, _ = checkpoints["resnet8"]
    with pytest.raises(ConfigError, match="known: torch"):
        BenchJob(art, "tpu")
    with pytest.raises(ConfigError, match="build_dir"):
        BenchJob(art, "torch", build=True)
    with pytest.raises(ConfigError, match="batch sizes"):
        BenchSettings(batch_sizes=(0,))


@pytest.mark.skipif(not HAS_ORT_TARGET, reason="the onnxruntime target is not in this tree yet")
def test_cli_builds_measures_reports_and_gates(checkpoints, tmp_path):
    from modelpress.measure.gate import main as gate_main

    art, _ = checkpoints["resnet8"]
    out = tmp_path / "results.json"
    argv = [
        str(art.path),
        "--targets",
        "onnxruntime",
        "--precisions",
        "fp32,fp64",
        "--batch",
        "4",
        "--min-calls",
        "5",
        "--min-seconds",
        "0.02",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
        "--report",
        str(tmp_path / "report"),
    ]
    assert main(argv) == 0
    res = load_results(out)
    fp32, fp64 = res.records
    assert fp32.status == "ok" and fp32.format == "onnx" and fp32.build_s > 0, fp32.reason
    assert fp32.validation.agreement >= 0.99 and fp32.runtime["runtime"].startswith("onnxruntime")
    assert fp64.status == "skipped" and "does not build precision 'fp64'" in fp64.reason
    assert "fp64" in (tmp_path / "report" / "report.md").read_text()
    policy = tmp_path / "gates.yaml"
    policy.write_text(
        json.dumps(
            {
                "rules": [
                    {"match": {"precision": "fp32"}, "min_agreement": 0.99, "max_size": "10 MB"}
                ]
            }
        )
    )
    assert gate_main([str(out), "--policy", str(policy), "--quiet"]) == 0


@pytest.mark.skipif(not HAS_ORT_TARGET, reason="the onnxruntime target is not in this tree yet")
def test_cli_marks_an_int8_made_slower_than_its_fp32(checkpoints, tmp_path, capsys):
    """The marks of a run apply to ``modelpress bench`` too: int8 made four times slower
    (``--inject-slowdown int8=3``) is marked ``slower than fp32``; fp32 is not."""
    art, _ = checkpoints["resnet8"]
    out = tmp_path / "results.json"
    argv = [str(art.path), "--targets", "onnxruntime", "--precisions", "fp32,int8"]
    argv += ["--min-calls", "20", "--min-seconds", "0.1", "--threads", "1", "--no-validate"]
    assert main([*argv, "--inject-slowdown", "int8=3", "--out", str(out)]) == 0
    marks = {r.precision: r.marks for r in load_results(out).records}
    assert marks == {"fp32": [], "int8": ["slower than fp32"]}, marks
    assert "slower than fp32" in capsys.readouterr().out


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["fp32", "int8", "fp16", "dynamic_int8"]),
        st.floats(0.0, 10.0, allow_nan=False),
        min_size=1,
    )
)
def test_inject_slowdown_parses_what_it_prints(per_precision):
    text = ",".join(f"{k}={v!r}" for k, v in per_precision.items())
    assert parse_slowdown(text) == per_precision
    assert parse_slowdown("0.25") == {"*": 0.25}


@pytest.mark.parametrize("text", ["fast", "int8=", "int8=-1", "int8=11", "nan", "int8=1,int8=2"])
def test_inject_slowdown_refuses_bad_values_in_one_line(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_slowdown(text)
    assert "\n" not in str(info.value) and text.split(",")[0].split("=")[0] in str(info.value)
