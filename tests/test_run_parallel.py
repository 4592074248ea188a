"""The run's parallel preparation: same stages, same numbers as the in-order walk, none redone."""

import textwrap
from pathlib import Path

import pytest
from conftest import torch_threads

from modelpress.run.parallel import chain_jobs, jobs, prepare, train_threads, training_jobs
from modelpress.run.pipeline import Pipeline
from modelpress.run.recipe_checks import load_recipe
from modelpress.run.stages import StageMissing

RECIPE = """\
name: par
data: {name: digits, calibration: 32}
models:
  cnn:
    model: resnet8
    width: 0.25
    train: {epochs: 2}
    teacher: {model: resnet8, width: 0.5, train: {epochs: 2}}
  rnn:
    model: gru
    options: {hidden_size: 16}
    train: {epochs: 2}
    teacher: {model: resnet8, width: 0.5, train: {epochs: 2}}
passes:
  - distill: {train: {epochs: 1}}
  - prune: {params_budget: 0.6, recovery_epochs: 1, round_to: 4}
targets:
  onnxruntime: {precisions: [fp32]}
"""


def _pipe(tmp: Path, out: str) -> Pipeline:
    path = tmp / "recipe.yaml"
    path.write_text(textwrap.dedent(RECIPE))
    recipe, _ = load_recipe(path)
    return Pipeline(recipe, path, tmp / out, log=lambda _: None)


def _accuracies(pipe: Pipeline) -> dict[str, float]:
    out = {}
    for label in pipe.recipe.models:
        run = pipe.model(label)
        for art in (run.baseline, run.compressed):
            out[f"{label} {art.meta['lineage'][-1]['stage']}"] = art.meta["metrics"][
                "test_accuracy"
            ]
    return out


def test_jobs_dedupe_the_shared_teacher_and_put_it_first(tmp_path):
    pipe = _pipe(tmp_path, "a")
    train = training_jobs(pipe.recipe)
    assert [j["args"][0] for j in train] == ["cnn-teacher", "cnn", "rnn"]  # one teacher for both
    assert [j["label"] for j in chain_jobs(pipe.recipe)] == ["cnn", "rnn"]


@pytest.mark.parametrize(
    "env, want_jobs, want_threads",
    [({"MODELPRESS_JOBS": "1"}, 1, None), ({"MODELPRESS_JOBS": "3"}, 3, 1)],
)
def test_env_knobs(monkeypatch, env, want_jobs, want_threads):
    monkeypatch.delenv("MODELPRESS_TRAIN_THREADS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert jobs() == want_jobs
    if want_threads is not None:
        assert train_threads() == want_threads
    monkeypatch.setenv("MODELPRESS_TRAIN_THREADS", "2")
    assert train_threads() == 2
    monkeypatch.setenv("MODELPRESS_JOBS", "zero")  # not a count: the default, not a crash
    assert jobs() >= 1


@pytest.mark.slow
def test_parallel_preparation_equals_the_in_order_walk(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPRESS_TRAIN_THREADS", "1")
    monkeypatch.setenv("MODELPRESS_JOBS", "2")
    par = _pipe(tmp_path, "par")
    with pytest.raises(StageMissing), par.cache.only_lookups():
        par.model("cnn")  # nothing is there yet
    prepare(par)
    with par.cache.only_lookups():  # every stage of every model is now in the cache
        for label in par.recipe.models:
            par.model(label)
    monkeypatch.setenv("MODELPRESS_JOBS", "1")
    seq = _pipe(tmp_path, "seq")
    prepare(seq)  # one job at a time: prepares nothing, the walk below trains in this process
    assert not list((tmp_path / "seq" / "cache").glob("train-*"))
    with torch_threads(1):
        want = _accuracies(seq)
    assert _accuracies(par) == want  # same thread count per training: the same numbers
