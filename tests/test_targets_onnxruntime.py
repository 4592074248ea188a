import numpy as np
import onnx
import pytest
import torch

from modelpress.artifact import Artifact
from modelpress.checkpoint import load_checkpoint, save_trained
from modelpress.errors import ArtifactError, BuildError, ConfigError
from modelpress.export import read_onnx_meta
from modelpress.models import MODELS
from modelpress.targets import get_target
from modelpress.targets.onnxruntime_debug import localize
from modelpress.train import predict_logits
from modelpress.validate import validate

CASES = [(name, "fp32") for name in MODELS] + [(name, "int8") for name in MODELS]
CASES += [("gru", "dynamic_int8"), ("transformer", "dynamic_int8"), ("resnet8", "fp16")]


def _reference(art, data):
    return predict_logits(load_checkpoint(art.path).model, data.test.x)


@pytest.mark.parametrize("name,precision", CASES)
def test_build_load_predict_within_one_point_of_torch(
    name, precision, trained_checkpoint, tmp_path
):
    art, data = trained_checkpoint(name)
    target = get_target("onnxruntime", threads=2)
    built = target.build(art, precision, data.calibration(256), tmp_path)
    rec = validate(target.load(built), data.test, _reference(art, data))
    assert rec.reference_accuracy > 0.8  # the float model learned something
    assert rec.accuracy_drop <= 1.0, rec
    assert rec.agreement >= 0.97
    if precision == "fp32":
        assert rec.max_abs_diff < 1e-3
    assert built.size_bytes == sum(f.stat().st_size for f in built.files)


def test_int8_is_smaller_and_says_what_stayed_float(trained_checkpoint, tmp_path):
    art, data = trained_checkpoint("resnet8")
    target = get_target("onnxruntime")
    fp32 = target.build(art, "fp32", None, tmp_path)
    int8 = target.build(art, "int8", data.calibration(128), tmp_path)
    assert fp32.size_bytes / int8.size_bytes > 3.0
    # every Conv/Gemm of the CNN is quantized; its global pooling (a ReduceMean) runs in float
    assert not any("left in float" in n for n in int8.meta["notes"])
    (note,) = int8.meta["notes"]
    assert note.endswith("after its fusions): ReduceMean x1")
    gru_art, gru_data = trained_checkpoint("gru")
    native = get_target("onnxruntime", rnn="native").build(
        gru_art, "dynamic_int8", None, tmp_path / "n"
    )
    assert any(
        "GRU" in note for note in native.meta["notes"]
    )  # ORT has no int8 GRU: said, not hidden
    unrolled = target.build(gru_art, "dynamic_int8", None, tmp_path / "u")  # rnn="auto" unrolls
    assert unrolled.meta["notes"] == [] and unrolled.meta["rnn"] == "unrolled"
    assert unrolled.size_bytes < 0.7 * native.size_bytes
    ref = _reference(gru_art, gru_data)
    assert validate(target.load(unrolled), gru_data.test, ref).agreement >= 0.98


def test_metadata_round_trip(trained_checkpoint, tmp_path):
    art, data = trained_checkpoint("gru")
    built = get_target("onnxruntime").build(art, "int8", data.calibration(64), tmp_path)
    meta = read_onnx_meta(built.path)
    assert meta["model"]["name"] == "gru" and meta["labels"] == data.labels
    assert meta["input_spec"] == data.input_spec.to_dict()
    assert meta["preprocessing"]["mean"] == data.preprocessing["mean"]
    assert meta["lineage"][-1] == {"stage": "build", "target": "onnxruntime", "precision": "int8"}
    assert meta["parent_id"] == art.id
    # a bare path with the embedded metadata loads without the in-memory Artifact's meta
    bare = Artifact(path=built.path, format="onnx", id="x")
    assert get_target("onnxruntime").load(bare).predict(data.test.x[:4]).shape == (4, 10)


def test_external_data_is_counted(trained_checkpoint, tmp_path, monkeypatch):
    import modelpress.export as export

    monkeypatch.setattr(export, "EXTERNAL_DATA_BYTES", 0)
    art, data = trained_checkpoint("resnet8")
    built = get_target("onnxruntime").build(art, "fp32", None, tmp_path)
    assert len(built.files) == 2 and built.files[1].name.endswith(".data")
    assert built.size_bytes > built.path.stat().st_size + 250_000  # the weights live in .data
    out = get_target("onnxruntime").load(built).predict(data.test.x[:8])
    np.testing.assert_allclose(out, _reference(art, data)[:8], atol=1e-4)


def test_onnx_input_and_qdq_pass_through(trained_checkpoint, tmp_path):
    art, data = trained_checkpoint("resnet8")
    target = get_target("onnxruntime")
    int8 = target.build(art, "int8", data.calibration(64), tmp_path / "a")
    onnx_art = Artifact(
        path=int8.path, format="onnx", id="qat", meta=dict(int8.meta), files=int8.files
    )
    passed = target.build(onnx_art, "qdq", None, tmp_path / "b")
    a = target.load(int8).predict(data.test.x)
    b = target.load(passed).predict(data.test.x)
    np.testing.assert_array_equal(a, b)
    fp32 = target.build(art, "fp32", None, tmp_path / "c")
    with pytest.raises(ConfigError, match="QuantizeLinear"):
        target.build(
            Artifact(fp32.path, "onnx", "f", dict(fp32.meta), fp32.files),
            "qdq",
            None,
            tmp_path / "d",
        )


def test_localisation_names_the_fragile_layer(trained_checkpoint, tmp_path):
    """One channel of blocks.1.conv1 scaled up 2000x and its consumer scaled down: the float
    function is unchanged, but a per-tensor int8 scale for that activation wipes out the other
    channels. Validation must catch the collapse and the report must name that layer."""
    art, data = trained_checkpoint("resnet8")
    model = load_checkpoint(art.path).model
    with torch.no_grad():
        bn = model.blocks[1].conv1[1]
        bn.weight[3] *= 2000.0
        bn.bias[3] *= 2000.0
        model.blocks[1].conv2[0].weight[:, 3] /= 2000.0
    fragile = save_trained(tmp_path / "fragile.safetensors", model, data)
    target = get_target("onnxruntime")
    int8 = target.build(fragile, "int8", data.calibration(256), tmp_path)
    rec = validate(target.load(int8), data.test, predict_logits(model, data.test.x))
    assert rec.reference_accuracy > 0.8 and rec.agreement < 0.6  # collapsed, and caught
    report = localize(int8, data.calibration(64, seed=1))
    assert report.worst(1)[0].layer.startswith("blocks.1.conv1"), report.summary()
    healthy = localize(
        target.build(art, "int8", data.calibration(256), tmp_path / "h"), data.calibration(64)
    )
    assert min(d.sqnr_db for d in healthy.layers) > report.worst(1)[0].sqnr_db + 15


def test_bad_input(trained_checkpoint, tmp_path):
    art, data = trained_checkpoint("resnet8")
    target = get_target("onnxruntime")
    with pytest.raises(ConfigError, match="calibration"):
        target.build(art, "int8", None, tmp_path)
    with pytest.raises(ConfigError, match="choose one of"):
        target.build(art, "int4", None, tmp_path)
    with pytest.raises(ConfigError, match="threads"):
        get_target("onnxruntime", threads=0)
    with pytest.raises(ConfigError, match="calibration"):
        get_target("onnxruntime", calibration="kl")
    built = target.build(art, "fp32", None, tmp_path)
    runner = target.load(built)
    with pytest.raises(ConfigError, match=r"input shape \(2, 8, 8\)"):
        runner.predict(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ConfigError, match="dtype"):
        runner.predict(np.zeros((2, 1, 8, 8), np.int64))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(built.path.read_bytes()[:5000])
    with pytest.raises(ArtifactError, match="truncated or corrupt"):
        target.load(Artifact(truncated, "onnx", "t", dict(built.meta)))
    with pytest.raises(ArtifactError, match="does not exist"):
        target.load(Artifact(tmp_path / "nope.onnx", "onnx", "n", dict(built.meta)))


def test_an_op_the_runtime_cannot_take_is_named(trained_checkpoint, tmp_path):
    art, data = trained_checkpoint("resnet8")
    built = get_target("onnxruntime").build(art, "fp32", None, tmp_path)
    proto = onnx.load(str(built.path))
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "FancyActivation", "com.example"
    proto.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    odd = tmp_path / "odd.onnx"
    onnx.save(proto, str(odd))
    with pytest.raises(BuildError, match="FancyActivation"):
        get_target("onnxruntime").load(Artifact(odd, "onnx", "o", dict(built.meta)))


def test_describe():
    info = get_target("onnxruntime", threads=3).describe()
    assert info.runtime == "onnxruntime" and info.threads == 3 and info.version
    assert str(get_target("onnxruntime").availability()) == "ok"


def test_disabled_optimizers_default_and_validation():
    from modelpress.targets.onnxruntime import OrtConfig

    tgt = get_target("onnxruntime")
    assert tgt.cfg.disabled_optimizers == ("SkipLayerNormFusion",)
    assert tgt.describe().details["disabled_optimizers"] == ["SkipLayerNormFusion"]
    assert get_target("onnxruntime", disabled_optimizers=[]).cfg.disabled_optimizers == ()
    for bad in ("SkipLayerNormFusion", [""], [3]):
        with pytest.raises(ConfigError, match="disabled_optimizers must be a list"):
            OrtConfig(disabled_optimizers=bad)


def test_int8_says_which_ops_run_in_float_between_dequantize_and_quantize(digits_image, tmp_path):
    """MobileNetV3's hard-sigmoid has no int8 kernel in ORT: each of them runs in float between a
    DequantizeLinear and a QuantizeLinear, which is why its int8 graph is slower than fp32
    (benchmarks/results/ort_profile.md). The build says so."""
    from modelpress.factory import allow_factory, build_from_factory

    path = "zoo_nets:build_mobilenetv3_small"
    allow_factory(path)
    torch.manual_seed(0)
    model = build_from_factory(path, {"channels": 1, "classes": 10, "width": 0.25}).eval()
    art = save_trained(tmp_path / "v3.safetensors", model, digits_image)
    int8 = get_target("onnxruntime").build(art, "int8", digits_image.calibration(32), tmp_path)
    (note,) = [n for n in int8.meta["notes"] if "between DequantizeLinear" in n]
    assert "HardSigmoid x" in note and "ReduceMean x" in note  # the gates, the squeezes
    assert not list(tmp_path.rglob("*ort-optimized*"))  # the probe's file is gone
