"""TensorRT needs CUDA and the tensorrt package: the real tests skip with the reason where
either is missing; the availability contract is tested everywhere."""

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
