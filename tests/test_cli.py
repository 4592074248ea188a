import json

from conftest import run_cli


def test_train_eval_info_end_to_end(tmp_path):
    ckpt = tmp_path / "lstm.safetensors"
    proc = run_cli(
        "train",
        "--model",
        "lstm",
        "--epochs",
        "6",
        "--no-progress",
        "--out",
        str(ckpt),
        "--set",
        "hidden_size=32",
    )
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and ckpt.is_file()
    acc = float(proc.stdout.split("test accuracy ")[1].split(",")[0])
    ev = run_cli("eval", str(ckpt))
    assert ev.returncode == 0, ev.stderr
    assert abs(json.loads(ev.stdout)["test_accuracy"] - acc) < 1e-9
    info = run_cli("info", str(ckpt))
    meta = json.loads(info.stdout)
    assert meta["model"]["config"]["hidden_size"] == 32 and meta["input_spec"]["kind"] == "sequence"


def test_baselines_prints_a_table(tmp_path):
    proc = run_cli(
        "baselines",
        "--models",
        "resnet8,gru",
        "--epochs",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    for word in ("resnet8", "gru", "test acc", "MACs", "on disk"):
        assert word in proc.stdout
    rows = json.loads((tmp_path / "baselines.json").read_text())
    assert [r["model"] for r in rows] == ["resnet8", "gru"] and rows[0]["macs"] > rows[1]["macs"]


def _one_line_error(proc):
    assert proc.returncode == 2, proc.stderr  # bad usage, configuration or input
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelpress: error:"), proc.stderr
    return lines[0]


def test_bad_input_gives_one_line_errors(tmp_path):
    line = _one_line_error(
        run_cli("train", "--model", "resnet9", "--out", str(tmp_path / "x.safetensors"))
    )
    assert "known: resnet8, mobilenet, gru, lstm, vit, transformer" in line
    line = _one_line_error(run_cli("train", "--model", "gru", "--data", "imagenet"))
    assert "known:" in line and "digits" in line
    line = _one_line_error(
        run_cli("train", "--model", "gru", "--data", "mnist", "--root", str(tmp_path / "none"))
    )
    assert "none" in line
    line = _one_line_error(run_cli("train", "--model", "gru", "--set", "hiden_size=3"))
    assert "hidden_size" in line
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 50)
    assert "truncated" in _one_line_error(run_cli("eval", str(bad)))
    assert list(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]


def test_listings():
    assert "transformer" in run_cli("models").stdout
    assert "cifar10" in run_cli("datasets").stdout
