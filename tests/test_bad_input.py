"""Bad input of every kind ends in exit 2 and ONE stderr line naming the file and the key or byte
offset: never a traceback, never a half-written output. An internal error exits 3 and leaves its
traceback in error.log. Cases run in-process through ``modelpress.cli.main``.

The property tests run 30 examples each; ``MODELPRESS_FUZZ_EXAMPLES=1000`` searches deeper.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ENV, latency
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpress import cli
from modelpress.errors import ModelPressError

EXAMPLES = int(os.environ.get("MODELPRESS_FUZZ_EXAMPLES", "30"))  # more for a deeper search
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

RECIPE = """\
name: tiny
data: {name: digits, calibration: 64}
models:
  cnn:
    model: resnet8
    train: {epochs: 1}
    teacher: {model: resnet8, width: 2.0}
  rnn: {model: gru, options: {hidden_size: 16}, passes: [{prune: {ratio: 0.3}}]}
passes:
  - distill: {temperature: 4.0, train: {epochs: 1}}
  - prune: {ratio: 0.3, recovery_epochs: 1}
targets:
  onnxruntime: {precisions: [fp32, int8], threads: 1}
benchmark: {min_calls: 5, min_seconds: 0.1}
search: {prune_ratios: [0.0, 0.5], precisions: [fp32], models: [cnn]}
gates:
  rules:
    - {match: {model: cnn}, min_accuracy: 0.5, max_size: 1 MB}
"""

POLICY = """\
rules:
  - {match: {model: tiny, precision: int8}, min_accuracy: 0.5, max_p90_ms: {1: 50}, max_size: 1 MB}
regression: {tolerance: 0.1, n_boot: 200}
"""


class Reached(ModelPressError):
    """Raised where work would start: the input was valid (exit 99 tells the tests so)."""

    exit_code = 99


def one_error_line(capsys, code: int, *words: str) -> str:
    """The single stderr line of an exit-2 error; it names every one of ``words``."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("modelpress: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def guard(monkeypatch):
    """Valid input would start training or a run: stop there with exit 99 instead."""

    def reached(*args, **kwargs):
        raise Reached("the input was valid")

    monkeypatch.setattr("modelpress.run.pipeline.Pipeline.__init__", reached)
    monkeypatch.setattr("modelpress.baselines.fit", reached)


# --- valid files to break ------------------------------------------------------------------------


def results_doc(samples: int = 40) -> dict:
    """A valid results document: one ok int8 record with two batch sizes."""
    from modelpress.measure.results import Record, Validation, new_results

    record = Record(
        model="tiny",
        family="cnn",
        target="onnxruntime",
        precision="int8",
        status="ok",
        size_bytes=20_000,
        threads=1,
        latency=[latency(b, 100.0 * b, seed=b, n=samples, spread=0.1) for b in (1, 8)],
        validation=Validation(n=100, accuracy=0.9, agreement=0.99, accuracy_drop=0.2),
    )
    return json.loads(new_results(ENV, [record], {}).model_dump_json())


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    """A tiny GRU checkpoint (about 2 KB) written by modelpress.checkpoint."""
    from modelpress.checkpoint import save_checkpoint
    from modelpress.data.base import InputSpec
    from modelpress.models import create_model

    spec = InputSpec("sequence", (8, 8), "float32")
    model = create_model("gru", input_spec=spec, hidden_size=4, num_classes=3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, input_spec=spec, labels=["a", "b", "c"], preprocessing={})
    return path.read_bytes()


def idx_bytes(arr: np.ndarray, type_byte: int = 0x08) -> bytes:
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0D: ">f4"}[type_byte]
    header = bytes([0, 0, type_byte, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(dtype).tobytes()


IDX_FILES = {
    "train-images-idx3-ubyte": idx_bytes(np.random.default_rng(0).integers(0, 256, (30, 6, 6))),
    "train-labels-idx1-ubyte": idx_bytes(np.arange(30) % 10),
    "t10k-images-idx3-ubyte": idx_bytes(np.random.default_rng(1).integers(0, 256, (20, 6, 6))),
    "t10k-labels-idx1-ubyte": idx_bytes(np.arange(20) % 10),
}

CSV = "label,text\n" + "".join(
    f"{'pos' if i % 2 else 'neg'},{'a great film' if i % 2 else 'a dull plot'} {i}\n"
    for i in range(30)
)


# --- recipes: `modelpress run` -------------------------------------------------------------------


def _sub(old: str, new: str):
    def edit(text: str) -> bytes:
        assert old in text, old
        return text.replace(old, new, 1).encode()

    return edit


def _raw(data: bytes):
    return lambda text: data


# fmt: off
RECIPE_CASES = {  # id: (edit of RECIPE, words the error line must hold besides the file)
    "not-utf8": (lambda t: t.encode().replace(b"tiny", b"ti\xffy", 1), ":1: byte offset 8"),
    "pass-options-a-number": (_sub("distill: {temperature: 4.0, train: {epochs: 1}}", "distill: 5"), ":10: passes.0.distill"),
    "pass-options-a-list": (_sub("prune: {ratio: 0.3, recovery_epochs: 1}", "prune: [0.3]"), ":11: passes.1.prune"),
    "pass-train-a-number": (_sub("train: {epochs: 1}}", "train: 3}"), "passes.0.distill.train"),
    "string-for-int": (_sub("train: {epochs: 1}\n", "train: {epochs: '1'}\n"), ":6: models.cnn.train.epochs"),
    "float-for-int": (_sub("train: {epochs: 1}\n", "train: {epochs: 1.5}\n"), "models.cnn.train.epochs"),
    "bool-for-number": (_sub("temperature: 4.0", "temperature: true"), "passes.0.distill.temperature"),
    "unknown-top-key": (_sub("name: tiny", "nmae: tiny"), ":1: nmae"),
    "unknown-nested-key": (_sub("calibration: 64", "calibraton: 64"), ":2: data.calibraton"),
    "unknown-model-option": (_sub("hidden_size: 16", "hidden_sise: 16"), "models.rnn.options.hidden_sise"),
    "missing-models": (lambda t: t.replace(t[t.index("models:"):t.index("\npasses:") + 1], "").encode(), "models"),
    "huge-int": (_sub("name: tiny\n", "name: tiny\nseed: 100000000000000000000000000000\n"), ":2: seed"),
    "infinite-float": (_sub("temperature: 4.0", "temperature: .inf"), "passes.0.distill.temperature"),
    "nan": (_sub("min_seconds: 0.1", "min_seconds: .nan"), "benchmark.min_seconds"),
    "huge-width": (_sub("width: 2.0", "width: 1.0e+30"), "models.cnn.teacher.width"),
    "negative-seed": (_sub("name: tiny\n", "name: tiny\nseed: -1\n"), ":2: seed"),
    "empty-models": (lambda t: t.replace(t[t.index("models:"):t.index("\npasses:") + 1], "models: {}\n").encode(), "models"),
    "empty-targets": (_sub("  onnxruntime: {precisions: [fp32, int8], threads: 1}", "  {}"), "targets"),
    "empty-precisions": (_sub("precisions: [fp32, int8]", "precisions: []"), "targets.onnxruntime.precisions"),
    "empty-search-list": (_sub("prune_ratios: [0.0, 0.5]", "prune_ratios: []"), "search.prune_ratios"),
    "document-is-a-list": (_raw(b"- name: tiny\n- models: {}\n"), "<top level>"),
    "document-is-a-scalar": (_raw(b"just words\n"), "<top level>"),
    "empty-file": (_raw(b""), "<top level>"),
    "two-documents": (lambda t: (t + "---\n" + t).encode(), "not valid YAML"),
    "tab-indent": (_sub("    model: resnet8", "\tmodel: resnet8"), ":5: not valid YAML"),
    "unclosed-brace": (_sub("threads: 1}", "threads: 1"), "not valid YAML"),
    "control-byte": (_sub("name: tiny", "name: t\x01iny"), ":1: not valid YAML"),
    "duplicate-key": (_sub("  cnn:\n", "  rnn: {model: gru}\n  cnn:\n"), "models.rnn: duplicate key"),
    "name-dotdot": (_sub("name: tiny", "name: '..'"), ":1: name"),
    "name-path-separator": (_sub("name: tiny", "name: a/b"), ":1: name"),
    "name-leading-dash": (_sub("name: tiny", "name: -rf"), ":1: name"),
    "name-too-long": (_sub("name: tiny", "name: " + "x" * 65), ":1: name"),
    "name-empty": (_sub("name: tiny", "name: ''"), ":1: name"),
    "name-a-number": (_sub("name: tiny", "name: 7"), ":1: name"),
    "label-with-plus": (_sub("  cnn:\n", "  cnn+x:\n"), ":4: models.cnn+x"),
    "label-control-char": (_sub("  cnn:\n", '  "c\\x01n":\n'), "models.'c\\x01n'"),
    "label-nul": (_sub("  cnn:\n", '  "c\\0n":\n'), "models.'c\\x00n'"),
    "label-dot": (_sub("  cnn:\n", '  ".":\n'), "models.."),
    "out-with-nul": (_sub("name: tiny\n", 'name: tiny\nout: "a\\0b"\n'), ":2: out"),
    "calibration-bool": (_sub("calibration: 64", "calibration: true"), "data.calibration"),
    "data-root-missing": (_sub("{name: digits,", "{name: mnist, root: /no/such/dir,"), "data.root"),
    "search-unknown-model": (_sub("models: [cnn]", "models: [cnx]"), "search.models"),
    "unknown-pass": (_sub("  - prune: {ratio", "  - prun: {ratio"), "passes.1.prun"),
    "gates-infinite-size": (_sub("max_size: 1 MB", "max_size: 1e999 MB"), "gates"),
}
# fmt: on


def test_the_recipe_the_cases_break_is_valid(tmp_path, guard, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == Reached.exit_code


@pytest.mark.parametrize("edit, words", RECIPE_CASES.values(), ids=RECIPE_CASES.keys())
def test_a_broken_recipe_exits_2_before_any_work(tmp_path, guard, capsys, edit, words):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(edit(RECIPE))
    code = cli.main(["run", str(path), "--out", str(tmp_path / "out")])
    one_error_line(capsys, code, str(path), words)
    assert not (tmp_path / "out").exists()  # validation comes before the out folder


def _key_paths(data, prefix=()):
    yield prefix
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        yield from _key_paths(value, (*prefix, key))


JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from([10**30, -1, 0, "", "..", "a/b", "-x", "x+y", "\x00", "1e999 MB"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)
RECIPE_PATHS = list(_key_paths(yaml.safe_load(RECIPE)))[1:]


def _mutate(doc, path: tuple, value, delete: bool):
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@FUZZ
@given(path=st.sampled_from(RECIPE_PATHS), value=JUNK, delete=st.booleans())
def test_fuzzed_recipes_are_valid_or_one_line_exit_2(tmp_path, guard, capsys, path, value, delete):
    doc = _mutate(yaml.safe_load(RECIPE), path, value, delete)
    file = tmp_path / "fuzz.yaml"
    file.write_text(yaml.safe_dump(doc))
    shutil.rmtree(tmp_path / "fuzz-out", ignore_errors=True)  # left by a valid example
    capsys.readouterr()
    code = cli.main(["run", str(file), "--out", str(tmp_path / "fuzz-out")])
    if code != Reached.exit_code:  # a valid recipe reaches the run; anything else is exit 2
        one_error_line(capsys, code, str(file))
        assert not (tmp_path / "fuzz-out").exists()


@FUZZ
@given(
    cut=st.one_of(st.none(), st.integers(0, len(RECIPE))),
    flips=st.lists(st.tuples(st.integers(0, len(RECIPE) - 1), st.integers(0, 255)), max_size=3),
)
def test_recipes_with_flipped_bytes_are_valid_or_one_line_exit_2(
    tmp_path, guard, capsys, cut, flips
):
    data = bytearray(RECIPE.encode())
    for offset, value in flips:
        data[offset] = value
    file = tmp_path / "flipped.yaml"
    file.write_bytes(bytes(data[:cut]))
    capsys.readouterr()
    code = cli.main(["run", str(file), "--out", str(tmp_path / "flip-out")])
    if code != Reached.exit_code:
        one_error_line(capsys, code, str(file))


# --- gate policies and results files: `modelpress gate` ------------------------------------------


@pytest.fixture
def gate_files(tmp_path):
    """(results path, policy path, baseline path): a valid trio to break one of."""
    results, policy, base = (
        tmp_path / "results.json",
        tmp_path / "gates.yaml",
        tmp_path / "base.json",
    )
    results.write_text(json.dumps(results_doc()))
    base.write_text(json.dumps(results_doc()))
    policy.write_text(POLICY)
    return results, policy, base


def _gate(files, junit: Path) -> int:
    results, policy, base = files
    argv = [str(results), "--policy", str(policy), "--baseline", str(base), "--junit", str(junit)]
    return cli.main(["gate", *argv, "--quiet"])


def test_the_gate_files_the_cases_break_pass(gate_files, tmp_path, capsys):
    assert _gate(gate_files, tmp_path / "gates.xml") == 0


# fmt: off
POLICY_CASES = {
    "policy-not-utf8": (lambda t: t.encode().replace(b"tiny", b"t\xe9ny"), ":2: byte offset"),
    "policy-duplicate-key": (lambda t: (t + "regression: {tolerance: 0.2}\n").encode(), ":4: regression: duplicate key"),
    "policy-infinite-size": (_sub("max_size: 1 MB", "max_size: 1e999 MB"), ":2: rules.0.max_size"),
    "policy-latency-a-list": (_sub("max_p90_ms: {1: 50}", "max_p90_ms: {1: [50]}"), "rules.0.max_p90_ms"),
    "policy-latency-infinite": (_sub("max_p90_ms: {1: 50}", "max_p90_ms: .inf"), "rules.0.max_p90_ms"),
    "policy-negative-seed": (_sub("n_boot: 200}", "n_boot: 200, seed: -1}"), ":3: regression.seed"),
    "policy-wrong-type": (_sub("min_accuracy: 0.5", "min_accuracy: high"), "rules.0.min_accuracy"),
    "policy-unknown-key": (_sub("tolerance: 0.1", "tolerence: 0.1"), "regression"),
    "policy-is-a-list": (_raw(b"- rules\n"), "must be a mapping"),
    "policy-invalid-yaml": (_sub("n_boot: 200}", "n_boot: 200"), ":4: not valid YAML"),
}
# fmt: on


@pytest.mark.parametrize("edit, words", POLICY_CASES.values(), ids=POLICY_CASES.keys())
def test_a_broken_policy_exits_2(gate_files, tmp_path, capsys, edit, words):
    gate_files[1].write_bytes(edit(POLICY))
    code = _gate(gate_files, tmp_path / "gates.xml")
    one_error_line(capsys, code, str(gate_files[1]), words)
    assert not (tmp_path / "gates.xml").exists()


def _json_edit(change):
    def edit(doc: dict) -> bytes:
        change(doc)
        return json.dumps(doc).encode()

    return edit


def _latency(doc: dict) -> dict:
    return doc["records"][0]["latency"][0]


def _nest(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# fmt: off
RESULTS_CASES = {
    "results-not-utf8": (lambda d: json.dumps(d).encode().replace(b"Test", b"T\xffst"), "byte offset"),
    "results-truncated": (lambda d: json.dumps(d).encode()[:300], "not valid JSON (line 1"),
    "results-nan": (lambda d: json.dumps(d).replace('"accuracy": 0.9', '"accuracy": NaN').encode(), "records.0.validation.accuracy"),
    "results-infinite": (lambda d: json.dumps(d).replace('"accuracy": 0.9', '"accuracy": 1e999').encode(), "records.0.validation.accuracy"),
    "results-duplicate-key": (lambda d: json.dumps(d).replace('"status": "ok"', '"status": "ok", "status": "ok"').encode(), "'status' is given twice"),
    "results-no-samples": (_json_edit(lambda d: _latency(d).update(samples_us=[])), "records.0.latency.0.samples_us"),
    "results-zero-time": (_json_edit(lambda d: _latency(d).update(samples_us=[0.0] * 40)), "records.0.latency.0.samples_us"),
    "results-wrong-type": (_json_edit(lambda d: d["records"][0].update(status="great")), "records.0.status"),
    "results-unknown-key": (_json_edit(lambda d: d["records"][0].update(surprise=1)), "records.0.surprise"),
    "results-deeply-nested": (lambda d: _nest(100_000), "not valid JSON"),
    "results-a-list": (lambda d: b"[1, 2]", "not a modelpress results file"),
    "results-old-schema": (_json_edit(lambda d: d.update(schema_version=0)), "schema_version 0"),
}
# fmt: on


@pytest.mark.parametrize("edit, words", RESULTS_CASES.values(), ids=RESULTS_CASES.keys())
@pytest.mark.parametrize("which", ["results", "baseline"])
def test_a_broken_results_file_exits_2(gate_files, tmp_path, capsys, edit, words, which):
    target = gate_files[0] if which == "results" else gate_files[2]
    target.write_bytes(edit(results_doc()))
    code = _gate(gate_files, tmp_path / "gates.xml")
    one_error_line(capsys, code, str(target), words)
    assert not (tmp_path / "gates.xml").exists()


RESULTS_PATHS = [p for p in _key_paths(results_doc()) if "samples_us" not in p[:-1]][1:]


@FUZZ
@given(path=st.sampled_from(RESULTS_PATHS), value=JUNK, delete=st.booleans())
def test_fuzzed_results_gate_or_exit_2_without_a_crash(
    gate_files, tmp_path, capsys, path, value, delete
):
    doc = _mutate(results_doc(), path, value, delete)
    gate_files[0].write_text(json.dumps(doc))
    capsys.readouterr()
    code = _gate(gate_files, tmp_path / "fuzz.xml")
    err = capsys.readouterr().err
    assert code in (0, 1, 2) and "Traceback" not in err, err  # never 3: never a crash
    if err:  # a refused file, or results the policy cannot gate: one line
        assert len(err.strip().splitlines()) == 1 and err.startswith("modelpress: error: "), err


@FUZZ
@given(
    path=st.sampled_from(list(_key_paths(yaml.safe_load(POLICY)))[1:]),
    value=JUNK,
    delete=st.booleans(),
)
def test_fuzzed_policies_gate_or_exit_2_without_a_crash(
    gate_files, tmp_path, capsys, path, value, delete
):
    doc = _mutate(yaml.safe_load(POLICY), path, value, delete)
    gate_files[1].write_text(yaml.safe_dump(doc))
    capsys.readouterr()
    code = _gate(gate_files, tmp_path / "fuzz.xml")
    err = capsys.readouterr().err
    assert code in (0, 1, 2) and "Traceback" not in err, err
    if err:
        assert len(err.strip().splitlines()) == 1 and err.startswith("modelpress: error: "), err


# --- checkpoints: `modelpress info` --------------------------------------------------------------


def _header_len(raw: bytes) -> int:
    return int.from_bytes(raw[:8], "little")


# fmt: off
CHECKPOINT_CASES = {
    "ckpt-shorter-than-its-length-field": (lambda b: b[:5], "byte offset 0"),
    "ckpt-truncated-header": (lambda b: b[:200], "byte offset 0"),
    "ckpt-truncated-tensors": (lambda b: b[:-10], "byte offset"),
    "ckpt-extra-bytes": (lambda b: b + b"\x00" * 16, "byte offset"),
    "ckpt-huge-header-length": (lambda b: (2**62).to_bytes(8, "little") + b[8:], "byte offset 0"),
    "ckpt-non-utf8-header": (lambda b: b[:20] + b"\xff" + b[21:], "byte offset 20"),
    "ckpt-broken-json-header": (lambda b: b[:8] + b"[" + b[9:], "byte offset"),
    "ckpt-flipped-weight": (lambda b: b[:-4] + bytes([b[-4] ^ 0x40]) + b[-3:], "digest"),
    "ckpt-edited-metadata": (lambda b: b.replace(b'\\"labels\\":[\\"a\\"', b'\\"labels\\":[\\"x\\"'), "digest"),
    "ckpt-not-safetensors": (lambda b: b"PK\x03\x04" + b"\x00" * 60, "byte offset"),
}
# fmt: on


def test_the_checkpoint_the_cases_break_reads(checkpoint_bytes, tmp_path, capsys):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(checkpoint_bytes)
    assert cli.main(["info", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["labels"] == ["a", "b", "c"]


@pytest.mark.parametrize("edit, words", CHECKPOINT_CASES.values(), ids=CHECKPOINT_CASES.keys())
def test_a_corrupted_checkpoint_exits_2(checkpoint_bytes, tmp_path, capsys, edit, words):
    path = tmp_path / "tiny.safetensors"
    broken = edit(checkpoint_bytes)
    assert broken != checkpoint_bytes
    path.write_bytes(broken)
    one_error_line(capsys, cli.main(["info", str(path)]), str(path), words)


@settings(FUZZ, max_examples=max(50, EXAMPLES))
@given(data=st.data())
def test_truncated_or_flipped_checkpoints_never_escape_checkpoint_error(
    checkpoint_bytes, tmp_path, capsys, data
):
    raw = bytearray(checkpoint_bytes)
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw) - 1)), label="cut")
    for _ in range(data.draw(st.integers(0 if cut is not None else 1, 3), label="flips")):
        offset = data.draw(st.integers(0, len(raw) - 1), label="offset")
        raw[offset] ^= data.draw(st.integers(1, 255), label="xor")
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(raw[:cut]))
    capsys.readouterr()
    code = cli.main(["info", str(path)])
    if code == 0:  # a flip in the header's padding spaces changes nothing the checkpoint says
        from modelpress.checkpoint import read_meta

        original = tmp_path / "original.safetensors"
        original.write_bytes(checkpoint_bytes)
        (meta, tensors), (meta0, tensors0) = read_meta(path), read_meta(original)
        assert meta == meta0 and all(tensors[k].equal(t) for k, t in tensors0.items())
        return
    one_error_line(capsys, code, str(path))


# --- data files: `modelpress train` --------------------------------------------------------------


def _write_idx(folder: Path, replace: dict[str, bytes], gz: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in {**IDX_FILES, **replace}.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(
                gzip.compress(data) if name not in replace else data
            )
        else:
            (folder / name).write_bytes(data)


LABELS, IMAGES = "t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"
# fmt: off
IDX_CASES = {
    "idx-bad-magic": ({IMAGES: b"\x12\x34" + IDX_FILES[IMAGES][2:]}, False, IMAGES, "byte offset 0"),
    "idx-truncated": ({IMAGES: IDX_FILES[IMAGES][:-7]}, False, IMAGES, "truncated"),
    "idx-header-truncated": ({LABELS: IDX_FILES[LABELS][:6]}, False, LABELS, "byte offset 3"),
    "idx-label-out-of-range": ({LABELS: idx_bytes(np.arange(20) % 10 + np.eye(20)[3].astype(int) * 40)}, False, LABELS, "byte offset 11"),
    "idx-negative-label": ({LABELS: idx_bytes(np.where(np.arange(20) == 2, -1, np.arange(20) % 10), 0x09)}, False, LABELS, "byte offset 10"),
    "idx-float-labels": ({LABELS: idx_bytes(np.arange(20) % 10, 0x0D)}, False, LABELS, "byte offset 2"),
    "idx-nan-pixel": ({IMAGES: idx_bytes(np.where(np.arange(720).reshape(20, 6, 6) == 40, np.nan, 0.5), 0x0D)}, False, IMAGES, "(sample 1)"),
    "idx-count-mismatch": ({LABELS: idx_bytes(np.arange(19) % 10)}, False, LABELS, "20 images but 19 labels"),
    "idx-no-images": ({IMAGES: idx_bytes(np.zeros((0, 6, 6))), LABELS: idx_bytes(np.zeros(0))}, False, IMAGES, "no images"),
    "idx-corrupt-gzip": ({IMAGES: gzip.compress(IDX_FILES[IMAGES])[:12] + b"\xff" * 30}, True, IMAGES, "cannot read IDX file"),
}
# fmt: on


def _train(root: Path, data: str, model: str, out: Path) -> int:
    argv = ["train", "--model", model, "--data", data, "--root", str(root), "--out", str(out)]
    return cli.main([*argv, "--epochs", "1", "--no-progress"])


def test_the_idx_files_the_cases_break_load(tmp_path, guard, capsys):
    _write_idx(tmp_path / "mnist", {})
    assert _train(tmp_path / "mnist", "mnist", "resnet8", tmp_path / "m.safetensors") == 99


@pytest.mark.parametrize("replace, gz, name, words", IDX_CASES.values(), ids=IDX_CASES.keys())
def test_a_broken_idx_file_exits_2(tmp_path, guard, capsys, replace, gz, name, words):
    root = tmp_path / "mnist"
    _write_idx(root, replace, gz=gz)
    out = tmp_path / "m.safetensors"
    code = _train(root, "mnist", "resnet8", out)
    one_error_line(capsys, code, str(root / name), words)
    assert not out.exists()


@FUZZ
@given(
    name=st.sampled_from(sorted(IDX_FILES)),
    cut=st.one_of(st.none(), st.integers(0, 200)),
    flips=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 255)), max_size=3),
    gz=st.booleans(),
)
def test_fuzzed_idx_files_load_or_exit_2(tmp_path, guard, capsys, name, cut, flips, gz):
    data = bytearray(IDX_FILES[name])
    for offset, xor in flips:
        data[offset % len(data)] ^= xor
    root = tmp_path / f"idx-{int(gz)}"
    _write_idx(root, {name: gzip.compress(bytes(data[:cut])) if gz else bytes(data[:cut])}, gz=gz)
    capsys.readouterr()
    code = _train(root, "mnist", "resnet8", tmp_path / "fuzz.safetensors")
    if code != Reached.exit_code:
        one_error_line(capsys, code, str(root))


# fmt: off
TEXT_CASES = {
    "text-not-utf8": (CSV.encode().replace(b"great", b"gr\xe9at", 1), ":3: byte offset 37"),
    "text-missing-column": (CSV.replace("neg,a dull plot 2", "neg", 1).encode(), ":4: row 3"),
    "text-empty-label": (CSV.replace("neg,a dull plot 2", ",a dull plot 2", 1).encode(), ":4: row 3 has an empty label"),
    "text-header-only": (b"label,text\n", "no rows"),
    "text-empty-file": (b"", "is empty"),
    "text-huge-field": (("label,text\npos," + "w" * 200_000 + "\n").encode(), ":2: field larger than field limit"),
    "text-one-label": ("".join(f"pos,text {i}\n" for i in range(20)).encode(), "1 distinct label"),
    "text-too-few-rows": (b"pos,good\nneg,bad\n", "too few"),
}
# fmt: on


@pytest.mark.parametrize("content, words", TEXT_CASES.values(), ids=TEXT_CASES.keys())
@pytest.mark.parametrize("ext", [".csv", ".tsv"])
def test_a_broken_text_table_exits_2(tmp_path, guard, capsys, content, words, ext):
    path = tmp_path / f"reviews{ext}"
    path.write_bytes(content.replace(b",", b"\t") if ext == ".tsv" else content)
    out = tmp_path / "t.safetensors"
    one_error_line(capsys, _train(path, "text", "transformer", out), str(path), words)
    assert not out.exists()


@FUZZ
@given(
    cut=st.one_of(st.none(), st.integers(0, len(CSV))),
    flips=st.lists(st.tuples(st.integers(0, len(CSV) - 1), st.integers(0, 255)), max_size=4),
    ext=st.sampled_from([".csv", ".tsv"]),
)
def test_fuzzed_text_tables_load_or_exit_2(tmp_path, guard, capsys, cut, flips, ext):
    data = bytearray(CSV.replace(",", "\t") if ext == ".tsv" else CSV, "utf-8")
    for offset, value in flips:
        data[offset] = value
    path = tmp_path / f"fuzz{ext}"
    path.write_bytes(bytes(data[:cut]))
    capsys.readouterr()
    code = _train(path, "text", "transformer", tmp_path / "fuzz.safetensors")
    if code != Reached.exit_code:
        one_error_line(capsys, code, str(path))


# --- exit codes 3 and 130: what is not the user's input ------------------------------------------


def test_an_internal_error_in_a_run_exits_3_with_its_traceback_in_error_log(
    tmp_path, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise RuntimeError("boom in the pipeline")

    monkeypatch.setattr("modelpress.run.pipeline.Pipeline.__init__", broken)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    assert cli.main(["run", str(path)]) == 3  # no --out: the recipe's runs/<name>
    lines = capsys.readouterr().err.strip().splitlines()
    log = Path("runs") / "tiny" / "error.log"
    assert len(lines) == 1 and "RuntimeError: boom in the pipeline" in lines[0], lines
    assert str(log) in lines[0] and "Traceback" not in lines[0]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "boom in the pipeline" in text
    assert "in broken" in text  # the frame that raised

    assert cli.main(["run", str(path), "--out", str(tmp_path / "elsewhere")]) == 3
    assert str(tmp_path / "elsewhere" / "error.log") in capsys.readouterr().err
    assert "boom" in (tmp_path / "elsewhere" / "error.log").read_text()


def test_a_model_that_crashes_is_a_failed_model_exit_1_with_its_traceback_kept(
    tmp_path, monkeypatch, capsys
):
    def crash(self, label):
        raise RuntimeError(f"shapes do not match in {label}")

    monkeypatch.setattr("modelpress.run.pipeline.Pipeline.model", crash)
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    out = tmp_path / "out"
    assert cli.main(["run", str(path), "--out", str(out), "--no-cache"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines  # one line per model of the recipe, each with its reason
    assert "cnn: train failed: RuntimeError: shapes do not match in cnn" in lines[0]
    assert "rnn: train failed: RuntimeError: shapes do not match in rnn" in lines[1]
    assert all(str(out / "error.log") in line for line in lines)
    assert "Traceback" in (out / "error.log").read_text()
    assert (out / "report.html").is_file()  # the run went to the end: the model is a failed row


def test_an_internal_error_elsewhere_exits_3_with_runs_error_log(
    gate_files, tmp_path, monkeypatch, capsys
):
    from modelpress import gate

    def broken(*args, **kwargs):
        raise KeyError("no such column")

    monkeypatch.setattr("modelpress.measure.report.markdown_report", broken)
    monkeypatch.setattr("modelpress.measure.gate.run_gates", broken)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", str(gate_files[0]), "--out", str(tmp_path / "rep")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "KeyError" in err[0] and "runs/error.log" in err[0], err
    assert "no such column" in (tmp_path / "runs" / "error.log").read_text()
    assert not (tmp_path / "rep").exists()
    results, policy, _ = gate_files
    assert (
        gate.main([str(results), "--policy", str(policy)]) == 3
    )  # python -m modelpress.measure.gate
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_ctrl_c_exits_130_and_usage_errors_exit_2(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "models", interrupted)
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err.strip() == "modelpress: interrupted"
    assert cli.main(["no-such-command"]) == 2
    assert cli.main(["train"]) == 2  # --model missing
    assert cli.main(["--help"]) == 0
