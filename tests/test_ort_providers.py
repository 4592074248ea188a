"""ONNX Runtime execution providers: parsing, a clean skip where a provider is missing (never a
silent CPU fallback), and the CUDA provider itself where onnxruntime-gpu and a GPU are present."""

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelpress.errors import ConfigError, TargetUnavailable
from modelpress.targets import get_target
from modelpress.targets.ort_providers import (
    ALIASES,
    check_session,
    device_label,
    parse_providers,
)

HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()


def test_short_and_full_names_resolve_in_order_once():
    assert parse_providers(None) == ("CPUExecutionProvider",)
    assert parse_providers("CUDA") == ("CUDAExecutionProvider",)
    assert parse_providers(["tensorrt", "cuda", "TensorrtExecutionProvider", "cpu"]) == (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    )
    with pytest.raises(ConfigError, match="empty"):
        parse_providers([])
    with pytest.raises(ConfigError, match="'gpu' is unknown; use cpu, cuda or tensorrt"):
        get_target("onnxruntime", providers=["gpu"])
    with pytest.raises(ConfigError, match="device_id"):
        get_target("onnxruntime", device_id=-1)


@given(st.one_of(st.text(max_size=30), st.lists(st.one_of(st.text(max_size=12), st.integers()))))
def test_any_provider_value_parses_or_is_a_one_line_config_error(value):
    try:
        names = parse_providers(value)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert names and set(names) <= set(ALIASES.values()) and len(set(names)) == len(names)


@pytest.mark.skipif(HAS_CUDA_EP, reason="onnxruntime-gpu is installed here")
def test_a_missing_provider_is_a_clean_skip_with_what_to_install(trained_checkpoint, tmp_path):
    from modelpress.measure.worker import run_bench

    art, data = trained_checkpoint("resnet8")
    target = get_target("onnxruntime", providers=["cuda"])
    assert not target.availability().ok
    assert "CUDAExecutionProvider" in target.availability().reason
    with pytest.raises(TargetUnavailable, match=r"onnxruntime-gpu.*modelpress\[ort-gpu\]"):
        target.build(art, "fp32", None, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # a CPU build of the same file, then measured with the CUDA provider: skipped, with why
    built = get_target("onnxruntime").build(art, "fp32", None, tmp_path / "cpu")
    job = {
        "mode": "bench",
        "artifact": built.to_dict(),
        "target": "onnxruntime",
        "target_options": {"providers": ["cuda"]},
        "reference_logits": None,
        "settings": {
            "batch_sizes": [1],
            "warmup_calls": 1,
            "warmup_seconds": 0.0,
            "min_calls": 2,
            "min_seconds": 0.0,
            "keep_samples": 2,
            "validate": False,
        },
    }
    out = run_bench(job)
    assert out["status"] == "skipped" and "onnxruntime-gpu" in out["reason"], out
    assert out["latency"] == []  # no CPU number under a GPU label


def test_a_session_that_dropped_a_provider_is_refused(trained_checkpoint, tmp_path):
    art, _ = trained_checkpoint("resnet8")
    built = get_target("onnxruntime").build(art, "fp32", None, tmp_path)
    session = ort.InferenceSession(str(built.path), providers=["CPUExecutionProvider"])
    check_session(session, ("CPUExecutionProvider",))
    with pytest.raises(TargetUnavailable, match="CUDAExecutionProvider could not start"):
        check_session(session, ("CUDAExecutionProvider", "CPUExecutionProvider"))


def test_the_runtime_details_name_the_providers_and_the_device():
    info = get_target("onnxruntime", providers=["cpu"]).describe()
    assert info.device == "cpu" and info.details["providers"] == ["CPUExecutionProvider"]
    assert device_label(("CUDAExecutionProvider",), 1).startswith("cuda:1")
    # providers and device_id are load-time settings: the built file (and its id) is the same
    a = get_target("onnxruntime", providers=["cpu"])._cfg_meta("int8")
    b = get_target("onnxruntime", providers=["cuda"], device_id=2)._cfg_meta("int8")
    assert a == b


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA_EP, reason="needs onnxruntime-gpu with CUDAExecutionProvider")
def test_cuda_provider_runs_the_model_like_the_cpu(trained_checkpoint, tmp_path):
    art, data = trained_checkpoint("resnet8")
    built = get_target("onnxruntime").build(art, "fp32", None, tmp_path)
    cpu = get_target("onnxruntime").load(built).predict(data.test.x[:64])
    target = get_target("onnxruntime", providers=["cuda"])
    gpu = target.load(built).predict(data.test.x[:64])
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)
    assert target.describe().device.startswith("cuda:0")
