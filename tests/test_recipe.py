import textwrap

import pytest
from conftest import run_cli

from modelpress.run.recipe import RecipeError
from modelpress.run.recipe_checks import load_recipe

GOOD = """\
name: t
data: {name: digits, calibration: 64}
models:
  cnn:
    model: resnet8
    train: {epochs: 3}
    teacher: {model: resnet8, width: 2.0}
passes:
  - distill: {temperature: 4.0, train: {epochs: 2}}
  - prune: {macs_budget: 0.5, recovery_epochs: 2}
targets:
  onnxruntime: {precisions: [fp32, int8], threads: 2}
benchmark: {min_calls: 20, min_seconds: 0.2}
"""


def _write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_recipe_loads(tmp_path):
    recipe, _ = load_recipe(_write(tmp_path, GOOD))
    assert recipe.models["cnn"].teacher.width == 2.0
    assert recipe.targets["onnxruntime"].options == {"threads": 2}
    assert [next(iter(p)) for p in recipe.passes_for("cnn")] == ["distill", "prune"]


@pytest.mark.parametrize(
    "old,new,where,what",
    [
        (
            "train: {epochs: 3}",
            "train: {epoch: 3}",
            ":6: models.cnn.train.epoch",
            "valid keys: epochs",
        ),
        ("temperature: 4.0", "temperature: -1", ":9: passes.0.distill", "temperature must be > 0"),
        ("model: resnet8\n", "model: resnet9\n", ":5: models.cnn.model", "known: resnet8"),
        (
            "fp32, int8]",
            "fp32, int4]",
            ":12: targets.onnxruntime.precisions",
            "valid precisions: fp32",
        ),
        ("min_calls: 20", "min_call: 20", ":13: benchmark.min_call", "valid keys: batch_sizes"),
        ("  - distill", "  - distil", ":9: passes.0.distil", "valid passes: distill, prune"),
        ("threads: 2", "threads: 0", ":12: targets.onnxruntime", "threads must be >= 1"),
        ("name: t", "nme: t", ":1: nme", "valid keys: benchmark, data"),
        ("macs_budget: 0.5, ", "", ":10: passes.1.prune", "exactly one target"),
        (
            "width: 2.0}",
            "widht: 2.0}",
            ":7: models.cnn.teacher.widht",
            "valid keys: checkpoint, model",
        ),
        (
            "    teacher: {model: resnet8, width: 2.0}\n",
            "",
            ":8: passes.0.distill",
            "needs a teacher",
        ),
    ],
)
def test_errors_name_the_line_and_key(tmp_path, old, new, where, what):
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert f"{path}{where}" in message and what in message, message
    assert "\n" not in message


def test_yaml_syntax_error_has_a_line(tmp_path):
    path = _write(tmp_path, GOOD.replace("width: 2.0}", "width: 2.0"))
    with pytest.raises(RecipeError, match=r"recipe.yaml:8: not valid YAML"):
        load_recipe(path)


def test_unknown_target_and_inline_gates(tmp_path):
    path = _write(
        tmp_path, GOOD.replace("targets:\n", "targets:\n  tflite: {precisions: [fp32]}\n")
    )
    with pytest.raises(RecipeError, match="unknown target.*valid: .*litert"):
        load_recipe(path)
    gated = GOOD + "gates:\n  rules:\n    - min_acuracy: 0.9\n"
    with pytest.raises(RecipeError, match="gates"):
        load_recipe(_write(tmp_path, gated))


def test_cli_reports_recipe_errors_in_one_line(tmp_path):
    path = _write(tmp_path, GOOD.replace("train: {epochs: 3}", "train: {epochs: ten}"))
    proc = run_cli("run", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and ":6: models.cnn.train" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
    missing = run_cli("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
