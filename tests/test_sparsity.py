import pytest
import torch
from torch import nn

from modelpress.checkpoint import load_checkpoint, save_trained
from modelpress.compress.base import PassContext
from modelpress.compress.sparsity import (
    SparsityConfig,
    polynomial_schedule,
    prunable_weights,
    sparsify,
    sparsify_model,
    sparsity_report,
)
from modelpress.errors import ConfigError
from modelpress.metrics import count_macs
from modelpress.models import MODELS, create_model


def _model(name, **kw):
    torch.manual_seed(0)
    return create_model(name, **kw).eval()


def test_polynomial_schedule_rises_fast_then_levels_off():
    s = polynomial_schedule(0.8, 5)
    assert s[-1] == pytest.approx(0.8) and all(a < b for a, b in zip(s, s[1:]))
    gains = [b - a for a, b in zip([0.0, *s], s)]
    assert all(a > b for a, b in zip(gains, gains[1:]))  # cubic: big steps first
    assert polynomial_schedule(0.5, 1) == [0.5]


@pytest.mark.parametrize("name", list(MODELS))
def test_global_sparsity_is_exact_and_by_magnitude(name):
    model = _model(name)
    weights = {k: getattr(m, p).detach().clone() for k, (m, p) in prunable_weights(model).items()}
    sparsify_model(model, SparsityConfig(sparsity=0.7))
    report = sparsity_report(model)
    assert report["sparsity"] == pytest.approx(0.7, abs=1e-4)
    assert report["all_params_sparsity"] < report["sparsity"]  # biases and norms stay dense
    kept, cut = [], []
    for key, (m, p) in prunable_weights(model).items():
        zero = getattr(m, p) == 0
        cut.append(weights[key][zero].abs())
        kept.append(weights[key][~zero].abs())
    assert torch.cat(cut).max() <= torch.cat(kept).min()
    assert not any("_orig" in k or "_mask" in k for k in model.state_dict())


def test_layer_scope_gives_each_layer_the_target():
    model = _model("resnet8")
    sparsify_model(model, SparsityConfig(sparsity=0.6, scope="layer"))
    layers = sparsity_report(model)["layers"]
    assert set(layers) >= {"stem.0.weight", "fc.weight"}
    assert all(v == pytest.approx(0.6, abs=0.02) for v in layers.values())


def test_recurrent_weights_are_sparsified_and_still_run():
    model = _model("lstm", bidirectional=True, num_layers=2)
    x = torch.randn(3, 8, 8)
    sparsify_model(model, SparsityConfig(sparsity=0.5, scope="layer", ignore=("fc",)))
    layers = sparsity_report(model)["layers"]
    assert layers["rnn.weight_hh_l1_reverse"] == pytest.approx(0.5, abs=0.01)
    assert layers["rnn.weight_ih_l0"] == pytest.approx(0.5, abs=0.01)
    assert layers["fc.weight"] == 0.0  # ignored
    assert model(x).shape == (3, 10)


def test_gradual_schedule_with_finetuning_keeps_zeros(digits_sequence):
    model = _model("gru", hidden_size=16)
    cfg = SparsityConfig(sparsity=0.8, steps=2, epochs_per_step=1, lr=3e-3)
    outcome = sparsify_model(model, cfg, data=digits_sequence)
    assert [s["target"] for s in outcome.details["steps"]] == [0.7, 0.8]
    assert outcome.details["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert all("val_accuracy" in s for s in outcome.details["steps"])
    assert isinstance(model.rnn.weight_hh_l0, nn.Parameter)  # masks made permanent


def test_pass_reports_same_size_and_macs_honestly(digits_image, tmp_path):
    model = _model("resnet8", width=0.5)
    art = save_trained(tmp_path / "m.safetensors", model, digits_image)
    result = sparsify(art, SparsityConfig(sparsity=0.75), PassContext(digits_image, tmp_path))
    rec = result.record
    assert rec.after.macs == rec.before.macs == count_macs(model, torch.zeros(1, 1, 8, 8))
    assert abs(rec.after.bytes - rec.before.bytes) < 0.02 * rec.before.bytes  # dense: no smaller
    assert rec.details["zlib_bytes"]["after"] < 0.7 * rec.details["zlib_bytes"]["before"]
    assert any("stored dense" in n for n in rec.notes)
    reloaded = load_checkpoint(result.artifact.path).model
    assert sparsity_report(reloaded)["sparsity"] == pytest.approx(0.75, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sparsity": 1.0}, r"sparsity must be in \(0, 1\)"),
        ({"sparsity": 0.0}, r"sparsity must be in \(0, 1\)"),
        ({"scope": "row"}, "scope 'row' is unknown"),
        ({"steps": 3}, "needs fine-tuning between steps"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SparsityConfig(**kwargs)


def test_bad_inputs_fail_clearly():
    with pytest.raises(ConfigError, match="not in the model"):
        sparsify_model(_model("gru"), SparsityConfig(ignore=("nope",)))
    with pytest.raises(ConfigError, match="needs data"):
        sparsify_model(_model("gru"), SparsityConfig(steps=2, epochs_per_step=1))
    with pytest.raises(ConfigError, match="no conv, linear or recurrent weights"):
        sparsify_model(nn.Sequential(nn.LayerNorm(4)), SparsityConfig())
