"""Interleaved A/B: two ONNX Runtime sessions of one tiny model timed in alternating blocks."""

import math

import numpy as np
import pytest

from modelpress.errors import ConfigError
from modelpress.measure.interleave import (
    InterleavedResult,
    interleaved_job,
    interleaved_verdict,
    measure_interleaved,
    paired_ratio_ci,
    t_quantile,
)

pytest.importorskip("onnxruntime")

SETTINGS = {"batch_sizes": [1], "blocks": 12, "calls_per_block": 30, "warmup": 30}


@pytest.fixture(scope="module")
def onnx_art(tmp_path_factory):
    """The digits CNN (resnet8 at width 0.25, untrained) built for ONNX Runtime fp32."""
    import torch

    from modelpress.baselines import view_for
    from modelpress.checkpoint import save_trained
    from modelpress.data import DataConfig, load_dataset
    from modelpress.models import create_model
    from modelpress.targets import get_target

    out = tmp_path_factory.mktemp("interleave")
    data = load_dataset(view_for("resnet8", DataConfig("digits")))
    torch.manual_seed(0)
    model = create_model("resnet8", input_spec=data.input_spec, num_classes=10, width=0.25)
    ckpt = save_trained(out / "resnet8.safetensors", model.eval(), data)
    return get_target("onnxruntime", threads=1).build(ckpt, "fp32", None, out / "built")


@pytest.fixture(scope="module")
def two_runners(onnx_art):
    from modelpress.targets import get_target

    target = get_target("onnxruntime", threads=1)
    a, b = target.load(onnx_art), target.load(onnx_art)
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    yield a, b, x
    a.close()
    b.close()


def test_t_quantile_matches_the_table():
    for df, exact in ((4, 2.776), (9, 2.262), (29, 2.045), (1000, 1.962)):
        assert t_quantile(0.975, df) == pytest.approx(exact, abs=1.5e-3)


def test_paired_ratio_ci_is_the_t_interval_of_the_log_ratios():
    logs = np.log([1.10, 1.12, 1.08, 1.11, 1.09, 1.10])
    ratio, low, high = paired_ratio_ci(logs, 0.95)
    half = t_quantile(0.975, 5) * logs.std(ddof=1) / math.sqrt(6)
    assert ratio == pytest.approx(math.exp(logs.mean()))
    assert (low, high) == pytest.approx((ratio * math.exp(-half), ratio * math.exp(half)))
    assert 1.08 < low < ratio < high < 1.12


def test_verdict_fails_only_when_the_whole_interval_is_above_the_tolerance():
    def res(low, high):
        return InterleavedResult(6, 1, 0, 0.0, 0, [], [], [], (low + high) / 2, low, high, 0.95)

    assert interleaved_verdict(res(1.04, 1.08), 0.03)[0] == "fail"
    status, why = interleaved_verdict(res(1.02, 1.08), 0.03)  # slower, but not beyond 3 %
    assert status == "pass" and "within 1.030" in why and "CI 1.020-1.080" in why
    assert interleaved_verdict(res(0.90, 0.95), 0.0)[0] == "pass"  # faster is never a failure
    with pytest.raises(ConfigError, match="tolerance"):
        interleaved_verdict(res(1.0, 1.0), -0.1)


def test_a_against_itself_passes_and_a_slowdown_of_b_fails(two_runners):
    a, b, x = two_runners
    same = measure_interleaved(a, b, x, blocks=12, calls_per_block=30, warmup=30)
    assert len(same.medians_a_ns) == len(same.medians_b_ns) == len(same.log_ratios) == 12
    # wide margins: under `make test` another worker shares the cores (the tolerance a real gate
    # needs is measured by benchmarks/gate_aa_ab.py --interleaved, not asserted here)
    assert interleaved_verdict(same, 0.25)[0] == "pass", same
    slow = measure_interleaved(a, b, x, 12, 30, 30, slowdown_b=1.0)
    assert slow.extra_ns > 0 and slow.ci_low > 1.3, slow  # +100 % per call on B
    assert interleaved_verdict(slow, 0.1)[0] == "fail"
    with pytest.raises(ConfigError, match="blocks >= 5"):
        measure_interleaved(a, b, x, blocks=4, calls_per_block=30, warmup=0)


def test_the_worker_mode_runs_in_a_fresh_process(onnx_art, tmp_path):
    from modelpress.measure.bench import run_worker

    job = {
        "mode": "interleave",
        "artifact_a": onnx_art.to_dict(),
        "artifact_b": onnx_art.to_dict(),
        "target": "onnxruntime",
        "target_options": {"threads": 1},
        "slowdown_b": 0.5,
        "settings": SETTINGS,
    }
    events = []
    out = run_worker(job, 120.0, tmp_path, on_event=events.append)
    assert out["status"] == "ok", out.get("reason")
    assert out["threads"] == 1 and [e["event"] for e in events] == ["start", "done"]
    (entry,) = out["batches"]
    assert entry["batch"] == 1 and entry["blocks"] == 12 and entry["seconds"] > 0
    assert interleaved_verdict(InterleavedResult.from_dict(entry), 0.03)[0] == "fail"


def test_the_worker_mode_reports_a_mismatch_as_a_failed_row(onnx_art):
    other = onnx_art.to_dict()
    other["meta"] = {**other["meta"], "input_spec": {"shape": [3, 8, 8], "dtype": "float32"}}
    job = {"artifact_a": onnx_art.to_dict(), "artifact_b": other, "target": "onnxruntime"}
    out = interleaved_job({**job, "settings": SETTINGS})
    assert out["status"] == "failed" and "take different inputs" in out["reason"]


def test_signed_rank_cdf_matches_small_exact_cases():
    from modelpress.measure.interleave import signed_rank_cdf

    cdf = signed_rank_cdf(3)  # W+ over ranks {1,2,3}: 8 sign patterns, sums 0..6
    assert cdf.tolist() == pytest.approx([1 / 8, 2 / 8, 3 / 8, 5 / 8, 6 / 8, 7 / 8, 1.0])
    assert signed_rank_cdf(30)[137] <= 0.025 < signed_rank_cdf(30)[138]  # table: W <= 137


def test_hodges_lehmann_interval_ignores_an_outlying_pair_the_t_interval_does_not():
    from modelpress.measure.interleave import hodges_lehmann_ci

    rng = np.random.default_rng(0)
    logs = np.log(1.05) + rng.normal(0, 0.01, 30)
    logs[3], logs[17] = np.log(0.6), np.log(1.9)  # two blocks hit by the machine
    _, t_low, _ = paired_ratio_ci(logs, 0.95)
    ratio, low, high = hodges_lehmann_ci(logs, 0.95)
    assert t_low < 1.0 < 1.03 < low < ratio < high < 1.07
    clean = np.log(1.05) + rng.normal(0, 0.01, 30)
    r, lo, hi = hodges_lehmann_ci(clean, 0.95)
    t_r, t_lo, t_hi = paired_ratio_ci(clean, 0.95)
    assert r == pytest.approx(t_r, rel=0.01) and (hi - lo) < 1.3 * (t_hi - t_lo)
