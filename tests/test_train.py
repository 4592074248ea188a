import subprocess
import sys

import pytest
import torch

from modelpress.baselines import fit, train_config_for
from modelpress.errors import ConfigError
from modelpress.train import TrainConfig, random_shift


def test_real_training_beats_chance_by_far(digits_image):
    result = fit("resnet8", digits_image, epochs=4, seed=0)
    assert result.test_accuracy > 0.85  # chance is 0.10
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]


def test_rnn_and_attention_train_on_sequences(digits_sequence):
    for name in ("lstm", "transformer"):
        assert fit(name, digits_sequence, epochs=8, seed=0).test_accuracy > 0.6, name


def test_training_is_deterministic_for_a_seed(digits_sequence):
    a = fit("gru", digits_sequence, epochs=2, seed=5).model.state_dict()
    b = fit("gru", digits_sequence, epochs=2, seed=5).model.state_dict()
    c = fit("gru", digits_sequence, epochs=2, seed=6).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_early_stopping_keeps_the_best_epoch(digits_sequence):
    result = fit("gru", digits_sequence, epochs=30, patience=1, lr=1e-2, seed=0)
    assert result.epochs_run < 30
    best = max(h["val_accuracy"] for h in result.history)
    assert result.val_accuracy == best
    assert result.epochs_run - result.best_epoch == 1


def test_random_shift_moves_pixels_and_keeps_shape():
    x = torch.zeros(64, 1, 5, 5)
    x[:, :, 2, 2] = 1.0
    out = random_shift(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    centres = out.reshape(64, -1).argmax(1)
    assert len(set(centres.tolist())) > 3  # moved to several places
    assert (out.sum((1, 2, 3)) == 1).all()  # a 1-pixel shift keeps an interior pixel whole


def test_train_config_validation():
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(augment="mixup")
    with pytest.raises(ConfigError, match="unknown training option"):
        train_config_for("gru", epoch=3)
    assert train_config_for("gru", epochs=None).epochs == 60  # None keeps the model's default


@pytest.mark.slow
def test_ddp_two_processes(tmp_path):
    out = tmp_path / "gru.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "modelpress",
        "train",
        "--model",
        "gru",
        "--epochs",
        "15",
        "--no-progress",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "on 2 process(es)" in proc.stdout
    acc = float(proc.stdout.split("test accuracy ")[1].split(",")[0])
    assert acc > 0.9
