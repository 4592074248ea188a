"""Models with several inputs (``input_ids`` + ``attention_mask``) derived from the data's one
array: export with a dynamic sequence axis, every runtime feeds every input (issue 10)."""

import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from modelpress.artifact import Artifact
from modelpress.data.base import InputSpec
from modelpress.errors import ConfigError
from modelpress.export import export_onnx
from modelpress.feeds import numpy_feeds
from modelpress.model_io import adapt_output, inputs_of, output_of
from modelpress.targets.litert import LiteRTRunner, LiteRTTarget
from modelpress.targets.onnxruntime import OnnxRuntimeTarget

TESTS = Path(__file__).parent
NAMES = ("input_ids", "attention_mask")
SPEC = InputSpec("tokens", (16,), "int64", names=NAMES)
LITERT = LiteRTTarget().availability().ok and LiteRTTarget().converter_availability("int8").ok
needs_litert = pytest.mark.skipif(not LITERT, reason="needs the LiteRT extra (.[tflite])")


def _nets():
    sys.path.insert(0, str(TESTS))
    try:
        import multi_input_nets
    finally:
        sys.path.remove(str(TESTS))
    return multi_input_nets


def tokens(n: int, length: int = 16, seed: int = 0) -> np.ndarray:
    """Token ids with <pad> (0) tails of different lengths: the mask matters on every row."""
    rng = np.random.default_rng(seed)
    x = rng.integers(2, 64, (n, length), dtype=np.int64)
    for i in range(n):
        x[i, length // 2 + i % (length // 2) :] = 0
    return x


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module", params=["plain", "bert"])
def model(request):
    nets = _nets()
    if request.param == "plain":
        return adapt_output(nets.build_plain(), None, NAMES).eval()
    return adapt_output(nets.build_bert(), "logits", NAMES).eval()  # it returns a ModelOutput


@pytest.fixture(scope="module")
def onnx_art(model, tmp_path_factory) -> Artifact:
    dest = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(model, SPEC, dest, {"input_spec": SPEC.to_dict()})


def test_the_adapted_model_derives_its_mask_from_the_tokens(model):
    x = torch.from_numpy(tokens(4))
    assert inputs_of(model) == NAMES
    with torch.no_grad():
        derived = model(x)
        given = model(x, attention_mask=(x != 0).long())
        ones = model(x, attention_mask=torch.ones_like(x))
    assert torch.equal(derived, given) and derived.shape == (4, 2)
    assert not torch.allclose(derived, ones, atol=1e-4)  # the mask changes the logits


def test_torch_export_of_the_tokens_alone_derives_the_mask_in_the_graph(model):
    """What QAT's capture (and any ``torch.export(model, (x,))``) does: x alone binds."""
    x = torch.from_numpy(tokens(3))
    graph = torch.export.export(model, (x,)).module()
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), atol=1e-5, rtol=1e-5)


def test_onnx_has_both_inputs_with_dynamic_batch_and_sequence(model, onnx_art):
    import onnxruntime as ort

    graph = onnx.load(str(onnx_art.path)).graph
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in graph.input
    }
    assert list(dims) == list(NAMES)
    assert all(isinstance(d, str) for dim in dims.values() for d in dim), dims  # all symbolic
    session = ort.InferenceSession(str(onnx_art.path), providers=["CPUExecutionProvider"])
    for length in (16, 9):  # the declared length, and a shorter sequence
        x = tokens(5, length, seed=length)
        out = session.run(None, numpy_feeds(x, NAMES))[0]
        np.testing.assert_allclose(out, torch_logits(model, x), atol=1e-4)


def test_the_ort_runner_feeds_the_derived_mask(model, onnx_art):
    import onnxruntime as ort

    x = tokens(7)
    runner = OnnxRuntimeTarget(threads=1).load(onnx_art)
    assert runner.input_names == list(NAMES)
    out = runner.predict(x)
    np.testing.assert_allclose(out, torch_logits(model, x), atol=1e-4)
    session = ort.InferenceSession(str(onnx_art.path), providers=["CPUExecutionProvider"])
    ones = session.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})[0]
    assert np.abs(ones - out).max() > 1e-3  # a runner that dropped the mask would be caught


@pytest.mark.parametrize("precision", ["int8", "dynamic_int8"])
def test_ort_int8_calibrates_and_runs_with_every_input(model, onnx_art, tmp_path, precision):
    target = OnnxRuntimeTarget(threads=1)
    built = target.build(onnx_art, precision, tokens(64, seed=1), tmp_path)
    runner = target.load(built)
    assert runner.input_names == list(NAMES)
    x = tokens(32, seed=3)
    out, ref = runner.predict(x), torch_logits(model, x)
    assert np.abs(out - ref).max() < 0.5 * np.abs(ref).max(), (out[:3], ref[:3])
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.75


@needs_litert
def test_litert_takes_both_inputs(model, tmp_path):
    from modelpress.targets import litert_quant

    data, _ = litert_quant.convert(model, SPEC, "fp32", None)
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    interpreter = LiteRTTarget().interpreter(path)
    details = interpreter.get_input_details()
    assert len(details) == 2 and all(np.dtype(d["dtype"]).kind == "i" for d in details)
    runner = LiteRTRunner(interpreter, SPEC, {})
    x = tokens(5)
    out = runner.predict(x)
    np.testing.assert_allclose(out, torch_logits(model, x), atol=1e-3)
    # set the mask to all ones by hand: the logits move, so the runner really feeds the mask
    mask = next(d for d in details if d["name"].endswith("attention_mask"))
    ids = next(d for d in details if d is not mask)
    interpreter.set_tensor(ids["index"], x[:1].astype(ids["dtype"]))
    interpreter.set_tensor(mask["index"], np.ones((1, 16), mask["dtype"]))
    interpreter.invoke()
    ones = interpreter.get_tensor(runner.out["index"])
    assert np.abs(ones - out[:1]).max() > 1e-3


@needs_litert
def test_litert_int8_takes_both_inputs(tmp_path):
    from modelpress.targets import litert_quant

    model = adapt_output(_nets().build_plain(), None, NAMES).eval()
    calib = tokens(64, seed=1)
    data, quant = litert_quant.convert(model, SPEC, "int8", calib)
    data, io = litert_quant.set_interface(data, float_io=True)
    path = tmp_path / "model.int8.tflite"
    path.write_bytes(data)
    assert quant["calib_samples"] == 64 and io["output"]["dtype"] == "float32"
    runner = LiteRTRunner(LiteRTTarget().interpreter(path), SPEC, {})
    x = tokens(16, seed=2)
    out, ref = runner.predict(x), torch_logits(model, x)
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max() + 0.05


def test_a_checkpoint_reload_reapplies_the_inputs(tmp_path):
    from modelpress.checkpoint import load_checkpoint, save_checkpoint
    from modelpress.factory import add_factory_folder, allow_factory, build_from_factory

    add_factory_folder(TESTS)
    allow_factory("multi_input_nets:build_bert")
    model = adapt_output(build_from_factory("multi_input_nets:build_bert", {}), "logits", NAMES)
    path = tmp_path / "bert.safetensors"
    save_checkpoint(path, model, input_spec=SPEC, labels=["neg", "pos"], preprocessing={})
    ckpt = load_checkpoint(path)
    assert ckpt.input_spec == SPEC and ckpt.meta.input_spec["names"] == list(NAMES)
    assert inputs_of(ckpt.model) == NAMES and output_of(ckpt.model) == "logits"
    x = tokens(3)
    np.testing.assert_allclose(torch_logits(ckpt.model, x), torch_logits(model, x), atol=1e-6)


def test_a_one_input_spec_reads_and_writes_as_before():
    old = {"kind": "tokens", "shape": [16], "dtype": "int64"}
    assert InputSpec.from_dict(old).to_dict() == old and InputSpec.from_dict(old).names == ()
    assert InputSpec.from_dict(SPEC.to_dict()) == SPEC


@pytest.mark.parametrize(
    "names, words",
    [
        (["input_ids", "segment_ids"], "'segment_ids' cannot be derived"),
        (["input_ids", "input_ids"], "distinct"),
        (["input ids"], "identifiers"),
    ],
)
def test_unknown_input_names_are_one_line_errors(tmp_path, names, words):
    from modelpress.run.recipe import RecipeError
    from modelpress.run.recipe_checks import load_recipe

    with pytest.raises(ConfigError, match=words):
        InputSpec("tokens", (16,), "int64", names=tuple(names))
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "models:\n  m:\n    factory: 'multi_input_nets:build_plain'\n"
        f"    input: {{kind: tokens, shape: [16], dtype: int64, names: {names}}}\n"
    )
    with pytest.raises(RecipeError, match=words) as err:
        load_recipe(path)
    message = str(err.value)
    assert "\n" not in message and ":4:" in message and "models.m.input" in message
    if "derived" in words:
        assert "attention_mask" in message and "token_type_ids" in message


def test_derived_inputs_need_token_input():
    with pytest.raises(ConfigError, match="token inputs"):
        InputSpec("image", (1, 8, 8), "float32", names=("pixels", "attention_mask"))


# --- the whole run: a recipe with a two-input factory model on a text CSV ---------------------

CSV = "label,text\n" + "".join(
    f"{'pos' if i % 2 else 'neg'},"
    + " ".join(["a great film" if i % 2 else "a dull plot"] + [f"w{j}" for j in range(i % 9)])
    + "\n"
    for i in range(60)
)

RECIPE = """\
name: multi
data: {name: text, root: ROOT, max_len: 16, vocab_size: 64, calibration: 32}
models:
  two:
    factory: "multi_input_nets:build_plain"
    input: {kind: tokens, shape: [16], dtype: int64, names: [input_ids, attention_mask]}
  file:  # the same model as a user's two-input .onnx file
    onnx: two.onnx
    input: {kind: tokens, shape: [16], dtype: int64, names: [input_ids, attention_mask]}
    targets: {onnxruntime: {precisions: [fp32, int8]}}
targets:
  onnxruntime: {precisions: [fp32, int8]}  # dynamic_int8, LiteRT: the unit tests above
benchmark: {batch_sizes: [1], min_calls: 3, min_seconds: 0.0, warmup_calls: 1}
"""


def test_a_two_input_model_and_its_onnx_file_run_through_a_recipe(tmp_path):
    from modelpress.measure.results import load_results
    from modelpress.run import run

    shutil.copy(TESTS / "multi_input_nets.py", tmp_path / "multi_input_nets.py")
    (tmp_path / "reviews.csv").write_text(CSV)
    plain = adapt_output(_nets().build_plain(), None, NAMES)
    export_onnx(plain, SPEC, tmp_path / "two.onnx", {})
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(RECIPE).replace("ROOT", str(tmp_path / "reviews.csv")))
    outcome = run(path, out=tmp_path / "out", log=lambda s: None)
    records = load_results(outcome.results_path).records
    by = {(r.target, r.precision): r for r in records if r.model == "two"}
    wanted = {
        ("onnxruntime", "fp32"),
        ("onnxruntime", "int8"),
    }
    assert wanted <= set(by), sorted(by)
    for key in sorted(wanted):
        assert by[key].status == "ok", (key, by[key].reason)
    for precision in ("fp32", "int8"):  # the .onnx file, fed both inputs by name
        rec = next(r for r in records if (r.model, r.precision) == ("file", precision))
        assert rec.status == "ok", (precision, rec.reason)
    # the float artifacts give the torch model's logits (fed without the mask they would not)
    key = ("onnxruntime", "fp32")
    assert by[key].validation.max_abs_diff < 1e-4, by[key].validation
    onnx_file = next((tmp_path / "out").rglob("*.fp32.onnx"))
    assert [i.name for i in onnx.load(str(onnx_file)).graph.input] == list(NAMES)
