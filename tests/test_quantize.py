import subprocess
import sys

import numpy as np
import pytest
import torch

from modelpress.compress.base import PassContext
from modelpress.compress.distill import new_student
from modelpress.compress.quantize import QATConfig, fold_batch_norms, onnx_logits, qat, to_fp16
from modelpress.compress.sensitivity import (
    SensitivityConfig,
    fake_quant_activation,
    fake_quant_weight,
    sensitivity,
)
from modelpress.errors import ConfigError
from modelpress.export import read_onnx_meta
from modelpress.models import MODELS, create_model
from modelpress.train import evaluate, predict_logits

pytestmark = pytest.mark.usefixtures("one_thread")


def _onnx_ops(path) -> dict[str, int]:
    import onnx

    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    return {op: ops.count(op) for op in set(ops)}


def _make_fragile(model, block: int = 1, scale: float = 1000.0) -> str:
    """Scale one channel of a ReLU input by ``scale`` and the next conv's weights by 1/scale:
    the float function is unchanged, but that conv's input range now dwarfs its other channels,
    so int8 per-tensor activations wipe them out. Returns the fragile conv's name."""
    blk = model.blocks[block]
    with torch.no_grad():
        bn = blk.conv1[1]
        bn.weight[0] *= scale
        bn.bias[0] *= scale
        blk.conv2[0].weight[:, 0] /= scale
    return f"blocks.{block}.conv2.0"


def test_qat_cnn_exports_qdq_onnx_that_onnxruntime_runs_close_to_float(
    tmp_path, trained_checkpoint
):
    art, data = trained_checkpoint("resnet8")
    result = qat(art, QATConfig(epochs=1), PassContext(data=data, out_dir=tmp_path))
    onnx_path = result.artifact.path
    assert result.artifact.format == "onnx" and onnx_path.suffix == ".onnx"
    ops = _onnx_ops(onnx_path)
    assert ops.get("QuantizeLinear", 0) >= 9 and ops.get("DequantizeLinear", 0) >= 18
    rec = result.record
    assert rec.details["qdq_nodes"]["QuantizeLinear"] == ops["QuantizeLinear"]
    assert rec.details["float_layers"] == []  # every conv and the classifier are int8
    assert rec.after.accuracy > rec.before.accuracy - 0.03  # measured on onnxruntime
    assert rec.after.bytes < 0.45 * rec.before.bytes  # int8 weights
    # dynamic batch: odd batch sizes run, and agree with the full-batch logits
    full = onnx_logits(str(onnx_path), data.test.x)
    assert np.allclose(onnx_logits(str(onnx_path), data.test.x[:3]), full[:3], atol=1e-4)
    meta = read_onnx_meta(onnx_path)
    assert meta["model"]["name"] == "resnet8" and meta["precision"] == "int8"
    assert meta["quantization"]["activations"] == "int8 symmetric per-tensor"
    assert meta["lineage"][-1]["stage"] == "qat"
    assert meta["preprocessing"] == data.preprocessing


@pytest.mark.parametrize("name", [n for n in MODELS if n != "resnet8"])
def test_qat_every_family_exports_and_reports_what_stays_float(
    name, tmp_path, digits_image, digits_sequence
):
    data = digits_image if MODELS[name].input_kinds[0] == "image" else digits_sequence
    art = new_student(name, data, tmp_path / f"{name}.safetensors", width=0.25)
    result = qat(art, QATConfig(epochs=0), PassContext(data=data, out_dir=tmp_path))
    ops = _onnx_ops(result.artifact.path)
    assert ops.get("QuantizeLinear", 0) >= 1 and ops.get("DequantizeLinear", 0) >= 2
    float_layers = result.record.details["float_layers"]
    expected_float = {"gru": ["rnn"], "lstm": ["rnn"]}.get(name, [])
    assert [f for f in float_layers if "norm" not in f] == expected_float
    assert all("rnn" in f or "norm" in f for f in float_layers)  # LayerNorm stays float too
    if float_layers:
        assert any("left in float" in n for n in result.record.notes)
    # onnxruntime runs the converted graph: same predictions as torch's converted model
    x = data.test.x[:64]
    with torch.no_grad():
        torch_logits = result.model(torch.as_tensor(x)).numpy()
    ort_logits = onnx_logits(str(result.artifact.path), x)
    assert (torch_logits.argmax(1) == ort_logits.argmax(1)).mean() >= 0.95


def test_fold_batch_norms_keeps_the_function(digits_image):
    torch.manual_seed(0)
    model = create_model("mobilenet", width=0.25).eval()
    for m in model.modules():  # non-trivial statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.as_tensor(digits_image.test.x[:32])
    ref = model(x)
    assert fold_batch_norms(model) == 1 + 2 * 5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(model(x), ref, atol=1e-5)


def test_sensitivity_ranks_a_fragile_layer_first(trained_checkpoint):
    from modelpress.checkpoint import load_checkpoint

    art, data = trained_checkpoint("resnet8")
    model = load_checkpoint(art.path).model
    base = evaluate(model, data.val)["accuracy"]
    fragile = _make_fragile(model)
    assert evaluate(model, data.val)["accuracy"] == pytest.approx(base, abs=1e-9)  # same float fn
    report = sensitivity(model, data, SensitivityConfig(top_k=2))
    assert report.layers[0].name == fragile and report.keep_float[0] == fragile
    assert report.layers[0].drop > 20  # points
    assert report.layers[0].drop > 5 * max(abs(r.drop) for r in report.layers[1:])
    assert len(report.layers) == 10 and len(report.keep_float) == 2
    assert fragile in report.to_markdown()
    # the model is restored after the analysis
    assert evaluate(model, data.val)["accuracy"] == pytest.approx(base, abs=1e-9)


@pytest.mark.parametrize("name", list(MODELS))
def test_sensitivity_covers_every_weighted_layer(name, digits_image, digits_sequence):
    data = digits_image if MODELS[name].input_kinds[0] == "image" else digits_sequence
    torch.manual_seed(0)
    model = create_model(name, input_spec=data.input_spec, width=0.25).eval()
    before = predict_logits(model, data.val.x)
    report = sensitivity(model, data, SensitivityConfig(calibration=64))
    weighted = {
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear | torch.nn.RNNBase)
    }
    assert {r.name for r in report.layers} == weighted
    assert all(np.isfinite([r.accuracy, r.drop, r.divergence]).all() for r in report.layers)
    assert all(r.divergence >= -1e-6 for r in report.layers)
    assert np.array_equal(predict_logits(model, data.val.x), before)


def test_fake_quant_helpers_on_known_values():
    w = torch.tensor([[1.0, -0.5, 0.25], [100.0, 1.0, 0.0]])
    q = fake_quant_weight(w)
    assert torch.equal(q[0], torch.round(w[0] * 127) / 127)  # row max 1 -> step 1/127
    assert q[1, 1] == pytest.approx(100 / 127)  # per row: the outlier only coarsens its own row
    x = torch.tensor([-1.0, 0.0, 0.3, 2.0])
    sym = fake_quant_activation(x, -1.0, 1.0, symmetric=True)
    assert sym.tolist() == pytest.approx([-1.0, 0.0, round(0.3 * 127) / 127, 1.0])  # clamped
    asym = fake_quant_activation(torch.tensor([0.0, 0.25, 3.0]), 0.0, 1.0, symmetric=False)
    assert asym.tolist() == pytest.approx([0.0, 64 / 255, 1.0])


def test_to_fp16_halves_the_checkpoint_and_loads_again(tmp_path, trained_checkpoint):
    from modelpress.checkpoint import load_checkpoint, read_meta

    art, data = trained_checkpoint("resnet8")
    result = to_fp16(art, PassContext(data=data, out_dir=tmp_path))
    rec = result.record
    assert 0.45 < rec.after.bytes / rec.before.bytes < 0.55
    assert abs(rec.after.accuracy - rec.before.accuracy) <= 0.01
    meta, tensors = read_meta(result.artifact.path)
    assert meta.dtype == "float16" and meta.lineage[-1]["stage"] == "fp16"
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    model = load_checkpoint(result.artifact.path).model
    original = load_checkpoint(art.path).model
    w, w0 = model.fc.weight, original.fc.weight
    assert w.dtype == torch.float32 and torch.equal(w, w0.half().float())
    assert read_meta(art.path)[0].dtype == "float32"


def test_configs_validate():
    with pytest.raises(ConfigError, match="activations"):
        QATConfig(activations="int4")
    with pytest.raises(ConfigError, match="batch_size"):
        QATConfig(batch_size=1)
    assert QATConfig(keep_float=["fc"]).keep_float == ("fc",)
    with pytest.raises(ConfigError, match="split"):
        SensitivityConfig(split="train")


def test_keep_float_leaves_the_named_layer_unquantized(tmp_path, trained_checkpoint):
    art, data = trained_checkpoint("resnet8")
    cfg = QATConfig(epochs=0, keep_float=("fc",))
    result = qat(art, cfg, PassContext(data=data, out_dir=tmp_path))
    assert result.record.details["float_layers"] == ["fc"]
    assert _onnx_ops(result.artifact.path).get("Gemm") == 1


def test_importing_the_passes_pulls_in_no_runtime():
    code = (
        "import sys, modelpress.compress.quantize, modelpress.compress.sensitivity, "
        "modelpress.compress.distill\n"
        "print([m for m in ('torchao', 'onnxruntime', 'onnx', 'litert_torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
