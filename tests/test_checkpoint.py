import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from modelpress.checkpoint import META_KEY, load_checkpoint, read_meta, save_trained
from modelpress.data import load_dataset
from modelpress.errors import CheckpointError, ConfigError
from modelpress.models import MODELS, create_model


def _model_for(name, data):
    torch.manual_seed(0)
    return create_model(name, input_spec=data.input_spec, num_classes=10).eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_gives_identical_logits(name, tmp_path):
    kind = MODELS[name].input_kinds[0]
    data = load_dataset("digits", view=kind)
    model = _model_for(name, data)
    art = save_trained(
        tmp_path / f"{name}.safetensors", model, data, metrics={"test_accuracy": 0.5}
    )
    ckpt = load_checkpoint(art.path)
    x = torch.as_tensor(data.test.x[:16])
    assert torch.equal(ckpt.model(x), model(x))
    assert ckpt.meta.model.name == name and ckpt.meta.labels == data.labels
    assert ckpt.input_spec == data.input_spec and ckpt.meta.id == art.id
    assert ckpt.meta.preprocessing["mean"] == data.preprocessing["mean"]
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.safetensors"]  # no temp files left


def _rewrite(path, edit_meta=None, edit_tensors=None):
    from safetensors.torch import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()[META_KEY])
    tensors = load_file(str(path))
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})


@pytest.fixture
def saved(tmp_path, digits_image):
    return save_trained(
        tmp_path / "m.safetensors", _model_for("resnet8", digits_image), digits_image
    ).path


def test_tampered_json_is_refused(saved):
    _rewrite(saved, edit_meta=lambda m: m["labels"].reverse())
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(saved)


def test_tampered_weights_are_refused(saved):
    _rewrite(saved, edit_tensors=lambda t: t["fc.bias"].add_(1.0))
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(saved)


def test_invalid_json_schema_is_named(saved):
    _rewrite(saved, edit_meta=lambda m: m.update(surprise=1))
    with pytest.raises(CheckpointError, match="surprise"):
        read_meta(saved)


def test_config_that_does_not_match_weights(saved):
    from modelpress.checkpoint import CheckpointMeta, _digest

    def shrink(meta):  # a consistent digest over a config that builds other shapes
        meta["model"]["config"]["inner"] = [8, 32, 64]
        meta["digest"] = _digest(CheckpointMeta.model_validate(meta), load_file(str(saved)))

    _rewrite(saved, edit_meta=shrink)
    with pytest.raises(
        CheckpointError,
        match=r"blocks\.0\.conv1\.0\.weight is \(16, 16, 3, 3\) in the file but the config builds \(8, 16, 3, 3\)",
    ):
        load_checkpoint(saved)


def test_truncated_and_foreign_files(saved, tmp_path):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(saved)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not written by modelpress"):
        load_checkpoint(plain)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_failed_save_leaves_no_file(tmp_path, digits_image, monkeypatch):
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        save_trained(tmp_path / "m.safetensors", _model_for("resnet8", digits_image), digits_image)
    assert list(tmp_path.iterdir()) == []


def test_non_registry_model_is_refused(tmp_path, digits_image):
    with pytest.raises(ConfigError, match="create_model"):
        save_trained(tmp_path / "m.safetensors", torch.nn.Linear(2, 2), digits_image)
    assert list(tmp_path.iterdir()) == []
