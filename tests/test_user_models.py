"""Users' models as they write them: every output form, and a failing model that stays with
its own rows while the others run to the end (issue: your models, your data)."""

import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from modelpress.errors import ConfigError
from modelpress.measure.results import load_results
from modelpress.model_io import adapt_output, infer_output, output_of, pick_logits
from modelpress.run import run

TESTS = Path(__file__).parent
BENCH = "benchmark: {batch_sizes: [1], min_calls: 3, min_seconds: 0.0, warmup_calls: 1}\n"

FORMS = """\
name: forms
data: {name: digits, calibration: 32}
models:
  tensor: {factory: "byo_nets:build_returning", kwargs: {form: tensor}, input: {kind: image, shape: [1, 8, 8]}}
  tuple: {factory: "byo_nets:build_returning", kwargs: {form: tuple}, input: {kind: image, shape: [1, 8, 8]}}
  list: {factory: "byo_nets:build_returning", kwargs: {form: list}, input: {kind: image, shape: [1, 8, 8]}}
  dict: {factory: "byo_nets:build_returning", kwargs: {form: dict}, input: {kind: image, shape: [1, 8, 8]}}
  keyed: {factory: "byo_nets:build_returning", kwargs: {form: scores}, output: scores, input: {kind: image, shape: [1, 8, 8]}}
  hf:
    factory: "byo_nets:build_returning"
    kwargs: {form: model-output}
    input: {kind: image, shape: [1, 8, 8]}
    passes: [{prune: {ratio: 0.5, recovery: none}}]  # a ModelOutput model on LiteRT: test_zoo
  broken: {factory: "byo_nets:build_broken", input: {kind: image, shape: [1, 8, 8]}}
  unreachable:
    factory: "byo_nets:build_returning"
    input: {kind: image, shape: [1, 8, 8]}
    passes: [{prune: {macs_budget: 1, recovery: none}}]
targets:
  onnxruntime: {precisions: [fp32]}
"""


@pytest.fixture(scope="module")
def forms_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forms")
    shutil.copy(TESTS / "byo_nets.py", tmp / "byo_nets.py")
    path = tmp / "recipe.yaml"
    path.write_text(textwrap.dedent(FORMS) + BENCH)
    lines: list[str] = []
    outcome = run(path, out=tmp / "out", log=lines.append)
    return outcome, load_results(outcome.results_path).records, lines


def test_every_output_form_is_built_and_validated(forms_run):
    outcome, records, _ = forms_run
    by = {(r.model, r.target, r.precision): r for r in records}
    for label in ("tensor", "tuple", "list", "dict", "keyed", "hf", "hf+prune"):
        rec = by[(label, "onnxruntime", "fp32")]
        assert rec.status == "ok", (label, rec.reason)
    # one model, one accuracy: the same random weights whatever wraps the logits
    forms = ("tensor", "tuple", "list", "dict", "keyed", "hf")
    accs = {by[(k, "onnxruntime", "fp32")].validation.accuracy for k in forms}
    assert len(accs) == 1


def test_a_failing_model_becomes_rows_and_the_others_run_to_the_end(forms_run):
    outcome, records, lines = forms_run
    assert outcome.exit_code == 1 and outcome.report_html.is_file()
    broken = [r for r in records if r.model == "broken"]
    assert [r.status for r in broken] == ["failed"]
    assert "this factory always fails" in broken[0].reason and "import failed" in broken[0].reason
    # a pass that fails costs only the compressed rows: the float model is measured
    by = {(r.model, r.target, r.precision): r for r in records}
    assert by[("unreachable", "onnxruntime", "fp32")].status == "ok"
    failed = by[("unreachable+prune", "onnxruntime", "fp32")]
    assert failed.status == "failed" and failed.reason.startswith("prune failed:")
    assert "budget" in failed.reason
    assert {f.label for f in outcome.failures} == {"broken", "unreachable+prune"}
    assert any("[failed] broken" in line for line in lines)


def test_a_recipe_whose_every_model_fails_on_input_exits_2(tmp_path):
    shutil.copy(TESTS / "byo_nets.py", tmp_path / "byo_nets.py")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: bad\nmodels:\n  m: {factory: 'byo_nets:build_returning', kwargs: {form: scores}, "
        "output: nope, input: {kind: image, shape: [1, 8, 8]}}\n"
    )
    outcome = run(path, out=tmp_path / "out", log=lambda s: None)
    assert outcome.exit_code == 2
    (fail,) = outcome.failures
    assert "'nope' is not in the model's output" in fail.reason and "scores" in fail.reason


@pytest.mark.parametrize(
    "out, key",
    [
        (torch.ones(2, 3), None),
        ((torch.ones(2, 3), torch.zeros(1)), "0"),
        ([torch.ones(2, 3)], "0"),
        ({"logits": torch.ones(2, 3), "x": torch.zeros(2)}, "logits"),
    ],
)
def test_infer_and_pick_logits(out, key):
    assert infer_output(out) == key
    assert pick_logits(out, key).shape == (2, 3)


@pytest.mark.parametrize(
    "out, key, words",
    [
        ({"scores": torch.ones(2, 3)}, None, "say which part is the logits"),
        ((torch.ones(2, 3),), "3", "out of range"),
        ({"logits": torch.ones(2, 3)}, "scores", "set output: to one of its keys"),
        ({"logits": (torch.ones(2, 3),)}, "logits", "not a logits tensor"),
        (torch.ones(2, 3), "logits", "cannot select"),
    ],
)
def test_a_wrong_output_choice_is_one_line(out, key, words):
    with pytest.raises(ConfigError, match=words):
        infer_output(out) if key is None else pick_logits(out, key)


def test_an_adapted_model_keeps_its_class_name_weights_and_copies():
    import copy

    sys.path.insert(0, str(TESTS))
    try:
        import byo_nets
    finally:
        sys.path.remove(str(TESTS))
    model = byo_nets.build_returning("dict")
    keys = list(model.state_dict())
    adapt_output(model, "logits")
    adapt_output(model, "logits")  # twice is once
    assert type(model).__name__ == "_Returns" and isinstance(model, byo_nets._Returns)
    assert list(model.state_dict()) == keys and output_of(model) == "logits"
    twin = copy.deepcopy(model)
    x = torch.zeros(2, 1, 8, 8)
    assert torch.equal(twin(x), model(x)) and model(x).shape == (2, 10)


def _onnx(path: Path, dims: list, elem: int = 1, inputs: int = 1) -> Path:
    """A real (tiny) ONNX graph: Flatten -> MatMul, its input dims as given."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    names = [f"x{i}" for i in range(inputs)]
    nodes = [
        helper.make_node("Flatten", ["x0"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["y"]),
    ]
    w = numpy_helper.from_array(np.zeros((64, 10), np.float32), "w")
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(n, elem, dims) for n in names],
        [helper.make_tensor_value_info("y", 1, [dims[0], 10])],
        [w],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize(
    "dims, elem, inputs, words",
    [
        ([1, 1, 8, 8], 1, 1, "fixed batch dimension 1"),
        (["batch", 1, 8, 9], 1, 1, "dimension 3: 9 in the file, 8 declared"),
        (["batch", 64], 1, 1, "means [batch, 1, 8, 8]"),
        (["batch", 1, 8, 8], 7, 1, "takes int64"),
        (["batch", 1, 8, 8], 1, 2, "has 2 input(s) ['x0', 'x1']"),
    ],
)
def test_an_onnx_file_is_checked_against_input_before_anything_is_built(
    tmp_path, dims, elem, inputs, words
):
    from modelpress.onnx_inputs import check_onnx_input

    path = _onnx(tmp_path / "m.onnx", dims, elem, inputs)
    with pytest.raises(ConfigError, match=re.escape(words)):
        check_onnx_input(path, (1, 8, 8), "float32", "models.m.onnx")
    check_onnx_input(_onnx(tmp_path / "ok.onnx", ["N", 1, 8, "w"]), (1, 8, 8), "float32", "m")
