import pytest
from conftest import make_record

from modelpress.measure.speedup import baseline_record, ratio, size_ratio, speedup


@pytest.mark.parametrize(
    "baseline, current, expected",
    [(4.0, 2.0, 2.0), (1.0, 4.0, 0.25), (None, 2.0, None), (2.0, None, None), (0.0, 2.0, None)],
)
def test_ratio_is_baseline_over_current_or_none(baseline, current, expected):
    assert ratio(baseline, current) == expected


def test_baseline_is_the_models_own_first_ok_record():
    records = [
        make_record("cnn", "onnxruntime", "fp32", status="failed", reason="boom"),
        make_record("cnn+prune", "onnxruntime", "fp32"),  # a compressed variant: never a baseline
        make_record("cnn", "onnxruntime", "int8"),
        make_record("cnn", "onnxruntime", "fp32", size=1),
        make_record("cnn", "onnxruntime", "fp32", size=2),
    ]
    assert baseline_record(records, "cnn", "onnxruntime", "fp32") is records[3]
    assert baseline_record(records, "cnn", "torch", "fp32") is None


def test_size_ratio_and_speedup_against_the_baseline():
    base = make_record("cnn", "onnxruntime", "fp32", size=40_000, speed=1.0)
    small = make_record("cnn+prune", "onnxruntime", "int8", size=10_000, speed=0.5)
    assert size_ratio(small, base) == 4.0
    at_32 = base.latency_at(32).p50_ms / small.latency_at(32).p50_ms
    assert speedup(small, base, 32) == at_32 and 1.5 < at_32 < 2.5
    assert speedup(small, base, 7) is None  # not measured at that batch size
    assert size_ratio(small, None) is None and speedup(small, None, 32) is None
