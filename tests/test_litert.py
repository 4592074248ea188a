"""The litert target on the real LiteRT interpreter, with models trained on digits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from modelpress.artifact import Artifact
from modelpress.baselines import fit
from modelpress.checkpoint import save_checkpoint, save_trained
from modelpress.data import InputSpec, load_dataset
from modelpress.errors import ArtifactError, BuildError, ConfigError, TargetUnavailable
from modelpress.models import MODELS, create_model
from modelpress.targets import get_target
from modelpress.targets.litert import LiteRTTarget, read_meta
from modelpress.validate import predict_all, validate

BUILDABLE = LiteRTTarget().availability().ok and LiteRTTarget().converter_availability("int8").ok
needs_litert = pytest.mark.skipif(
    not BUILDABLE, reason="needs the LiteRT extra: pip install -e '.[tflite]'"
)
pytestmark = [pytest.mark.tflite, pytest.mark.usefixtures("one_thread")]
EPOCHS = 8  # enough for every family to be well above chance on digits


def view_of(name: str) -> str:
    return "image" if "image" in MODELS[name].input_kinds else "sequence"


@pytest.fixture(scope="session")
def data():
    return {view: load_dataset("digits", view=view) for view in ("image", "sequence")}


@pytest.fixture(scope="session")
def trained(data, tmp_path_factory):
    """name -> (checkpoint artifact, float torch logits on the test split), trained once."""
    root, cache = tmp_path_factory.mktemp("ckpt"), {}

    def get(name: str):
        if name not in cache:
            bundle = data[view_of(name)]
            result = fit(name, bundle, epochs=EPOCHS)
            art = save_trained(root / f"{name}.safetensors", result.model, bundle)
            with torch.no_grad():
                logits = result.model.eval()(torch.from_numpy(bundle.test.x)).numpy()
            cache[name] = (art, logits, result.model)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def built(data, trained, tmp_path_factory):
    """(name, precision, options) -> tflite artifact, built once per session."""
    root, cache = tmp_path_factory.mktemp("tflite"), {}

    def get(name: str, precision: str, **options):
        key = (name, precision, tuple(sorted(options.items())))
        if key not in cache:
            art = trained(name)[0]
            calib = data[view_of(name)].calibration(128, seed=0)
            out = root / "-".join(f"{k}{v}" for k, v in sorted(options.items()))
            cache[key] = LiteRTTarget(**options).build(art, precision, calib, out)
        return cache[key]

    return get


# -- every family x {fp32, int8}: builds, runs on the interpreter, accuracy within 1 point ------


@needs_litert
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("name", list(MODELS))
def test_family_builds_and_keeps_accuracy(name, precision, data, trained, built):
    ckpt, torch_logits, _ = trained(name)
    art = built(name, precision)
    runner = get_target("litert").load(art)
    rec = validate(runner, data[view_of(name)].test, torch_logits)
    assert rec.reference_accuracy > 0.5, "the float model itself did not train"
    assert rec.accuracy_drop <= 1.0, rec
    assert art.format == "tflite" and art.path.suffix == ".tflite" and art.files == (art.path,)
    if precision == "fp32":
        assert rec.agreement == 1.0 and rec.max_abs_diff < 1e-3, rec
    else:
        assert rec.agreement >= 0.97, rec
        quant = art.meta["quantization"]
        assert quant["calib_samples"] == 128 and "PT2E static" in quant["method"]
        if MODELS[name].family == "cnn":
            assert quant["float_ops"] == {}, "a CNN should be full-integer"
        else:  # what stayed float is said, never silently skipped
            assert quant["float_ops"], quant
        assert ("GRU kept in float" in " ".join(quant["notes"])) == (name == "gru")


@needs_litert
@pytest.mark.parametrize("name", list(MODELS))
def test_int8_file_is_smaller_than_fp32(name, built):
    fp32, int8 = built(name, "fp32"), built(name, "int8")
    ratio = int8.size_bytes / fp32.size_bytes
    if MODELS[name].family == "rnn":  # recurrent cells stay float: only the classifier shrinks
        assert ratio < 1.0
    else:
        assert ratio < 0.5, f"{name}: int8 is {ratio:.2f} of fp32"


@needs_litert
def test_fp16_and_dynamic_int8(data, trained, built):
    _, torch_logits, _ = trained("resnet8")
    fp32 = built("resnet8", "fp32")
    sizes = {}
    for precision in ("fp16", "dynamic_int8"):
        art = built("resnet8", precision)
        rec = validate(LiteRTTarget().load(art), data["image"].test, torch_logits)
        assert rec.accuracy_drop <= 1.0 and rec.agreement >= 0.98, (precision, rec)
        sizes[precision] = art.size_bytes
        weights = art.meta["quantization"]["weight_bytes"]
        if precision == "fp16":
            assert rec.max_abs_diff < 0.05, rec
            assert "fp16 weights" in art.meta["quantization"]["method"]
            assert weights["float16"] > weights.get("float32", 0), weights
        else:
            assert weights["int8"] > weights.get("float32", 0), weights
    assert sizes["dynamic_int8"] < sizes["fp16"] < fp32.size_bytes


@needs_litert
def test_int8_io_keeps_the_int8_interface(data, built):
    float_io, int8_io = built("resnet8", "int8"), built("resnet8", "int8", int8_io=True)
    assert float_io.meta["io"]["input"] == {"dtype": "float32"}
    io = int8_io.meta["io"]
    assert io["input"]["dtype"] == "int8" and io["output"]["dtype"] == "int8"
    target = LiteRTTarget()
    runner = target.load(int8_io)
    assert runner.inp["dtype"] == np.int8 and runner.inp["quantization"][0] == io["input"]["scale"]
    x = data["image"].test.x
    a, b = predict_all(target.load(float_io), x), predict_all(runner, x)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.99
    assert np.abs(a - b).max() <= 2 * io["output"]["scale"] + 1e-6  # the same integer graph


@needs_litert
def test_any_batch_size_through_a_fixed_batch_graph(data, trained, tmp_path):
    art, _, model = trained("gru")
    target = LiteRTTarget(batch=4, threads=2)
    built4 = target.build(art, "fp32", None, tmp_path)
    runner = target.load(built4)
    assert runner.batch == 4 and built4.meta["build"]["batch"] == 4
    x = data["sequence"].test.x[:7]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for n in (0, 1, 4, 7):
        out = runner.predict(x[:n])
        assert out.shape == (n, 10) and out.dtype == np.float32
        np.testing.assert_allclose(out, expected[:n], atol=1e-4)


@needs_litert
def test_token_input_runs_as_int32(tmp_path):
    spec = InputSpec("tokens", (12,), "int64")
    torch.manual_seed(0)
    model = create_model("transformer", input_spec=spec, num_classes=3, vocab_size=50).eval()
    labels, prep = ["a", "b", "c"], {"view": "tokens"}
    ckpt = save_checkpoint(
        tmp_path / "tok.safetensors", model, input_spec=spec, labels=labels, preprocessing=prep
    )
    art = LiteRTTarget().build(ckpt, "fp32", None, tmp_path)
    assert art.meta["io"]["input"]["dtype"] == "int32"  # litert-torch downcasts int64
    x = np.random.default_rng(0).integers(0, 50, size=(9, 12))
    x[:, 8:] = 0  # padding, masked out by the model
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(LiteRTTarget().load(art).predict(x), expected, atol=1e-4)


# -- metadata ---------------------------------------------------------------------------------


@needs_litert
def test_metadata_round_trip(trained, built):
    ckpt = trained("lstm")[0]
    art = built("lstm", "int8")
    meta = read_meta(art.path)
    assert meta == dict(art.meta)
    assert meta["input_spec"] == ckpt.meta["input_spec"] and meta["labels"] == ckpt.meta["labels"]
    assert meta["preprocessing"] == ckpt.meta["preprocessing"]
    assert meta["parent_id"] == ckpt.id and meta["id"] == art.id
    assert meta["lineage"][-1] == {"stage": "build", "target": "litert", "precision": "int8"}
    assert meta["toolkit"]["litert-torch"] and len(meta["digest"]) == 64
    weights = meta["quantization"]["weight_bytes"]  # the LSTM cell's weights stay float32
    assert weights["float32"] > weights["int8"] > 0, weights
    again = Artifact.from_dict(art.to_dict())
    assert LiteRTTarget().load(again).predict(np.zeros((2, 8, 8), np.float32)).shape == (2, 10)


# -- bad input ----------------------------------------------------------------------------------


@needs_litert
def test_corrupt_or_foreign_files_are_refused_on_load(built, tmp_path):
    good = built("resnet8", "fp32")
    blob = good.path.read_bytes()
    cases = {
        "truncated": (blob[: len(blob) // 2], "truncated|digest"),
        "flipped": (blob[:5000] + bytes([blob[5000] ^ 0xFF]) + blob[5001:], "digest"),
        "garbage": (b"\x00" * 64, "not a TFLite"),
        "empty": (b"", "not a TFLite"),
    }
    target = LiteRTTarget()
    for name, (content, pattern) in cases.items():
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(content)
        with pytest.raises(ArtifactError, match=pattern):
            target.load(Artifact(path=path, format="tflite", id="x"))
    with pytest.raises(ArtifactError, match="does not exist"):
        target.load(Artifact(path=tmp_path / "missing.tflite", format="tflite", id="x"))


@needs_litert
def test_a_graph_without_modelpress_metadata_is_refused(tmp_path):
    from modelpress.targets import litert_quant

    spec = InputSpec("image", (1, 8, 8), "float32")
    model = create_model("resnet8", input_spec=spec, num_classes=10)
    content, _ = litert_quant.convert(model, spec, "fp32", None)
    (tmp_path / "raw.tflite").write_bytes(content)
    with pytest.raises(ArtifactError, match="no modelpress metadata"):
        read_meta(tmp_path / "raw.tflite")


@needs_litert
def test_predict_rejects_wrong_shape_and_dtype(built):
    runner = LiteRTTarget().load(built("resnet8", "fp32"))
    with pytest.raises(ConfigError, match="shape"):
        runner.predict(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ConfigError, match="shape"):
        runner.predict(np.zeros((2, 1, 9, 8), np.float32))
    with pytest.raises(ConfigError, match="dtype"):
        runner.predict(np.zeros((2, 1, 8, 8), np.int64))
    with pytest.raises(ConfigError, match="numpy"):
        runner.predict([[0.0]])
    assert runner.predict(np.zeros((3, 1, 8, 8), np.float64)).shape == (3, 10)


class BesselNet(torch.nn.Module):
    """A model with an op litert-torch has no lowering for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x).flatten(1)[:, :10]


@needs_litert
def test_an_op_the_converter_cannot_take_is_a_build_error_naming_it():
    from modelpress.targets import litert_quant

    spec = InputSpec("image", (1, 8, 8), "float32")
    with pytest.raises(BuildError, match=r"litert.*aten\.special_bessel_j0"):
        litert_quant.convert(BesselNet(), spec, "fp32", None)


@needs_litert
def test_build_checks_precision_format_and_calibration(trained, built, data, tmp_path):
    art = trained("resnet8")[0]
    target = LiteRTTarget()
    with pytest.raises(ConfigError, match="precision 'int4'"):
        target.build(art, "int4", None, tmp_path)
    with pytest.raises(ConfigError, match="calibration"):
        target.build(art, "int8", None, tmp_path)
    with pytest.raises(ConfigError, match="does not match the model input"):
        target.build(art, "int8", data["sequence"].calibration(16), tmp_path)
    with pytest.raises(ConfigError, match="torch checkpoint"):
        target.build(built("resnet8", "fp32"), "fp32", None, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize(
    "options", [{"threads": 0}, {"batch": 0}, {"runtime": "tflite"}, {"calib_size": -1}]
)
def test_bad_options_are_config_errors(options):
    with pytest.raises(ConfigError):
        LiteRTTarget(**options)


def test_missing_runtime_names_the_extra(monkeypatch, tmp_path):
    for module in ("ai_edge_litert", "tflite_runtime"):
        monkeypatch.setitem(sys.modules, module, None)  # import of it now fails
    target = LiteRTTarget()
    avail = target.availability()
    assert not avail.ok and avail.extra == "tflite"
    with pytest.raises(TargetUnavailable, match=r"pip install 'modelpress\[tflite\]'"):
        target.load(Artifact(path=tmp_path / "m.tflite", format="tflite", id="x"))


def test_missing_converter_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    art = Artifact(path=tmp_path / "m.safetensors", format="torch", id="x")
    with pytest.raises(TargetUnavailable, match=r"litert-torch.*modelpress\[tflite\]"):
        LiteRTTarget().build(art, "fp32", None, tmp_path)


@pytest.mark.skipif(
    LiteRTTarget(runtime="tflite_runtime").availability().ok,
    reason="tflite_runtime is installed here",
)
def test_asking_for_tflite_runtime_where_it_is_missing(tmp_path):
    target = LiteRTTarget(runtime="tflite_runtime")
    assert "tflite-runtime" in target.availability().reason
    with pytest.raises(TargetUnavailable, match="tflite_runtime is not installed"):
        target.load(Artifact(path=tmp_path / "m.tflite", format="tflite", id="x"))
    info = target.describe()  # describes, does not raise: a report can say why
    assert info.runtime == "none" and "unavailable" in info.details["available"]


@needs_litert
def test_describe_reports_runtime_versions_and_threads():
    from importlib.metadata import version

    info = LiteRTTarget(threads=2).describe()
    assert info.runtime == "ai_edge_litert" and info.version == version("ai-edge-litert")
    assert info.threads == 2 and "XNNPACK" in info.device
    assert info.details["converter"] == f"litert-torch {version('litert-torch')}"


def test_importing_the_target_pulls_in_no_runtime():
    code = (
        "import sys, modelpress.targets.litert\n"
        "print([m for m in ('ai_edge_litert', 'litert_torch', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# -- localisation ------------------------------------------------------------------------------


def make_fragile(model: torch.nn.Module, block: int = 2) -> None:
    """One depthwise channel outputs a constant 1e4 that the next (pointwise) conv ignores.

    The channel chosen is the one the pointwise conv weighs least, so the float model barely
    changes; but per-tensor int8 activations after that depthwise conv must now span [0, 1e4],
    so every other channel quantizes to zero.
    """
    pointwise = model.blocks[block].pointwise[0]
    channel = int(pointwise.weight.detach().abs().sum(dim=(0, 2, 3)).argmin())
    with torch.no_grad():
        bn = model.blocks[block].depthwise[1]
        bn.weight[channel], bn.bias[channel] = 0.0, 1e4
        pointwise.weight[:, channel] = 0.0


@needs_litert
def test_localisation_names_the_layer_made_fragile(data, trained, built, tmp_path):
    from modelpress.targets.litert_debug import validate_artifact

    bundle = data["image"]
    healthy, torch_logits, model = trained("mobilenet")
    rec, report = validate_artifact(built("mobilenet", "int8"), healthy, bundle.test)
    assert report is None and rec.accuracy_drop <= 1.0  # nothing to localise

    fragile = create_model("mobilenet", input_spec=bundle.input_spec)
    fragile.load_state_dict(model.state_dict())
    make_fragile(fragile.eval())
    with torch.no_grad():
        fragile_logits = fragile(torch.from_numpy(bundle.test.x)).numpy()
    healthy_acc = (torch_logits.argmax(1) == bundle.test.y).mean()
    assert (fragile_logits.argmax(1) == bundle.test.y).mean() >= healthy_acc - 0.02  # float is fine
    ckpt = save_trained(tmp_path / "fragile.safetensors", fragile, bundle)
    art = LiteRTTarget().build(ckpt, "int8", bundle.calibration(128, seed=0), tmp_path)

    rec, report = validate_artifact(art, ckpt, bundle.test)
    assert rec.accuracy_drop > 20.0, rec  # validation on the interpreter catches it
    assert report is not None and report.target == "litert" and report.precision == "int8"
    worst = report.worst(1)[0]
    assert worst.layer in ("blocks.2.depthwise.0", "blocks.2.pointwise.0"), report.summary()
    assert worst.sqnr_drop_db > 30.0 and worst.sqnr_db < 10.0, worst
    others = [d.sqnr_drop_db for d in report.layers if d is not worst]
    assert max(others) < 20.0, report.to_dict()["layers"][:3]
    assert worst.layer in report.summary()


@needs_litert
def test_localize_refuses_a_checkpoint_the_artifact_was_not_built_from(trained, built, data):
    from modelpress.targets.litert_debug import localize

    with pytest.raises(ConfigError, match="not the checkpoint"):
        localize(trained("resnet8")[0], built("mobilenet", "int8"), data["image"].test.x[:8])


@needs_litert
@pytest.mark.parametrize("name", ["vit", "gru"])
def test_localisation_of_a_healthy_model_finds_no_collapse(name, data, built):
    """Attention / RNN graphs differ from their fp32 twin op for op (LayerNorm affine unfolded,
    reshapes moved): pairing must not invent a collapse where there is none."""
    from modelpress.targets.litert_debug import localize

    x = data[view_of(name)].test.x[:32]
    report = localize(built(name, "fp32"), built(name, "int8"), x)
    compute = [d for d in report.layers if d.op not in ("QUANTIZE", "DEQUANTIZE")]
    assert len(compute) >= 20, report.notes
    assert max(d.sqnr_drop_db for d in report.layers) < 20.0, report.to_dict()["layers"][:3]


@needs_litert
def test_dynamic_int8_embedding_table_loads(tmp_path):
    """litert-torch's dynamic int8 stores an embedding table with a non-zero zero point, which
    LiteRT's EMBEDDING_LOOKUP refuses to prepare; the build re-quantizes it symmetric."""
    pytest.importorskip("transformers", reason="the zoo needs the tflite extra (transformers)")
    from modelpress.factory import allow_factory, build_from_factory
    from modelpress.model_io import adapt_output

    allow_factory("zoo_nets:build_bert")
    torch.manual_seed(0)
    model = adapt_output(build_from_factory("zoo_nets:build_bert", {}), "logits").eval()
    spec = InputSpec("tokens", (16,), "int64")
    ckpt = save_checkpoint(
        tmp_path / "b.safetensors", model, input_spec=spec, labels=["0", "1"], preprocessing={}
    )
    art = LiteRTTarget().build(ckpt, "dynamic_int8", None, tmp_path / "out")
    notes = art.meta["quantization"]["notes"]
    assert any("re-quantized with zero point 0" in n for n in notes), notes
    x = np.random.default_rng(0).integers(1, 60, (4, 16))
    out = LiteRTTarget().load(art).predict(x)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()
