import numpy as np
import pytest
import torch

from modelpress.data import InputSpec
from modelpress.errors import ConfigError
from modelpress.metrics import count_params
from modelpress.models import MODELS, config_to_dict, create_model, model_from_config

SPECS = {
    "image": InputSpec("image", (1, 8, 8), "float32"),
    "sequence": InputSpec("sequence", (8, 8), "float32"),
    "tokens": InputSpec("tokens", (12,), "int64"),
}
VOCAB = 30
CASES = [(name, kind) for name, entry in MODELS.items() for kind in entry.input_kinds]


def _build(name, kind, **kw):
    torch.manual_seed(0)
    return create_model(name, input_spec=SPECS[kind], num_classes=10, vocab_size=VOCAB, **kw).eval()


def _example(kind, batch=3):
    g = torch.Generator().manual_seed(1)
    if kind == "tokens":
        x = torch.randint(1, VOCAB, (batch, 12), generator=g)
        x[:, 9:] = 0  # trailing padding
        return x
    return torch.randn(batch, *SPECS[kind].shape, generator=g)


@pytest.mark.parametrize("name,kind", CASES)
def test_forward_shape_and_config_round_trip(name, kind):
    model = _build(name, kind)
    assert model(_example(kind)).shape == (3, 10)
    assert model.current_config() == model.config
    rebuilt = model_from_config(name, config_to_dict(model.config))
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(_example(kind)), model(_example(kind)))


@pytest.mark.parametrize("name,kind", CASES)
def test_torch_export_with_dynamic_batch(name, kind):
    model = _build(name, kind)
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(model, (_example(kind, 2),), dynamic_shapes=({0: batch},))
    x5 = _example(kind, 5)
    torch.testing.assert_close(ep.module()(x5), model(x5))


@pytest.mark.parametrize("name,kind", CASES)
def test_onnx_export_runs_in_onnxruntime(name, kind, tmp_path):
    import onnxruntime as ort

    model = _build(name, kind)
    path = tmp_path / f"{name}.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model,
        (_example(kind, 2),),
        str(path),
        dynamo=True,
        dynamic_shapes=({0: batch},),
        verbose=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _example(kind, 7)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_width_multiplier_scales_the_model():
    small, big = _build("resnet8", "image", width=0.5), _build("resnet8", "image", width=2.0)
    assert small.config.channels == (8, 16, 32) and big.config.channels == (32, 64, 128)
    assert count_params(small) < count_params(_build("resnet8", "image")) < count_params(big)
    assert _build("gru", "sequence", width=0.5).config.hidden_size == 32


@pytest.mark.parametrize("bidirectional,layers,pool", [(True, 2, "last"), (False, 2, "mean")])
def test_rnn_variants(bidirectional, layers, pool):
    for cell in ("gru", "lstm"):
        model = _build(cell, "sequence", bidirectional=bidirectional, num_layers=layers, pool=pool)
        assert model(_example("sequence")).shape == (3, 10)
        assert model.current_config() == model.config


def test_transformer_ignores_padding():
    model = _build("transformer", "tokens")
    x = _example("tokens")
    x2 = x.clone()
    x2[:, 10:] = 0  # more padding: the real tokens 0..8 are unchanged
    torch.testing.assert_close(model(x), model(x2))


def test_registry_errors_are_actionable():
    with pytest.raises(ConfigError, match="known: resnet8, mobilenet"):
        create_model("resnet9")
    with pytest.raises(ConfigError, match="takes sequence or tokens input"):
        create_model("gru", input_spec=SPECS["image"])
    with pytest.raises(ConfigError, match="unknown option.*hidden"):
        create_model("resnet8", hidden=3)
    with pytest.raises(ConfigError, match="vocab_size"):
        create_model("lstm", input_spec=SPECS["tokens"])
    with pytest.raises(ConfigError, match="cell"):
        create_model("gru", cell="rnn")
    with pytest.raises(ConfigError, match="patch_size"):
        create_model("vit", patch_size=3, patch_kernel=0)
    with pytest.raises(ConfigError, match="heads and mlp_dims"):
        create_model("transformer", heads=(2, 2, 2))
    with pytest.raises(ConfigError, match="positive"):
        create_model("mobilenet", channels=(32, 0, 64, 128, 128))
    with pytest.raises(ConfigError, match="unknown ResNet8Config key"):
        model_from_config("resnet8", {"chanels": [1, 2, 3]})
