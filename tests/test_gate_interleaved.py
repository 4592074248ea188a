"""The interleaved regression gate: the baseline's artifacts and the current ones measured now,
alternately, in one worker; a clearly slower model fails it, the same model passes it."""

from __future__ import annotations

import pytest

from modelpress.errors import ConfigError
from modelpress.measure.bench import BenchJob, BenchSettings, benchmark
from modelpress.measure.gate import Policy, run_gates
from modelpress.measure.gate_interleaved import artifact_from_file, measure_pair
from modelpress.measure.results import save_results

FAST = BenchSettings(
    batch_sizes=(1,),
    warmup_calls=2,
    warmup_seconds=0.0,
    min_calls=10,
    min_seconds=0.01,
    validate=False,
)
QUICK = {"blocks": 6, "calls_per_block": 5}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Results of a small and a 4x wider resnet8, each built for ORT fp32 (one thread)."""
    import torch

    from modelpress.checkpoint import save_trained
    from modelpress.data import load_dataset
    from modelpress.models import create_model

    out = tmp_path_factory.mktemp("ab")
    data = load_dataset("digits")
    results = {}
    for name, width in (("small", 0.25), ("wide", 1.0)):
        torch.manual_seed(0)
        model = create_model("resnet8", input_spec=data.input_spec, num_classes=10, width=width)
        art = save_trained(out / f"{name}.safetensors", model.eval(), data)
        job = BenchJob(art, "onnxruntime", "fp32", {"threads": 1}, build=True, build_dir=out / name)
        results[name] = benchmark([job], FAST)
        save_results(results[name], out / f"{name}.json")
    return results, out


def policy(baseline: str, **extra) -> Policy:
    return Policy.model_validate(
        {"regression": {"mode": "interleaved", "baseline": baseline, **QUICK, **extra}}
    )


def test_policy_needs_a_baseline_for_interleaved_and_none_for_stored():
    with pytest.raises(ValueError, match="needs baseline"):
        Policy.model_validate({"regression": {"mode": "interleaved"}})
    with pytest.raises(ValueError, match="is for mode interleaved"):
        Policy.model_validate({"regression": {"baseline": "x.json"}})
    assert policy("x.json").regression.allowed_slowdown() == 0.02
    assert Policy.model_validate({"regression": {}}).regression.allowed_slowdown() == 0.10


def test_the_same_artifact_passes_and_a_slower_one_fails(built):
    results, out = built
    small = results["small"].records[0]
    # a wide tolerance: these check the mechanism on a busy machine, benchmarks/ the power
    same = run_gates(results["small"], policy(str(out / "small.json"), tolerance=0.15))
    checks = [c for c in same.checks if c.name.startswith("regression_interleaved")]
    assert [c.name for c in checks] == ["regression_interleaved@batch1"]
    assert checks[0].status == "pass", checks[0].message
    # the wide model measured against the small one's artifact: clearly slower
    wide = results["wide"].model_copy(deep=True)
    wide.records[0] = wide.records[0].model_copy(update={"model": small.model})
    slower = run_gates(
        wide, policy(small.artifact_path, batches=[64], tolerance=0.15)
    )  # compute-bound
    (check,) = [c for c in slower.checks if c.name.startswith("regression_interleaved")]
    assert check.name.endswith("@batch64")
    assert check.status == "fail" and check.measured > 1.5, check.message
    assert "current/baseline" in check.message and slower.exit_code == 1


def test_a_missing_baseline_record_is_an_error_check(built, tmp_path):
    results, out = built
    other = results["small"].model_copy(deep=True)
    other.records[0] = other.records[0].model_copy(update={"model": "nothing-like-it"})
    save_results(other, tmp_path / "other.json")
    report = run_gates(results["small"], policy(str(tmp_path / "other.json")))
    (check,) = [c for c in report.checks if c.name.startswith("regression_interleaved")]
    assert check.status == "error" and "no baseline record" in check.message


def test_measure_pair_reports_ratio_and_interval(built):
    results, _ = built
    path = results["small"].records[0].artifact_path
    settings = {"batch_sizes": [1, 4], "warmup": 5, "confidence": 0.95, **QUICK}
    res = measure_pair(path, path, "onnxruntime", {"threads": 1}, settings)
    assert res["status"] == "ok" and [b["batch"] for b in res["batches"]] == [1, 4]
    for entry in res["batches"]:
        assert entry["ci_low"] <= entry["ratio"] <= entry["ci_high"]
        assert entry["reloads"] == QUICK["blocks"] - 1


def test_a_file_that_is_not_an_artifact_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not an .onnx or .tflite"):
        artifact_from_file(tmp_path / "model.pt")
    with pytest.raises(ConfigError, match="does not exist"):
        artifact_from_file(tmp_path / "model.onnx")


def test_compare_interleave_cli_exits_0_same_and_1_slower(built, tmp_path):
    from tests.conftest import run_cli

    results, _ = built
    small, wide = (results[k].records[0].artifact_path for k in ("small", "wide"))
    quick = ["--blocks", "6", "--calls-per-block", "5", "--batches", "64", "--tolerance", "0.15"]
    same = run_cli(
        "compare", "--interleave", small, small, *quick, "--json", str(tmp_path / "ab.json")
    )
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("batch 64: PASS  NEW/BASE") and (tmp_path / "ab.json").is_file()
    slower = run_cli("compare", "--interleave", small, wide, *quick)
    assert slower.returncode == 1 and "FAIL" in slower.stdout, slower.stdout + slower.stderr
    bad = run_cli("compare", "--interleave", small)
    assert bad.returncode == 2 and "two artifacts" in bad.stderr
