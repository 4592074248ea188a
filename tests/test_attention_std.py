"""nn.MultiheadAttention's prunable replacement, and whole-head pruning of every attention kind:
ours, the replacement (nn.TransformerEncoder models), transformers BERT / DistilBERT / ViT."""

import copy

import attention_nets as nets
import numpy as np
import pytest
import torch
from torch import nn

from modelpress.checkpoint import load_checkpoint, save_checkpoint
from modelpress.compress.attention_adapters import find_attention, head_index
from modelpress.compress.attention_pruning import prune_heads
from modelpress.compress.prune import PruneConfig, prune_model
from modelpress.data import InputSpec
from modelpress.errors import ConfigError
from modelpress.factory import allow_factory, build_from_factory, set_int_attrs
from modelpress.metrics import count_macs
from modelpress.models import create_model
from modelpress.models.std_attention import (
    PrunableMultiheadAttention,
    from_torch,
    swap_multihead_attention,
)

IMAGE = InputSpec("image", (1, 8, 8), "float32")
TOKENS = InputSpec("tokens", (12,), "int64")
KINDS = ["tiny_vit", "bert", "distilbert", "vit"]


def _close(a, b, atol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def _model(kind: str) -> tuple[nn.Module, torch.Tensor, InputSpec]:
    g = torch.Generator().manual_seed(1)
    if kind == "tiny_vit":
        return nets.build_tiny_vit().eval(), torch.randn(2, 1, 8, 8, generator=g), IMAGE
    pytest.importorskip("transformers")
    model = nets.build_hf(kind).eval()
    if kind == "vit":
        return model, torch.randn(2, 1, 8, 8, generator=g), IMAGE
    return model, torch.randint(1, 50, (2, 12), generator=g), TOKENS


# -- the replacement computes what the stock module computes --------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_replacement_matches_stock_encoder_layer(batch_first, norm_first):
    torch.manual_seed(0)
    stock = nn.TransformerEncoderLayer(
        16, 4, 32, 0.1, batch_first=batch_first, norm_first=norm_first
    )
    mine = copy.deepcopy(stock)
    assert swap_multihead_attention(mine) == (["self_attn"], [])
    assert isinstance(mine.self_attn, PrunableMultiheadAttention)
    x = torch.randn(3, 7, 16) if batch_first else torch.randn(7, 3, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:], pad[2, 3:] = True, True
    causal = nn.Transformer.generate_square_subsequent_mask(7)
    stock.eval(), mine.eval()
    with torch.no_grad():  # the stock layer takes its fused fast path here where it can
        for kw in ({}, {"src_key_padding_mask": pad}, {"src_mask": causal, "is_causal": True}):
            _close(mine(x, **kw), stock(x, **kw))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_replacement_in_encoder_skips_the_nested_tensor_path():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True)
    stock = nn.TransformerEncoder(layer, 2).eval()  # packs padded batches as nested tensors
    mine = copy.deepcopy(stock)
    swapped, _ = swap_multihead_attention(mine)
    assert swapped == ["layers.0.self_attn", "layers.1.self_attn"] and not mine.use_nested_tensor
    x, pad = torch.randn(2, 6, 16), torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 4:] = True
    with torch.no_grad():  # the stock output is zero at padded positions: compare the others
        _close(mine(x, src_key_padding_mask=pad)[~pad], stock(x, src_key_padding_mask=pad)[~pad])


@pytest.mark.parametrize("bias", [True, False])
def test_replacement_matches_stock_arguments(bias):
    torch.manual_seed(0)
    stock = nn.MultiheadAttention(16, 4, bias=bias, kdim=8, vdim=12, batch_first=True).eval()
    mine = from_torch(stock).eval()
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 6, 8), torch.randn(2, 6, 12)
    bool_mask = torch.rand(5, 6) > 0.7
    bool_mask[:, 0] = False  # every query sees one key
    cases = [
        {},
        {"average_attn_weights": False},
        {"attn_mask": bool_mask},
        {"attn_mask": torch.randn(2 * 4, 5, 6)},
        {"key_padding_mask": torch.randn(2, 6)},
        {"key_padding_mask": torch.tensor([[False] * 6, [False] * 4 + [True] * 2])},
    ]
    for kw in cases:
        (a, wa), (b, wb) = mine(q, k, v, **kw), stock(q, k, v, **kw)
        _close(a, b)
        _close(wa, wb)
    (a, wa), (b, wb) = mine(q[0], k[0], v[0]), stock(q[0], k[0], v[0])  # unbatched
    _close(a, b)
    _close(wa, wb)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    x = torch.randn(2, 5, 8)
    self_stock = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    out, weights = from_torch(self_stock).eval()(x, x, x, need_weights=False, is_causal=True)
    _close(out, self_stock(x, x, x, attn_mask=causal, need_weights=False, is_causal=True)[0])
    assert weights is None


# -- head pruning, every kind ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ours", *KINDS])
def test_removing_a_silent_head_keeps_outputs(kind):
    """Head 2 of the first attention writes nothing (its output columns are zero): removing it
    must leave the outputs exactly as they were, which fails if any other head's q/k/v rows or
    output columns were cut instead."""
    if kind == "ours":
        model, x = (
            create_model("vit", input_spec=IMAGE, num_classes=10).eval(),
            torch.randn(2, 1, 8, 8),
        )
    else:
        model, x, _ = _model(kind)
        swap_multihead_attention(model)
    a = find_attention(model)[0]
    with torch.no_grad():
        a.out.weight[:, head_index(a, torch.tensor([2]))[1].flatten()] = 0
        ref = model(x)
        prune_heads(a, [2])
        assert a.heads == 3 and all(
            lin.out_features % (3 * a.head_dim) == 0 for lin in a.in_linears
        )
        assert a.out.in_features == 3 * a.head_dim
        _close(model(x), ref, atol=1e-6)


def _weaken_head(model: nn.Module) -> None:
    """Head 0 of every layer at a third of its weights, as trained models have weak heads."""
    with torch.no_grad():
        for a in find_attention(model):
            rows, cols = head_index(a, torch.tensor([0]))
            for lin, r in rows.items():
                lin.weight[r.flatten()] *= 0.3
            a.out.weight[:, cols.flatten()] *= 0.3


def _consistent(model: nn.Module) -> list[int]:
    """Every attention's projections, head count and derived widths agree; the head counts."""
    heads = []
    for a in find_attention(model):
        inner = a.heads * a.head_dim
        assert [lin.out_features for lin in a.in_linears] == [inner] * 3
        assert a.out.in_features == inner
        m = a.module
        assert getattr(m, "all_head_size", inner) == inner
        if isinstance(m, PrunableMultiheadAttention):
            assert (m.embed_dim, m.kdim) == (m.out_proj.out_features, m.k_proj.in_features)
        if hasattr(m, "n_heads"):
            assert m.dim == m.q_lin.in_features
        heads.append(a.heads)
    return heads


@pytest.mark.parametrize("kind", KINDS)
def test_macs_budget_prunes_heads_and_exports(kind, tmp_path):
    """Heads go under a MACs budget; the stock-attention replacement exports to ONNX exactly."""
    import onnxruntime as ort

    from modelpress.export import export_onnx

    model, x, spec = _model(kind)
    before = count_macs(model, x)
    if kind == "tiny_vit":
        swap_multihead_attention(model)  # (prune_model does it too) to reach the heads
        assert count_macs(model, x) == before  # the swap changes no count
    _weaken_head(model)
    outcome = prune_model(model, x, PruneConfig(macs_budget=0.5, recovery="none"))
    assert count_macs(model, x) <= 0.5 * before
    heads = _consistent(model)
    assert len(heads) == 2 and sum(heads) < 8, outcome.details["widths"]
    assert model(x).shape[0] == 2
    if kind != "tiny_vit":  # transformers' kinds go to ONNX Runtime and LiteRT in test_zoo
        return
    art = export_onnx(model, spec, tmp_path / "m.onnx", {"model": kind})
    session = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    x5 = torch.randint(1, 50, (5, 12)) if spec is TOKENS else torch.randn(5, 1, 8, 8)
    (out,) = session.run(None, {"input": x5.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x5).numpy(), atol=1e-4, rtol=1e-4)


_LEAVES = (nn.Linear, nn.LayerNorm, nn.Embedding, nn.Conv2d)


def _stream(model: nn.Module) -> list[tuple[torch.Tensor, int]]:
    """Every tensor that holds one entry per residual-stream channel, with the dim that runs
    over the channels: LayerNorm weights, embedding and patch-conv weights, position / class
    parameters, q / k / v columns and output-projection rows of every attention."""
    out: list[tuple[torch.Tensor, int]] = []
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            out.append((m.weight, 0))
        elif isinstance(m, nn.Embedding):
            out.append((m.weight, 1))
        elif isinstance(m, nn.Conv2d):
            out.append((m.weight, 0))
        elif not isinstance(m, _LEAVES):
            out += [(p, p.dim() - 1) for p in m.parameters(recurse=False)]
    for a in find_attention(model):
        out += [(lin.weight, 1) for lin in a.in_linears] + [(a.out.weight, 0)]
    return out


def _ids(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The channel ids along ``dim`` (every slice across it carries the same ids)."""
    return t.detach().movedim(dim, -1).reshape(-1, t.shape[dim])[0]


@pytest.mark.parametrize("kind", KINDS)
def test_embedding_width_is_cut_at_the_same_channels_everywhere(kind):
    """Channel j of the residual stream is marked j + 1 in every tensor that holds it: after
    pruning, all of them must still hold the same channels, in the same order."""
    model, x, _ = _model(kind)
    swap_multihead_attention(model)
    ids = torch.arange(1.0, 33.0)
    with torch.no_grad():
        for t, dim in _stream(model):
            shape = [1] * t.dim()
            shape[dim] = 32
            t.copy_(ids.reshape(shape).expand_as(t))
    prune_model(model, x, PruneConfig(ratio=0.5, scope="uniform", recovery="none"))
    stream = _stream(model)
    kept = _ids(*stream[0])
    assert len(kept) == 16 and len(stream) > 10
    for t, dim in stream:
        assert torch.equal(_ids(t, dim), kept)
    assert _consistent(model) == [2, 2]


# -- a pruned factory model comes back from its checkpoint -----------------------------------


def _save(model: nn.Module, path, spec: InputSpec):
    return save_checkpoint(
        path, model, input_spec=spec, labels=list("abcdefghij"), preprocessing={}
    )


@pytest.mark.parametrize("kind", ["tiny_vit", "bert"])
def test_pruned_factory_model_reloads_with_its_structure(kind, tmp_path):
    if kind == "bert":
        pytest.importorskip("transformers")
    factory, kwargs = {
        "tiny_vit": ("attention_nets:build_tiny_vit", {"batch_first": False}),
        "bert": ("attention_nets:build_hf", {"kind": "bert"}),
    }[kind]
    allow_factory(factory)
    model = build_from_factory(factory, kwargs).eval()
    x = torch.randn(2, 1, 8, 8) if kind == "tiny_vit" else torch.randint(1, 50, (2, 12))
    spec = IMAGE if kind == "tiny_vit" else TOKENS
    plain = _save(model, tmp_path / "plain.safetensors", spec)  # unpruned: no record
    assert plain.meta["model"]["structure"] is None
    if kind == "tiny_vit":  # an old-style checkpoint (no record) rebuilds the stock module
        stock = load_checkpoint(plain.path).model.encoder.layers[0].self_attn
        assert type(stock) is nn.MultiheadAttention
    outcome = prune_model(model, x, PruneConfig(ratio=0.5, scope="uniform", recovery="none"))
    art = _save(model, tmp_path / "pruned.safetensors", spec)
    record = art.meta["model"]["structure"]
    if kind == "tiny_vit":
        assert record["swapped"] == ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn"]
        assert any("nn.MultiheadAttention replaced" in n for n in outcome.notes)
    count = "num_attention_heads" if kind == "bert" else "num_heads"
    assert [v[count] for v in record["attrs"].values()] == [2, 2]
    again = load_checkpoint(art.path).model
    assert _consistent(again) == [2, 2]
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    if kind == "tiny_vit":
        assert all(
            isinstance(layer.self_attn, PrunableMultiheadAttention)
            for layer in again.encoder.layers
        )
    resaved = _save(again, tmp_path / "again.safetensors", spec)
    assert resaved.meta["model"]["structure"] == record


def test_saved_attributes_must_fit_the_rebuilt_model():
    model = nets.build_tiny_vit()
    swap_multihead_attention(model)
    with pytest.raises(ConfigError, match="not in the rebuilt model"):
        set_int_attrs(model, {"encoder.layers.7.self_attn": {"num_heads": 2}})
    for bad in ({"training": 1}, {"_secret": 1}, {"num_heads": 2.0}, {"missing": 2}):
        with pytest.raises(ConfigError, match="does not fit the rebuilt"):
            set_int_attrs(model, {"encoder.layers.0.self_attn": bad})
    set_int_attrs(model, {"encoder.layers.0.self_attn": {"num_heads": 2}})
    assert model.encoder.layers[0].self_attn.num_heads == 2
