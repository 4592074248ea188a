"""The int8 accuracy budget of `modelpress run` (run/int8_fallback.py): a model made to break at
int8 is found, the diverging layer is kept in float and the artifact ends within budget; one
that no mix brings within budget is marked "over budget" with its numbers."""

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from int8_nets import build_row_mlp, fragile_weights

from modelpress.measure.results import load_results
from modelpress.run import run
from modelpress.run.recipe import RecipeError
from modelpress.run.recipe_checks import load_recipe

TESTS = Path(__file__).parent
BENCH = "benchmark: {batch_sizes: [1], min_calls: 3, min_seconds: 0.0, warmup_calls: 1}\n"
MODEL = '{factory: "int8_nets:build_mlp", weights: mlp.safetensors, input: {kind: image, shape: [1, 8, 8]}'
RECIPE = f"""\
name: fragile
data: {{name: digits, calibration: 64}}
models:
  fixed: {MODEL}}}
  stuck: {MODEL}, quantize: {{max_tries: 0, over_budget: fail}}}}
targets:
  onnxruntime: {{precisions: [int8], threads: 1}}
quantize: {{max_drop: 1.0}}
{BENCH}"""


@pytest.fixture(scope="module")
def fragile_run(tmp_path_factory, digits_image):
    tmp = tmp_path_factory.mktemp("fragile")
    shutil.copy(TESTS / "int8_nets.py", tmp / "int8_nets.py")
    fragile_weights(digits_image, tmp / "mlp.safetensors")
    path = tmp / "recipe.yaml"
    path.write_text(RECIPE)
    lines: list[str] = []
    outcome = run(path, out=tmp / "out", log=lines.append)
    records = {r.model: r for r in load_results(outcome.results_path).records}
    return outcome, records, lines


def test_the_broken_layer_is_found_kept_float_and_the_build_ends_within_budget(fragile_run):
    outcome, records, lines = fragile_run
    rec = records["fixed"]
    assert rec.status == "ok", rec.reason
    budget = rec.runtime["int8_budget"]
    assert budget["drop_before"] > 30  # the outlier range wiped the activation out
    assert budget["drop_after"] <= 1.0 and budget["within_budget"]
    # keeping the fc1 -> fc2 activation in float takes both its producer and its reader
    assert budget["kept_float"] == ["fc1", "fc2"]
    assert [t["kept_float"] for t in budget["tries"]] == [[], ["fc1", "fc2"]]
    assert budget["localisation"]["layers"][0]["layer"].startswith("fc1/")
    # the shipped artifact is the rebuilt one, measured on its runtime within budget
    assert rec.validation.accuracy_drop <= 1.0 and rec.marks == []
    passes = json.loads((outcome.results_path.parent / "passes.json").read_text())
    assert any("fc1, fc2 in float" in n for n in passes["fixed"]["notes"])
    assert any("[int8]" in line and "fixed" in line for line in lines)


def test_no_mix_within_budget_is_marked_with_its_numbers(fragile_run):
    outcome, records, _ = fragile_run
    rec = records["stuck"]
    assert rec.status == "ok", rec.reason  # still measured and reported, never dropped
    assert rec.marks == ["over budget"]
    budget = rec.runtime["int8_budget"]
    assert not budget["within_budget"] and budget["drop_before"] > 30
    assert budget["kept_float"] == [] and "max_tries is 0" in budget["summary"]
    assert outcome.exit_code == 1  # its quantize: {over_budget: fail}
    report = outcome.report_md.read_text()
    assert "int8 accuracy budget" in report and "over budget" in report
    assert "fc1/Gemm" in report  # the localisation table of each artifact that needed it


def test_a_rerun_takes_every_check_and_rebuild_from_the_cache(fragile_run):
    outcome, records, _ = fragile_run
    lines: list[str] = []
    recipe = outcome.results_path.parent.parent / "recipe.yaml"
    again = run(recipe, out=outcome.results_path.parent, log=lines.append)
    assert again.cache_misses == 0, [line for line in lines if "[run]" in line]
    rec = {r.model: r for r in load_results(again.results_path).records}["fixed"]
    assert rec.runtime["int8_budget"]["kept_float"] == ["fc1", "fc2"]


@pytest.mark.parametrize(
    "text,where,what",
    [
        ("quantize: {max_drops: 1}", "quantize.max_drops", "valid keys: enabled, max_drop"),
        ("quantize: {max_drop: -1}", "quantize.max_drop", "greater than or equal to 0"),
        ("quantize: {strategy: greedy}", "quantize.strategy", "one_at_a_time"),
        ("quantize: {max_tries: 1.5}", "quantize.max_tries", "integer"),
        ("quantize: {over_budget: warn}", "quantize.over_budget", "'mark' or 'fail'"),
    ],
)
def test_bad_quantize_sections_fail_in_one_line(tmp_path, text, where, what):
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(f"name: t\nmodels:\n  cnn: {{model: resnet8}}\n{text}\n"))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message and f":4: {where}" in message and what in message, message


def test_a_model_overrides_the_recipe_wide_budget(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: t\nmodels:\n  a: {model: resnet8}\n  b: {model: resnet8, quantize: {max_drop: 2}}\n"
        "quantize: {max_drop: 0.25, strategy: bisect}\n"
    )
    recipe, _ = load_recipe(path)
    assert (
        recipe.quantize_for("a").max_drop == 0.25 and recipe.quantize_for("a").strategy == "bisect"
    )
    assert recipe.quantize_for("b").max_drop == 2 and recipe.quantize_for("b").max_tries == 4
    defaults, _ = load_recipe(_plain(tmp_path))
    assert defaults.quantize.enabled and defaults.quantize.max_drop == 0.5


def _plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain.yaml"
    path.write_text("name: t\nmodels:\n  a: {model: resnet8}\n")
    return path


LITERT = f"""\
name: fragile-litert
data: {{name: digits, calibration: 64}}
models:
  fixed: {MODEL}}}
targets:
  litert: {{precisions: [int8], observer: minmax}}
quantize: {{max_drop: 1.0}}
{BENCH}"""


@pytest.mark.tflite
def test_litert_keeps_the_broken_layers_float_until_within_budget(tmp_path, digits_image):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("litert_torch")
    shutil.copy(TESTS / "int8_nets.py", tmp_path / "int8_nets.py")
    fragile_weights(digits_image, tmp_path / "mlp.safetensors")
    path = tmp_path / "recipe.yaml"
    path.write_text(LITERT)
    outcome = run(path, out=tmp_path / "out", log=lambda s: None)
    rec = load_results(outcome.results_path).records[0]
    assert rec.status == "ok", rec.reason
    budget = rec.runtime["int8_budget"]
    assert budget["drop_before"] > 30 and budget["within_budget"], budget["summary"]
    # LiteRT blames the reader of the outlier activation first; its producer follows
    assert sorted(budget["kept_float"]) == ["fc1", "fc2"] and rec.marks == []
    assert rec.validation.accuracy_drop <= 1.0


def test_ort_dynamic_int8_keeps_the_broken_matmuls_float(tmp_path, digits_image):
    shutil.copy(TESTS / "int8_nets.py", tmp_path / "int8_nets.py")
    fragile_weights(digits_image, tmp_path / "rows.safetensors", build=build_row_mlp)
    model = MODEL.replace("build_mlp", "build_row_mlp").replace(
        "mlp.safetensors", "rows.safetensors"
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: rows\ndata: {{name: digits, calibration: 64}}\nmodels:\n  rows: {model}}}\n"
        "targets:\n  onnxruntime: {precisions: [dynamic_int8], threads: 1}\n"
        f"quantize: {{max_drop: 1.0}}\n{BENCH}"
    )
    outcome = run(recipe, out=tmp_path / "out", log=lambda _: None)
    rec = load_results(outcome.results_path).records[0]
    assert rec.status == "ok", rec.reason
    budget = rec.runtime["int8_budget"]
    assert budget["drop_before"] > 10  # per-tensor dynamic scales: the outlier wipes fc2's input
    assert budget["within_budget"] and budget["drop_after"] <= 1.0
    assert "fc2" in budget["kept_float"] and rec.marks == []
