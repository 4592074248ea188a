"""The compute device: spellings, the CPU path here, and CUDA checks (marked ``cuda``) that run
where torch sees a GPU."""

import json
import textwrap

import pytest
import torch
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from modelpress.baselines import fit
from modelpress.checkpoint import load_checkpoint, read_meta, save_trained
from modelpress.compress.base import PassContext
from modelpress.compress.distill import DistillConfig, distill, new_student
from modelpress.compress.prune import PruneConfig, prune
from modelpress.compress.quantize import QATConfig, prepare_qat, qat
from modelpress.compress.sensitivity import SensitivityConfig, sensitivity
from modelpress.compute import describe_device, move_graph_module, resolve_device
from modelpress.errors import ConfigError
from modelpress.run.recipe_checks import check_devices, load_recipe
from modelpress.train import TrainConfig, predict_logits

HAS_CUDA = torch.cuda.is_available()
without_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the errors of a machine without CUDA")

pytestmark = pytest.mark.usefixtures("one_thread")


def _on_cpu(model: torch.nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return bool(tensors) and all(t.device.type == "cpu" for t in tensors)


# -- spellings ------------------------------------------------------------------------------------


def test_auto_is_cuda_where_torch_sees_a_gpu_else_cpu():
    expected = "cuda" if HAS_CUDA else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected


def test_cpu_resolves_and_reads_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert describe_device(resolve_device("cpu")) == "cpu"


@pytest.mark.parametrize(
    "spec", ["gpu", "cuda:x", "CUDA", "cuda:", "cuda:-1", "cuda:01", " cpu", "cpu\n", "mps", ""]
)
def test_unknown_spellings_are_one_line_config_errors(spec):
    with pytest.raises(ConfigError, match="is unknown; use auto, cpu, cuda or cuda:N") as info:
        resolve_device(spec)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="is unknown"):
        TrainConfig(device=spec)
    with pytest.raises(ConfigError, match="is unknown"):
        SensitivityConfig(device=spec)


@without_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_says_what_to_do(spec):
    with pytest.raises(ConfigError) as info:
        resolve_device(spec)
    message = str(info.value)
    assert f"device {spec!r} asked for but torch sees no CUDA GPU" in message
    assert torch.__version__ in message and "use device: cpu or auto" in message
    assert "\n" not in message
    assert TrainConfig(device=spec).device == spec  # spelling only: resolved at train time


@given(st.one_of(st.text(max_size=30), st.from_regex(r"cuda:[0-9]{1,12}", fullmatch=True)))
@settings(max_examples=300, deadline=None)
def test_any_string_is_a_device_or_a_one_line_config_error(spec):
    try:
        device = resolve_device(spec)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert device.type in ("cpu", "cuda")
        assert device.type == "cpu" or device.index < torch.cuda.device_count()
    try:
        TrainConfig(device=spec)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_contexts_and_configs_check_the_spelling(tmp_path, digits_image):
    with pytest.raises(ConfigError, match="device 'gpu' is unknown"):
        PassContext(data=digits_image, out_dir=tmp_path, device="gpu")
    with pytest.raises(ConfigError, match="is unknown"):
        TrainConfig(device=0)
    assert PassContext(data=digits_image, out_dir=tmp_path, device="cuda:1").device == "cuda:1"


# -- the CPU path ---------------------------------------------------------------------------------


def test_training_records_cpu_and_saves_cpu_tensors(tmp_path, digits_image):
    result = fit("resnet8", digits_image, width=0.25, epochs=1, device="cpu")
    assert result.device == "cpu" and result.summary()["device"] == "cpu"
    assert _on_cpu(result.model)
    art = save_trained(
        tmp_path / "r.safetensors", result.model, digits_image, train=result.summary()
    )
    meta, _ = read_meta(art.path)
    assert meta.train["device"] == "cpu"
    saved, live = load_checkpoint(art.path).model.state_dict(), result.model.state_dict()
    assert all(saved[k].device.type == "cpu" and torch.equal(saved[k], live[k]) for k in live)
    logits = predict_logits(result.model, digits_image.test.x[:5])
    assert logits.shape == (5, digits_image.num_classes)


def test_capture_moves_with_its_baked_devices(digits_sequence):
    """An RNN captured on the CPU bakes ``device=cpu`` into its zero state; moving the graph
    rewrites it (checked with the meta device, which every machine has)."""
    from modelpress.baselines import model_for_data

    model = model_for_data("gru", digits_sequence, hidden_size=8)
    gm = prepare_qat(model, torch.as_tensor(digits_sequence.train.x[:4]), QATConfig())
    baked = [n for n in gm.graph.nodes if "device" in n.kwargs]
    assert baked and all(n.kwargs["device"] == torch.device("cpu") for n in baked)
    move_graph_module(gm, torch.device("meta"))
    assert all(n.kwargs["device"] == torch.device("meta") for n in baked)
    assert all(p.device.type == "meta" for p in gm.parameters())
    assert gm(torch.zeros(2, *digits_sequence.input_spec.shape, device="meta")).is_meta


def test_passes_record_the_device_they_trained_on(tmp_path, digits_image):
    teacher = fit("resnet8", digits_image, width=0.5, epochs=1, device="cpu")
    t_art = save_trained(tmp_path / "t.safetensors", teacher.model, digits_image)
    s_art = new_student("resnet8", digits_image, tmp_path / "s.safetensors", width=0.25)
    ctx = PassContext(data=digits_image, out_dir=tmp_path, device="cpu")
    kd = distill(t_art, s_art, DistillConfig(hint_weight=1.0), ctx, TrainConfig(epochs=1))
    assert kd.record.details["device"] == "cpu" and kd.record.details["train"]["device"] == "cpu"
    assert _on_cpu(kd.model)
    pruned = prune(kd.artifact, PruneConfig(ratio=0.3, recovery_epochs=1, round_to=2), ctx)
    assert pruned.record.details["device"] == "cpu"
    assert pruned.record.details["steps"][0]["device"] == "cpu" and _on_cpu(pruned.model)
    report = sensitivity(pruned.artifact, digits_image, SensitivityConfig(device="cpu"))
    assert report.device == "cpu" and report.layers


# -- recipes and the CLI --------------------------------------------------------------------------

RECIPE = """\
name: dev
data: {name: digits, calibration: 32}
models:
  rnn:
    model: gru
    options: {hidden_size: 8}
    train: {epochs: 1, device: cuda}
passes:
  - prune: {ratio: 0.5, recovery_epochs: 1, round_to: 2}
targets:
  torch: {precisions: [fp32]}
benchmark: {batch_sizes: [1], min_calls: 2, min_seconds: 0.0, warmup_calls: 1}
"""


def _recipe(tmp_path, text=RECIPE):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@without_cuda
def test_recipe_asking_for_cuda_fails_in_one_line_before_any_output(tmp_path):
    path = _recipe(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("run", str(path), "--out", str(out), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert (
        ":7: models.rnn.train.device: device 'cuda' asked for but torch sees no CUDA GPU"
        in (lines[0])
    )
    assert not out.exists()


@without_cuda
def test_every_train_section_is_checked_and_the_override_wins(tmp_path):
    moved = RECIPE.replace("train: {epochs: 1, device: cuda}", "train: {epochs: 1}").replace(
        "round_to: 2}", "round_to: 2, train: {device: 'cuda:1'}}"
    )
    path = _recipe(tmp_path, moved)
    recipe, lines = load_recipe(path)  # valid: the machine is checked when the run starts
    with pytest.raises(ConfigError, match=r":9: passes\.0\.prune\.train\.device: device 'cuda:1'"):
        check_devices(recipe, path, lines)
    check_devices(recipe, path, lines, "cpu")  # --device cpu replaces every train device
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        check_devices(recipe, path, lines, "cuda")


@without_cuda
def test_cli_device_errors_are_one_line_exit_2(tmp_path):
    out = tmp_path / "m.safetensors"
    for device, what in (("cuda", "no CUDA GPU"), ("gpu", "is unknown")):
        proc = run_cli(
            "train",
            "--model",
            "gru",
            "--epochs",
            "1",
            "--device",
            device,
            "--out",
            str(out),
            "--no-progress",
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and what in lines[0], proc.stderr
        assert not out.exists()
    proc = run_cli("run", str(_recipe(tmp_path)), "--out", str(tmp_path / "o"), "--device", "gpu")
    assert proc.returncode == 2 and "is unknown" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_run_device_override_reaches_every_training_and_the_records(tmp_path):
    device = "cuda" if HAS_CUDA else "cpu"
    recipe = RECIPE.replace("device: cuda", "device: cpu" if HAS_CUDA else "device: cuda")
    out = tmp_path / "out"
    proc = run_cli(
        "run",
        str(_recipe(tmp_path, recipe)),
        "--out",
        str(out),
        "--no-progress",
        "--device",
        device,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    passes = json.loads((out / "passes.json").read_text())["rnn"]
    assert passes["train"]["device"].startswith(device)  # the float baseline
    prune_record = passes["records"][0]
    assert prune_record["details"]["device"].startswith(device)  # the recovery fine-tune


# -- CUDA (run where torch sees a GPU) --------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_index_beyond_the_gpus_is_a_config_error():
    n = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"torch sees {n} CUDA GPU"):
        resolve_device(f"cuda:{n}")
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert describe_device(resolve_device("cuda:0")).startswith("cuda:0 (")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_training_comes_back_on_cpu_equal_to_its_checkpoint(tmp_path, digits_image):
    result = fit("resnet8", digits_image, width=0.5, epochs=1, device="cuda")
    assert result.device.startswith("cuda:0 (") and result.test_accuracy > 0.2
    assert _on_cpu(result.model)
    art = save_trained(
        tmp_path / "c.safetensors", result.model, digits_image, train=result.summary()
    )
    loaded = load_checkpoint(art.path)
    saved, live = loaded.model.state_dict(), result.model.state_dict()
    assert saved.keys() == live.keys()
    assert all(saved[k].device.type == "cpu" and torch.equal(saved[k], live[k]) for k in saved)
    assert loaded.meta.train["device"].startswith("cuda:0")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_distillation_teacher_student_and_adapters(tmp_path, digits_image, digits_sequence):
    teacher = fit("resnet8", digits_image, epochs=2, device="cuda")
    t_art = save_trained(tmp_path / "t.safetensors", teacher.model, digits_image)
    s_art = new_student("gru", digits_sequence, tmp_path / "s.safetensors", hidden_size=16)
    ctx = PassContext(data=digits_sequence, out_dir=tmp_path, device="cuda")
    cfg = DistillConfig(hint_weight=1.0, attention_weight=1.0)  # adapters, across views
    result = distill(t_art, s_art, cfg, ctx, TrainConfig(epochs=6))  # auto: ctx.device
    record = result.record
    assert record.details["device"].startswith("cuda:0") and record.details["adapter_params"] > 0
    assert _on_cpu(result.model) and record.after.accuracy > record.before.accuracy + 0.15
    assert load_checkpoint(result.artifact.path).meta.lineage[-1]["stage"] == "distill"


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["resnet8", "gru"])
def test_cuda_qat_fine_tunes_on_the_gpu_and_exports_on_cpu(
    name, tmp_path, digits_image, digits_sequence
):
    data = digits_image if name == "resnet8" else digits_sequence
    trained = fit(name, data, epochs=3, device="cuda")
    art = save_trained(tmp_path / f"{name}.safetensors", trained.model, data)
    ctx = PassContext(data=data, out_dir=tmp_path, device="cuda")
    result = qat(art, QATConfig(epochs=1), ctx)
    assert result.record.details["device"].startswith("cuda:0")
    assert result.artifact.path.suffix == ".onnx"
    assert result.record.details["qdq_nodes"]["QuantizeLinear"] > 0
    assert result.record.after.accuracy > trained.test_accuracy - 0.1  # measured on ORT, CPU
    assert all(t.device.type == "cpu" for t in result.model.state_dict().values())


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_prune_kd_recovery_and_sensitivity(tmp_path, digits_image):
    trained = fit("resnet8", digits_image, epochs=2, device="cuda")
    art = save_trained(tmp_path / "r.safetensors", trained.model, digits_image)
    ctx = PassContext(data=digits_image, out_dir=tmp_path, device="cuda")
    result = prune(art, PruneConfig(ratio=0.3, recovery="kd", recovery_epochs=1), ctx)
    assert result.record.details["device"].startswith("cuda:0") and _on_cpu(result.model)
    model = load_checkpoint(result.artifact.path).model
    report = sensitivity(model, digits_image, SensitivityConfig(device="cuda"))
    assert report.device.startswith("cuda:0") and _on_cpu(model)
    on_cpu = sensitivity(model, digits_image, SensitivityConfig(device="cpu"))
    assert report.base_accuracy == pytest.approx(on_cpu.base_accuracy, abs=0.02)
