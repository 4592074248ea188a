import numpy as np
import pytest
import torch
from torch import nn

from modelpress.checkpoint import load_checkpoint, save_checkpoint, save_trained
from modelpress.compress.attention_pruning import prune_heads
from modelpress.compress.base import PassContext
from modelpress.compress.prune import IMPORTANCES, PruneConfig, prune, prune_model
from modelpress.data import InputSpec
from modelpress.errors import ConfigError
from modelpress.metrics import count_macs, count_params
from modelpress.models import MODELS, create_model

SPECS = {
    "image": InputSpec("image", (1, 8, 8), "float32"),
    "sequence": InputSpec("sequence", (8, 8), "float32"),
    "tokens": InputSpec("tokens", (12,), "int64"),
}
NONE = {"recovery": "none", "round_to": 1}


def _model(name, kind=None, **kw):
    torch.manual_seed(0)
    spec = SPECS[kind or MODELS[name].input_kinds[0]]
    return create_model(name, input_spec=spec, num_classes=10, vocab_size=30, **kw).eval()


def _x(kind, batch=4):
    g = torch.Generator().manual_seed(1)
    if kind == "tokens":
        return torch.randint(1, 30, (batch, 12), generator=g)
    return torch.randn(batch, *SPECS[kind].shape, generator=g)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_prunes_runs_reloads_and_exports(name, tmp_path):
    import onnxruntime as ort

    from modelpress.export import export_onnx

    kind = MODELS[name].input_kinds[0]
    model, x = _model(name), _x(kind)
    before_params, before_macs = count_params(model), count_macs(model, x)
    outcome = prune_model(model, x, PruneConfig(ratio=0.4, **NONE))
    assert count_params(model) < 0.75 * before_params
    assert outcome.details["after"]["macs"] == count_macs(model, x) < before_macs
    assert not any("mask" in k or "orig" in k for k in model.state_dict())  # plain tensors
    art = save_checkpoint(
        tmp_path / "p.safetensors",
        model,
        input_spec=SPECS[kind],
        labels=[str(i) for i in range(10)],
        preprocessing={},
    )
    reloaded = load_checkpoint(art.path).model
    assert torch.equal(reloaded(x), model(x))
    onnx = export_onnx(model, SPECS[kind], tmp_path / "p.onnx", {"model": name})
    session = ort.InferenceSession(str(onnx.path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": _x(kind, 7).numpy()})
    np.testing.assert_allclose(out, model(_x(kind, 7)).detach().numpy(), atol=1e-4, rtol=1e-4)


def _kill_units(model, dead):
    """Zero everything unit ``dead`` owns, in every layer and direction: its state stays 0."""
    rnn, h = model.rnn, model.rnn.hidden_size
    gates, dirs = (4 if isinstance(rnn, nn.LSTM) else 3), (2 if rnn.bidirectional else 1)
    sfx = ["", "_reverse"][:dirs]
    with torch.no_grad():
        for layer in range(rnn.num_layers):
            rows = torch.cat([dead + i * h for i in range(gates)])
            for d, s in enumerate(sfx):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(rnn, f"{kind}_l{layer}{s}")[rows] = 0
                getattr(rnn, f"weight_hh_l{layer}{s}")[:, dead] = 0
                if layer + 1 < rnn.num_layers:
                    for s2 in sfx:
                        getattr(rnn, f"weight_ih_l{layer + 1}{s2}")[:, dead + d * h] = 0
        for d in range(dirs):
            model.fc.weight[:, dead + d * h] = 0


RNN_SHAPES = [
    {},
    {"bidirectional": True, "num_layers": 2},
    {"bidirectional": True, "num_layers": 3, "pool": "mean"},
]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("shape", RNN_SHAPES, ids=["1layer", "bi2-last", "bi3-mean"])
def test_rnn_pruning_of_dead_units_keeps_outputs(cell, shape):
    model, x = _model(cell, hidden_size=16, **shape), _x("sequence", 5)
    dead = torch.tensor([1, 4, 5, 11])
    _kill_units(model, dead)
    ref = model(x)
    prune_model(model, x, PruneConfig(ratio=0.25, scope="uniform", **NONE))
    assert model.rnn.hidden_size == 12 and model.current_config().hidden_size == 12
    assert model.fc.in_features == 12 * (2 if model.rnn.bidirectional else 1)
    torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-6)


def test_rnn_pruning_of_live_units_changes_outputs():
    model, x = _model("lstm", hidden_size=16, bidirectional=True), _x("sequence", 5)
    ref = model(x)
    prune_model(model, x, PruneConfig(ratio=0.25, scope="uniform", **NONE))
    assert (model(x) - ref).abs().max() > 1e-3  # the equality above is not a tautology


def test_gru_on_tokens_prunes_the_embedding_with_it():
    model, x = _model("gru", "tokens", embed_dim=16), _x("tokens")
    prune_model(model, x, PruneConfig(ratio=0.5, scope="uniform", **NONE))
    cfg = model.current_config()
    assert (cfg.embed_dim, cfg.hidden_size) == (8, 32)
    assert model.rnn.input_size == 8 and model(x).shape == (4, 10)


def test_attention_dead_head_is_removed_exactly():
    model, x = _model("vit"), _x("image")
    attn = model.blocks[0].attn
    with torch.no_grad():  # head 2 of block 0 contributes nothing
        rows = torch.cat([torch.arange(16) + 32 + s * 64 for s in range(3)])
        attn.qkv.weight[rows] = 0
        attn.qkv.bias[rows] = 0
        attn.proj.weight[:, 32:48] = 0
    ref = model(x)
    prune_heads(attn, [2])
    assert attn.num_heads == 3 and attn.qkv.out_features == 3 * 3 * 16
    torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-6)
    assert model.current_config().heads == (3, 4)


def test_heads_and_mlp_keep_attention_consistent():
    model, x = _model("transformer"), _x("sequence")
    prune_model(model, x, PruneConfig(ratio=0.5, scope="uniform", **NONE))
    cfg = model.current_config()
    assert cfg.heads == (2, 2) and cfg.head_dim == 16 and cfg.mlp_dims == (64, 64)
    assert cfg.dim == 32 and model.pos.shape == (1, 8, 32)
    for block in model.blocks:
        assert block.attn.qkv.out_features == 3 * block.attn.num_heads * block.attn.head_dim


@pytest.mark.parametrize("importance", IMPORTANCES)
def test_every_importance_criterion_prunes(importance, digits_image):
    model = _model("resnet8", width=0.5)
    x = torch.as_tensor(digits_image.test.x[:4])
    cfg = PruneConfig(ratio=0.3, importance=importance, **NONE)
    outcome = prune_model(model, x, cfg, data=digits_image)
    assert outcome.details["after"]["params"] < outcome.details["before"]["params"]
    assert "'fc' width 10 kept: its channels are the model's outputs" in outcome.notes


def test_bn_scale_without_batchnorm_says_what_it_used():
    model, x = _model("transformer"), _x("sequence")
    outcome = prune_model(model, x, PruneConfig(ratio=0.3, importance="bn_scale", **NONE))
    assert any("bn_scale: no BatchNorm" in n for n in outcome.notes)


def test_uniform_scope_and_round_to():
    model, x = _model("resnet8"), _x("image")
    outcome = prune_model(
        model, x, PruneConfig(**{**NONE, "ratio": 0.3, "scope": "uniform", "round_to": 8})
    )
    widths = outcome.details["widths"]
    assert widths["blocks.2.conv1.0"] == [64, 48] and widths["blocks.1.conv1.0"] == [32, 24]
    assert all(after % 8 == 0 for _, after in widths.values())


def test_round_to_auto_follows_kernel_blocks_in_wide_models_only():
    from modelpress.compress.pruning_graph import channel_step

    assert [channel_step("auto", w, 1280) for w in (16, 96, 255, 256, 1280)] == [16] * 3 + [32] * 2
    assert [channel_step("auto", w, 128) for w in (16, 128)] == [8, 8]
    assert channel_step(4, 1280, 1280) == 4
    torch.manual_seed(0)
    wide = nn.Sequential(
        nn.Conv2d(3, 24, 3), nn.ReLU(), nn.Conv2d(24, 96, 1), nn.ReLU(),
        nn.Conv2d(96, 320, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(320, 10),
    ).eval()  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    outcome = prune_model(wide, x, PruneConfig(ratio=0.4, recovery="none"))
    widths = outcome.details["widths"]
    assert widths["2"][1] % 16 == 0 and widths["4"][1] % 32 == 0 and widths["4"][1] < 320
    assert widths["0"][1] in (16, 24)  # 24 channels: multiples of 16, or kept whole
    small, xs = _model("resnet8"), _x("image")
    widths = prune_model(small, xs, PruneConfig(ratio=0.3, recovery="none")).details["widths"]
    assert all(after % 8 == 0 for _, after in widths.values())
    assert any(after % 16 for _, after in widths.values())  # a narrow model keeps steps of 8


@pytest.mark.parametrize("name", ["gru", "vit"])
def test_macs_budget_is_met(name):
    kind = MODELS[name].input_kinds[0]
    model, x = _model(name), _x(kind)
    before = count_macs(model, x)
    outcome = prune_model(model, x, PruneConfig(macs_budget=0.5, **NONE))
    assert 0.4 * before < count_macs(model, x) <= 0.5 * before
    assert 0.0 < outcome.details["steps"][0]["ratio"] < 0.9


def test_params_budget_is_met():
    model, x = _model("mobilenet"), _x("image")
    before = count_params(model)
    prune_model(model, x, PruneConfig(params_budget=0.6, **NONE))
    assert 0.5 * before < count_params(model) <= 0.6 * before


class _WithVanillaRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 32)
        self.b = nn.Linear(32, 16)
        self.rnn = nn.RNN(16, 16, batch_first=True)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        out, _ = self.rnn(self.b(torch.relu(self.a(x))))
        return self.fc(out[:, -1])


def test_unsupported_layer_is_left_as_is_and_reported():
    model, x = _WithVanillaRNN().eval(), _x("sequence")
    outcome = prune_model(model, x, PruneConfig(ratio=0.5, **NONE))
    assert model.a.out_features < 32 and model.b.out_features == 16
    assert model.rnn.input_size == 16 and model(x).shape == (4, 10)
    assert "'rnn' (RNN): no pruner supports it" in outcome.notes
    assert any(n.startswith("'b' width 16 kept: it reaches 'rnn'") for n in outcome.notes)


def test_ignored_layers_stay_and_are_named():
    model, x = _model("resnet8"), _x("image")
    outcome = prune_model(model, x, PruneConfig(ratio=0.3, ignore=("blocks.0",), **NONE))
    assert model.blocks[0].conv1[0].out_channels == 16
    assert model.stem[0].out_channels == 16  # coupled to blocks.0 through the residual
    assert "'blocks.0' ignored by config" in outcome.notes
    assert any(n.startswith("'stem.0' width 16 kept: it reaches ignored") for n in outcome.notes)
    with pytest.raises(ConfigError, match="not in the model"):
        prune_model(model, x, PruneConfig(ratio=0.3, ignore=("block.9",), **NONE))


def test_targets_that_cannot_work_fail_clearly():
    x = _x("sequence")
    with pytest.raises(ConfigError, match="nothing to prune: '1' width 10 kept"):
        prune_model(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), x, PruneConfig(ratio=0.5, **NONE)
        )
    tiny = nn.Sequential(nn.Linear(8, 2), nn.ReLU(), nn.Linear(2, 10))
    with pytest.raises(ConfigError, match="would remove every unit of '0'"):
        prune_model(tiny, x[:, 0], PruneConfig(ratio=0.8, scope="uniform", **NONE))
    with pytest.raises(ConfigError, match="MAC budget 1 cannot be reached"):
        prune_model(_model("gru"), x, PruneConfig(macs_budget=1, **NONE))
    with pytest.raises(ConfigError, match="removed nothing"):
        prune_model(_model("gru"), x, PruneConfig(**{**NONE, "ratio": 0.05, "round_to": 64}))
    with pytest.raises(ConfigError, match="need data"):
        prune_model(_model("gru"), x, PruneConfig(ratio=0.5, importance="taylor", **NONE))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "exactly one target"),
        ({"ratio": 0.3, "macs_budget": 0.5}, "exactly one target"),
        ({"ratio": 1.0}, r"ratio must be in \(0, 1\)"),
        ({"ratio": -0.2}, r"ratio must be in \(0, 1\)"),
        ({"macs_budget": 1.5}, "fraction of the model's count"),
        ({"params_budget": -3}, ">= 1 as an absolute count"),
        ({"ratio": 0.95}, "above max_layer_ratio"),
        ({"ratio": 0.3, "importance": "l3"}, "importance 'l3' is unknown"),
        ({"ratio": 0.3, "scope": "local"}, "scope 'local' is unknown"),
        ({"ratio": 0.3, "recovery": "pray"}, "recovery 'pray' is unknown"),
        ({"ratio": 0.3, "iterative_steps": 0}, "iterative_steps must be an integer"),
        ({"ratio": 0.3, "round_to": 0}, "round_to must be an integer"),
        ({"ratio": 0.3, "round_to": "avx"}, "round_to must be an integer >= 1 or 'auto'"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PruneConfig(**kwargs)


@pytest.fixture(scope="module")
def trained_resnet(tmp_path_factory, digits_image):
    from modelpress.baselines import fit

    result = fit("resnet8", digits_image, width=0.5, epochs=3, seed=0)
    path = tmp_path_factory.mktemp("prune") / "resnet8.safetensors"
    return save_trained(path, result.model, digits_image, metrics={"test_accuracy": 0.0})


def test_pass_iterates_with_finetune_and_records(trained_resnet, digits_image, tmp_path):
    cfg = PruneConfig(ratio=0.4, iterative_steps=2, recovery="finetune", recovery_epochs=1)
    result = prune(trained_resnet, cfg, PassContext(digits_image, tmp_path))
    rec = result.record
    assert rec.after.params < rec.before.params and rec.after.macs < rec.before.macs
    assert rec.after.bytes < rec.before.bytes and 0.5 < rec.after.accuracy <= 1.0
    assert [s["step"] for s in rec.details["steps"]] == [1, 2]
    assert all("val_accuracy" in s for s in rec.details["steps"])
    ckpt = load_checkpoint(result.artifact.path)
    assert ckpt.meta.lineage[-1]["stage"] == "prune" and ckpt.meta.lineage[-1]["ratio"] == 0.4
    x = torch.as_tensor(digits_image.test.x[:8])
    assert torch.equal(ckpt.model(x), result.model(x))


def test_kd_recovery_uses_the_unpruned_teacher(trained_resnet, digits_image):
    model = load_checkpoint(trained_resnet.path).model
    x = torch.as_tensor(digits_image.test.x[:4])
    cfg = PruneConfig(ratio=0.3, recovery="kd", recovery_epochs=1)
    outcome = prune_model(model, x, cfg, data=digits_image)
    assert 0.0 < outcome.details["steps"][0]["val_accuracy"] <= 1.0
