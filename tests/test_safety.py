"""Nothing unsafe gets in: crafted names, recipe folders, ONNX files and engine files.

- a checkpoint whose model name is a path (``../../evil``, an absolute path, NUL, separators)
  never makes a target write outside its output folder;
- a recipe folder is appended to ``sys.path`` only for a ``factory:`` model, so a ``json.py``,
  ``torch.py`` or ``onnxruntime.py`` kept there never shadows the installed package;
- an ONNX file whose external data points outside its folder is refused before anything reads it;
- a TensorRT engine and its JSON sidecar carry a digest: an edited or swapped one is refused.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelpress.artifact import Artifact
from modelpress.errors import ArtifactError, CheckpointError
from modelpress.targets.base import artifact_stem, safe_stem

SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


# -- 1. names that become paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../evil", "/etc/x", "a\x00b", "sub/dir\\x", "..", ".", "", ".hidden", "-rf", "x" * 300],
    ids=[
        "dotdot",
        "absolute",
        "nul",
        "separators",
        "parent",
        "self",
        "empty",
        "hidden",
        "dash",
        "long",
    ],
)
def test_safe_stem_is_one_plain_file_name(name):
    stem = safe_stem(name)
    assert stem and set(stem) <= SAFE and len(stem) <= 64
    assert not stem.startswith((".", "-")) and stem not in (".", "..")
    out = Path("/out")
    assert (out / f"{stem}.fp32.onnx").parent == out


def test_artifact_stem_sanitises_the_model_name():
    art = Artifact(Path("m.safetensors"), "torch", "i", {"model": {"name": "../../etc/passwd"}})
    assert artifact_stem(art) == "etc_passwd"
    assert artifact_stem(Artifact(Path("resnet8.safetensors"), "torch", "i", {})) == "resnet8"
    assert artifact_stem(Artifact(Path("x.onnx"), "onnx", "i", {"model": "junk"})) == "x"


def _factory_module(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            """\
            from torch import nn

            def build_model(width: int = 4):
                return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
            """
        )
    )


@pytest.fixture
def clean_imports(monkeypatch):
    """Restore sys.path and forget the test's factory modules afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for mod in set(sys.modules) - before:
        if mod.startswith("safety_nets"):
            del sys.modules[mod]


def _checkpoint(path: Path, module: str, label: str, data) -> Artifact:
    from modelpress.checkpoint import save_trained
    from modelpress.factory import allow_factory, build_from_factory

    allow_factory(f"{module}:build_model")
    model = build_from_factory(f"{module}:build_model", {"width": 4})
    model.modelpress_label = label
    return save_trained(path, model, data)


def test_edited_model_name_fails_the_checkpoint_digest(tmp_path, digits_image, clean_imports):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from modelpress.checkpoint import load_checkpoint

    _factory_module(tmp_path / "nets", "safety_nets_a")
    sys.path.append(str(tmp_path / "nets"))
    art = _checkpoint(tmp_path / "m.safetensors", "safety_nets_a", "fine", digits_image)
    with safe_open(str(art.path), framework="pt") as fh:
        header = json.loads(fh.metadata()["modelpress"])
    header["model"]["name"] = "../../evil"
    save_file(load_file(str(art.path)), str(art.path), metadata={"modelpress": json.dumps(header)})
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(art.path)


def test_crafted_model_names_never_write_outside_the_out_folder(
    tmp_path, digits_image, clean_imports, one_thread
):
    """A name is stored and digested with the checkpoint (the API writes any label), so the
    target, the pass output and the bench CLI must make it safe themselves."""
    from modelpress.checkpoint import load_checkpoint
    from modelpress.compress.base import PassContext, save_pass_output
    from modelpress.measure.bench import jobs_from_args
    from modelpress.targets.onnxruntime import OnnxRuntimeTarget

    _factory_module(tmp_path / "nets", "safety_nets_b")
    sys.path.append(str(tmp_path / "nets"))
    importlib.import_module("safety_nets_b")  # its __pycache__ is written before the snapshot
    out = tmp_path / "a" / "b" / "out"
    names = ["../../evil", str(tmp_path / "outside" / "evil"), "sub/../../x\\y"]
    before = {p for p in tmp_path.rglob("*")}
    for i, name in enumerate(names):
        ckpt = _checkpoint(tmp_path / f"c{i}.safetensors", "safety_nets_b", name, digits_image)
        before.add(ckpt.path)
        assert load_checkpoint(ckpt.path).meta.model.name == name  # the crafted name is in
        built = OnnxRuntimeTarget(threads=1).build(ckpt, "fp32", None, out / "ort")
        assert built.path.parent == out / "ort" and set(built.path.name) <= SAFE
        parent = load_checkpoint(ckpt.path)
        ctx = PassContext(data=digits_image, out_dir=out / "pass")
        saved = save_pass_output(parent.model, parent, ctx, "prune", {})
        assert saved.path.parent == out / "pass"
    args = argparse.Namespace(
        checkpoints=[ckpt.path], threads=None, no_validate=False, targets="onnxruntime",
        precisions="fp32", inject_slowdown={},
    )  # fmt: skip
    (job,) = jobs_from_args(args, out / "bench")
    assert job.build_dir.resolve().is_relative_to((out / "bench").resolve())
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert written and all(p.resolve().is_relative_to(out.resolve()) for p in written), sorted(
        str(p) for p in written if not p.resolve().is_relative_to(out.resolve())
    )


# -- 2. the recipe folder on sys.path ---------------------------------------------------------

SHADOW = """\
import pathlib
pathlib.Path(__file__).with_suffix(".imported").write_text("shadowed")
raise RuntimeError("the recipe folder's {name}.py shadowed the installed {name}")
"""


def _hostile_folder(folder: Path, module: str) -> Path:
    """A recipe folder with a factory module and files named like installed packages."""
    _factory_module(folder, module)
    for name in ("json", "torch", "onnxruntime", "numpy"):
        (folder / f"{name}.py").write_text(SHADOW.format(name=name))
    return folder


def _origin(module: str) -> str:
    """Where a fresh import of ``module`` would come from on the current sys.path."""
    spec = importlib.machinery.PathFinder.find_spec(module, sys.path)
    return str(spec.origin) if spec is not None else ""


def _recipe(folder: Path, models: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(
        "name: safety\ndata: {name: digits, calibration: 32}\n"
        f"models:\n{textwrap.indent(textwrap.dedent(models), '  ')}"
        "targets:\n  onnxruntime: {precisions: [fp32]}\n"
    )
    return path


def _pipeline(recipe: Path, out: Path):
    from modelpress.run.pipeline import Pipeline
    from modelpress.run.recipe_checks import load_recipe

    return Pipeline(load_recipe(recipe)[0], recipe, out, log=lambda s: None)


def test_factory_recipe_folder_is_appended_and_shadows_nothing(tmp_path, clean_imports):
    folder = _hostile_folder(tmp_path / "recipe", "safety_nets_c")
    recipe = _recipe(
        folder,
        """\
        mine:
          factory: safety_nets_c:build_model
          kwargs: {width: 4}
          input: {kind: image, shape: [1, 8, 8]}
        """,
    )
    pipe = _pipeline(recipe, tmp_path / "out")
    run = pipe.model("mine")  # bring-your-own import: builds, checks and saves the factory model
    assert Path(run.baseline.path).is_file()
    assert sys.path[-1] == str(folder.resolve()) and str(folder.resolve()) not in sys.path[:-1]
    for name in ("json", "torch", "onnxruntime", "numpy"):
        assert not _origin(name).startswith(str(folder.resolve())), name
    assert not list(folder.glob("*.imported"))
    assert pipe.trust == {"pythonpath": [str(folder.resolve())], "factories": [
        "safety_nets_c:build_model"
    ]}  # fmt: skip


def test_recipe_without_factory_leaves_sys_path_alone(tmp_path, clean_imports):
    folder = _hostile_folder(tmp_path / "recipe", "safety_nets_d")
    _tiny_onnx(folder / "m.onnx")
    recipe = _recipe(folder, "mine: {onnx: m.onnx, input: {kind: image, shape: [1, 8, 8]}}\n")
    pipe = _pipeline(recipe, tmp_path / "out")
    path_before = list(sys.path)
    pipe.model("mine")
    assert sys.path == path_before
    assert pipe.trust == {"pythonpath": [], "factories": []}
    from modelpress.measure.worker import trust

    trust({"pythonpath": [str(folder)], "factories": []})  # nothing to import: nothing added
    assert sys.path == path_before


def test_bench_worker_imports_real_packages_and_the_factory(tmp_path, digits_image, clean_imports):
    """A fresh worker process (as the run starts one) builds a factory checkpoint on ONNX Runtime
    while the recipe folder holds a torch.py and an onnxruntime.py that raise when imported."""
    folder = _hostile_folder(tmp_path / "recipe", "safety_nets_e")
    sys.path.append(str(folder))
    ckpt = _checkpoint(tmp_path / "e.safetensors", "safety_nets_e", "mine", digits_image)
    job = {
        "mode": "build",
        "artifact": ckpt.to_dict(),
        "target": "onnxruntime",
        "target_options": {"threads": 1},
        "precision": "fp32",
        "out_dir": str(tmp_path / "built"),
        "pythonpath": [str(folder.resolve())],
        "factories": ["safety_nets_e:build_model"],
    }
    job_file, out_file = tmp_path / "job.json", tmp_path / "out.json"
    job_file.write_text(json.dumps(job))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "modelpress.measure.worker", str(job_file), str(out_file)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
    )
    result = json.loads(out_file.read_text())
    assert result["status"] == "ok", (result, proc.stderr[-2000:])
    assert Path(result["artifact"]["path"]).is_file()
    assert not list(folder.glob("*.imported")), proc.stderr[-2000:]


# -- 3. ONNX external data ---------------------------------------------------------------------


def _tiny_proto():
    """Flatten + Gemm: (B, 1, 8, 8) -> (B, 10) logits, weights as initializers."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((10, 64)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto, w, b


def _tiny_onnx(path: Path, location: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Write the tiny model; with ``location``, its weights go to that external data file."""
    import onnx

    proto, w, b = _tiny_proto()
    path.parent.mkdir(parents=True, exist_ok=True)
    if location is not None:
        (path.parent / location).parent.mkdir(parents=True, exist_ok=True)
    if location is None:
        onnx.save_model(proto, str(path))
    else:
        onnx.save_model(
            proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
            location=location, size_threshold=0,
        )  # fmt: skip
    return w, b


def _point_weights_at(path: Path, location: str) -> None:
    """Rewrite the external-data location of every initializer (what an attacker would ship)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for init in proto.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(proto.SerializeToString())


def _evil_models(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "secret.bin").write_bytes(np.zeros(650, np.float32).tobytes())  # readable bait
    models = {}
    for key, location in {
        "dotdot": "../secret.bin",
        "absolute": "/etc/passwd",
        "nested": "sub/../../secret.bin",
    }.items():
        path = tmp_path / key / "model.onnx"
        _tiny_onnx(path, "w.bin")
        _point_weights_at(path, location)
        models[key] = path
    link = tmp_path / "link" / "model.onnx"
    _tiny_onnx(link, "w.bin")
    (link.parent / "w.bin").unlink()
    (link.parent / "w.bin").symlink_to(tmp_path / "secret.bin")  # a link out of the folder
    models["symlink"] = link
    return models


def _meta(data) -> dict:
    return {"model": {"name": "tiny"}, "input_spec": data.input_spec.to_dict()}


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "nested", "symlink"])
def test_external_data_outside_the_folder_is_refused(kind, tmp_path, digits_image):
    from modelpress.export import check_external_data, copy_onnx, onnx_files
    from modelpress.targets.onnxruntime import OnnxRuntimeTarget

    path = _evil_models(tmp_path)[kind]
    expected = {"dotdot": "../secret.bin", "absolute": "/etc/passwd"}.get(kind, "")
    pattern = rf"ONNX model {re.escape(str(path))}: tensor '\w+' has external data location "
    pattern += re.escape(f"'{expected}")
    for reader in (check_external_data, onnx_files, lambda p: copy_onnx(p, tmp_path / "c.onnx")):
        with pytest.raises(ArtifactError, match=pattern):
            reader(path)
    assert not (tmp_path / "c.onnx").exists()
    target = OnnxRuntimeTarget(threads=1)
    art = Artifact(path, "onnx", "evil", _meta(digits_image), (path,))
    with pytest.raises(ArtifactError, match=pattern):
        target.load(art)
    with pytest.raises(ArtifactError, match=pattern):
        target.build(art, "fp32", None, tmp_path / "built")


def test_recipe_onnx_with_external_data_outside_is_refused(tmp_path):
    folder = tmp_path / "recipe"
    _tiny_onnx(folder / "m.onnx", "w.bin")
    _point_weights_at(folder / "m.onnx", "../secret.bin")
    (tmp_path / "secret.bin").write_bytes(np.zeros(650, np.float32).tobytes())
    recipe = _recipe(folder, "mine: {onnx: m.onnx, input: {kind: image, shape: [1, 8, 8]}}\n")
    pipe = _pipeline(recipe, tmp_path / "out")
    with pytest.raises(ArtifactError, match=r"m\.onnx: .*'\.\./secret\.bin'"):
        pipe.model("mine")


@pytest.mark.parametrize("location", ["w.bin", "weights/w.bin"])
def test_legit_external_data_loads_builds_and_imports(location, tmp_path, digits_image):
    from modelpress.export import check_external_data
    from modelpress.targets.onnxruntime import OnnxRuntimeTarget

    path = tmp_path / "user" / "model.onnx"
    w, b = _tiny_onnx(path, location)
    assert check_external_data(path) == [location, location]
    x = digits_image.test.x[:16]
    want = x.reshape(len(x), -1) @ w.T + b
    art = Artifact(path, "onnx", "legit", _meta(digits_image), (path,))
    target = OnnxRuntimeTarget(threads=1)
    np.testing.assert_allclose(target.load(art).predict(x), want, rtol=1e-4, atol=1e-4)
    built = target.build(art, "fp32", None, tmp_path / "built")
    assert [f.relative_to(built.path.parent).as_posix() for f in built.files[1:]] == [location]
    np.testing.assert_allclose(target.load(built).predict(x), want, rtol=1e-4, atol=1e-4)
    recipe = _recipe(
        path.parent, "mine: {onnx: model.onnx, input: {kind: image, shape: [1, 8, 8]}}\n"
    )
    imported = _pipeline(recipe, tmp_path / "out").model("mine").baseline
    assert len(imported.files) == 2 and all(Path(f).is_file() for f in imported.files)


# -- 4. the TensorRT engine's sidecar ----------------------------------------------------------

ENGINE = bytes(range(256)) * 40  # stands for a serialized engine: the file format is ours


def _engine(tmp_path: Path, engine: bytes = ENGINE, precision: str = "fp16") -> Path:
    from modelpress.targets.tensorrt import write_engine

    meta = {"model": {"name": "m"}, "precision": precision, "input_spec": {"shape": [1, 8, 8]}}
    dest = tmp_path / f"m.{precision}.engine"
    assert write_engine(dest, engine, meta) == (dest, dest.with_name(dest.name + ".json"))
    return dest


def test_engine_and_sidecar_round_trip(tmp_path):
    from modelpress.targets.tensorrt import read_engine, read_engine_meta

    dest = _engine(tmp_path)
    engine, meta = read_engine(dest)
    assert engine == ENGINE and meta["precision"] == "fp16" and len(meta["digest"]) == 64
    assert read_engine_meta(dest) == meta
    assert json.loads(dest.with_name(dest.name + ".json").read_text()) == meta


def _flip_engine_byte(dest: Path) -> None:
    data = bytearray(dest.read_bytes())
    data[1000] ^= 0xFF
    dest.write_bytes(bytes(data))


def _edit_sidecar(dest: Path) -> None:
    side = dest.with_name(dest.name + ".json")
    side.write_text(side.read_text().replace('"fp16"', '"fp32"'))


def _swap_engine(dest: Path) -> None:
    other = _engine(dest.parent / "other", ENGINE[::-1])
    dest.write_bytes(other.read_bytes())


def _swap_sidecar(dest: Path) -> None:
    other = _engine(dest.parent / "other", ENGINE[::-1])
    side = dest.with_name(dest.name + ".json")
    side.write_bytes(other.with_name(other.name + ".json").read_bytes())


TAMPERING = {
    "engine-byte": (_flip_engine_byte, "digest check"),
    "engine-truncated": (lambda d: d.write_bytes(d.read_bytes()[:500]), "digest check"),
    "engine-swapped": (_swap_engine, "digest check"),
    "sidecar-edited": (_edit_sidecar, "digest check"),
    "sidecar-swapped": (_swap_sidecar, "digest check"),
    "sidecar-digest-removed": (
        lambda d: d.with_name(d.name + ".json").write_text('{"precision": "fp16"}'),
        "digest check",
    ),
    "sidecar-not-json": (lambda d: d.with_name(d.name + ".json").write_text("{oops"), "JSON"),
    "sidecar-missing": (lambda d: d.with_name(d.name + ".json").unlink(), "is missing"),
    "engine-missing": (lambda d: d.unlink(), "does not exist"),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_tampered_engine_or_sidecar_is_refused(how, tmp_path):
    from modelpress.targets.tensorrt import read_engine

    dest = _engine(tmp_path)
    tamper, message = TAMPERING[how]
    tamper(dest)
    with pytest.raises(ArtifactError, match=message) as info:
        read_engine(dest)
    assert "\n" not in str(info.value)
