"""TensorRT needs CUDA and the tensorrt package: the real tests skip with the reason where
either is missing; the availability contract is tested everywhere."""

import numpy as np
import pytest

from modelpress.errors import TargetUnavailable
from modelpress.targets import get_target
from modelpress.train import predict_logits
from modelpress.validate import validate

AVAILABILITY = get_target("tensorrt").availability()
needs_trt = pytest.mark.skipif(not AVAILABILITY.ok, reason=f"TensorRT {AVAILABILITY}")


def test_unavailable_is_reported_cleanly(trained_checkpoint, tmp_path):
    if AVAILABILITY.ok:
        pytest.skip("TensorRT is available here")
    assert AVAILABILITY.reason
    art, data = trained_checkpoint("resnet8")
    with pytest.raises(TargetUnavailable, match="unavailable"):
        get_target("tensorrt").build(art, "fp32", None, tmp_path)
    assert list(tmp_path.iterdir()) == []
    info = get_target("tensorrt").describe()
    assert info.runtime == "tensorrt"


@needs_trt
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_torch(precision, trained_checkpoint, tmp_path):
    from modelpress.checkpoint import load_checkpoint

    art, data = trained_checkpoint("resnet8")
    target = get_target("tensorrt", opt_batch=32, max_batch=128)
    built = target.build(art, precision, data.calibration(256), tmp_path)
    ref = predict_logits(load_checkpoint(art.path).model, data.test.x)
    rec = validate(target.load(built), data.test, ref)
    assert rec.accuracy_drop <= 1.0, rec
    assert built.files[1].name.endswith(".engine.json")


def test_an_engine_from_another_gpu_or_tensorrt_is_refused(tmp_path):
    """Engines do not move between GPU models or TensorRT versions: checked before loading."""
    from modelpress.errors import ArtifactError
    from modelpress.targets.tensorrt import check_identity, read_engine, write_engine

    here = {"tensorrt": "10.13.0", "gpu": "NVIDIA H200", "compute_capability": "9.0"}
    dest, _ = write_engine(tmp_path / "m.fp16.engine", b"engine", {"tensorrt": dict(here)})
    check_identity(dest, read_engine(dest)[1], here)
    with pytest.raises(ArtifactError, match=r"built for gpu 'NVIDIA H200'.*'NVIDIA A100'.*rebuild"):
        check_identity(dest, read_engine(dest)[1], {**here, "gpu": "NVIDIA A100"})
    with pytest.raises(ArtifactError, match="tensorrt '10.13.0'"):
        check_identity(dest, read_engine(dest)[1], {**here, "tensorrt": "11.4.0"})


@needs_trt
@pytest.mark.tensorrt
def test_runner_reuses_its_buffers_and_times_device_compute(trained_checkpoint, tmp_path):
    """One stream, buffers made once per batch size, and both timings of the bench worker."""
    from modelpress.measure.worker import measure_batch

    art, data = trained_checkpoint("resnet8")
    target = get_target("tensorrt", opt_batch=8, max_batch=32)
    built = target.build(art, "fp16", None, tmp_path)
    assert built.meta["tensorrt"]["gpu"] and built.meta["tensorrt"]["tensorrt"]
    runner = target.load(built)
    x = data.test.x[:8]
    first = runner.predict(x)
    ptrs = {n: t.data_ptr() for n, t in runner._buffers[8].dev_in.items()}
    runner.predict(data.test.x[8:12])  # another batch size: its own buffers
    np.testing.assert_array_equal(runner.predict(x), first)  # same inputs, same logits
    assert sorted(runner._buffers) == [4, 8]
    assert {n: t.data_ptr() for n, t in runner._buffers[8].dev_in.items()} == ptrs
    settings = {"warmup_calls": 3, "warmup_seconds": 0.0, "min_calls": 20, "min_seconds": 0.0}
    entry = measure_batch(runner, x, {**settings, "keep_samples": 5}, 0.0)
    assert 0 < entry["compute_p50_ms"] <= entry["p50_ms"]  # copies are outside device compute
    # the full test split in chunks of max_batch equals the torch model
    assert runner.predict(data.test.x).shape == (len(data.test.x), 10)
