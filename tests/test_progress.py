"""Progress with an ETA (training, builds and measurements in worker processes), and
measurements that stay with the machine and the moment they were taken."""

import io
import re
import textwrap
import time

import pytest
import torch
from torch import nn

from modelpress import bench, machine, progress
from modelpress.measure.results import Record
from modelpress.progress import Reporter, Task, reporter

CONTROL = re.compile(r"[\x1b\r]")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- the reporters ---------------------------------------------------------------------------------


def test_plain_lines_one_per_unit_with_eta_and_no_control_characters():
    out = io.StringIO()
    with reporter(True, out).task("build cnn on onnxruntime", 3, "artifact") as task:
        for name in ("cnn fp32", "cnn \x1b[31mint8\r", "cnn fp16"):
            task.advance(f"{name} built (0.1 s)")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and not CONTROL.search(out.getvalue())
    assert lines[0].startswith("  build cnn on onnxruntime: artifact 1/3: cnn fp32 built (0.1 s)")
    assert re.search(r"; \d+\.\d s elapsed, ETA \d+\.\d s$", lines[0])
    assert "artifact 2/3" in lines[1] and "ETA" in lines[1]
    assert lines[2].endswith("elapsed, done") and "artifact 3/3" in lines[2]


def test_plain_lines_are_rate_limited_but_first_and_last_always_print():
    out = io.StringIO()
    with reporter(True, out).task("train gru", 40, "epoch", min_interval=3600) as task:
        for epoch in range(1, 41):
            task.advance(f"val 0.{epoch:02d}")
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[1].strip() for ln in lines] == ["epoch 1/40", "epoch 40/40"]
    # early stop: the stopping epoch prints, held-back epochs do not flood the log
    out = io.StringIO()
    with reporter(True, out).task("train gru", 40, "epoch", min_interval=3600) as task:
        for _ in range(7):
            task.advance("val 0.9")
        task.advance("val 0.9; early stop", final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "epoch 8/40: val 0.9; early stop" in lines[1]
    assert lines[1].endswith("done")
    # an interrupted task still shows the last unit it finished
    out = io.StringIO()
    with reporter(True, out).task("t", 10, "epoch", min_interval=3600) as task:
        task.advance("a")
        task.advance("b")
    assert out.getvalue().splitlines()[-1].startswith("  t: epoch 2/10: b;")


def test_heartbeat_inside_a_slow_unit(monkeypatch):
    out = io.StringIO()
    task = reporter(True, out).task("build x", 2, "artifact")
    task.partial(0.5, "x int8 ...")
    assert out.getvalue() == ""  # not yet: at most one heartbeat per HEARTBEAT_S
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.0)
    task.partial(0.5, "x int8 ...")
    assert out.getvalue().startswith("  build x: artifact 1/2: x int8 ...;")
    assert "ETA" in out.getvalue()


def test_terminal_gets_live_bars_and_disabled_gets_nothing():
    term = FakeTerminal()
    rep = reporter(True, term)
    assert rep.kind == "tty"
    with rep.task("train cnn", 2, "epoch") as task, rep.task("inner", 1) as inner:
        task.advance("val 0.5")
        inner.advance()
        task.advance("val 0.6")
    assert "train cnn" in term.getvalue() and "2/2" in term.getvalue()
    assert progress._LIVE == [None, 0]  # the live display stopped with its last task
    assert reporter(False).kind == "null" and reporter(True, io.StringIO()).kind == "plain"


def test_environment_overrides_the_terminal_check(monkeypatch):
    monkeypatch.setenv("MODELPRESS_PROGRESS", "plain")
    assert reporter(True, FakeTerminal()).kind == "plain"
    monkeypatch.setenv("MODELPRESS_PROGRESS", "off")
    assert reporter(True, FakeTerminal()).kind == "null"
    monkeypatch.setenv("MODELPRESS_PROGRESS", "live")
    assert reporter(True, io.StringIO()).kind == "tty"
    assert reporter(False, FakeTerminal()).kind == "null"


def test_format_seconds():
    assert [progress.format_seconds(s) for s in (0.42, 12.4, 185, 3720)] == [
        "0.4 s",
        "12 s",
        "3 min 05 s",
        "1 h 02 min",
    ]


# -- training --------------------------------------------------------------------------------------


def _linear(data) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, data.num_classes))


def test_training_prints_epoch_lines_without_a_terminal(digits_image, capsys, one_thread):
    from modelpress.train import TrainConfig, train

    cfg = TrainConfig(epochs=3, augment="none", patience=3)
    train(_linear(digits_image), digits_image, cfg, progress=True)
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if "train Sequential: epoch" in ln]
    assert lines and not CONTROL.search(text)
    assert lines[0].startswith("  train Sequential: epoch 1/3: loss ") and "ETA" in lines[0]
    assert "epoch 3/3" in lines[-1] and lines[-1].endswith("done")


def test_fast_training_does_not_flood_the_log(digits_image, capsys, one_thread):
    from modelpress.train import TrainConfig, train

    start = time.perf_counter()
    cfg = TrainConfig(epochs=40, augment="none", patience=40)
    train(_linear(digits_image), digits_image, cfg, progress=True)
    seconds = time.perf_counter() - start
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "epoch" in ln]
    assert 2 <= len(lines) <= 2 + seconds / 2, lines  # first, last, and one per ~2 s


class Recorder(Reporter):
    def __init__(self):
        super().__init__("null")
        self.calls: list[tuple[str, float, str]] = []

    def task(self, name, total, unit="step", min_interval=0.0) -> Task:
        calls = self.calls

        class Recording(Task):
            def advance(self, message="", final=False):
                super().advance(message, final)
                calls.append(("advance", self.done, message))

            def partial(self, fraction, message=""):
                calls.append(("partial", fraction, message))

        return Recording(name, total, unit)


def test_slow_epochs_report_their_batches(digits_image, monkeypatch, one_thread):
    from modelpress import train as train_mod

    monkeypatch.setattr(train_mod, "BATCH_TICK_S", 0.0)  # every epoch counts as slow
    rec = Recorder()
    cfg = train_mod.TrainConfig(epochs=2, augment="none", patience=2, batch_size=256)
    train_mod.train(_linear(digits_image), digits_image, cfg, progress=rec)
    batches = [c for c in rec.calls if c[0] == "partial"]
    assert batches and re.fullmatch(r"batch \d+/\d+", batches[0][2])
    assert 0 < batches[0][1] <= 1
    assert [c[1] for c in rec.calls if c[0] == "advance"] == [1, 2]


# -- builds and measurements in worker processes, and the machine they ran on ---------------------

RECIPE = """\
name: tiny
data: {name: digits, calibration: 32}
models:
  cnn: {model: resnet8, width: 0.25, train: {epochs: 1}}
targets:
  onnxruntime: {precisions: [fp32, dynamic_int8], threads: 1}
benchmark: {batch_sizes: [1], min_calls: 3, min_seconds: 0.0, warmup_calls: 1, validate: false}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A Pipeline on a tiny recipe and an untrained resnet8 checkpoint (no training needed)."""
    from modelpress.checkpoint import save_trained
    from modelpress.data import load_dataset
    from modelpress.models import create_model
    from modelpress.run.state import ModelRun

    tmp = tmp_path_factory.mktemp("tiny")
    (tmp / "recipe.yaml").write_text(textwrap.dedent(RECIPE))
    data = load_dataset("digits", view="image")
    torch.manual_seed(0)
    model = create_model("resnet8", input_spec=data.input_spec, num_classes=10, width=0.25)
    art = save_trained(tmp / "cnn.safetensors", model.eval(), data)
    run = ModelRun(label="cnn", family="cnn", data=data, baseline=art)
    return tmp, run


def _pipeline(tmp, log, **kw):
    from modelpress.run.pipeline import Pipeline
    from modelpress.run.recipe_checks import load_recipe

    recipe, _ = load_recipe(tmp / "recipe.yaml")
    return Pipeline(recipe, tmp / "recipe.yaml", tmp / "out", log=log, **kw)


def _jobs(run):
    from modelpress.run.steps import Job

    opts = {"threads": 1}
    return [
        Job(label="cnn", precision=p, source=run.baseline, options=opts)
        for p in ("fp32", "dynamic_int8")
    ]


def test_workers_report_each_artifact_in_the_parent(tiny, capsys):
    from modelpress.run.steps import bench_all, build_all

    tmp, run = tiny
    log: list[str] = []
    pipe = _pipeline(tmp, log.append, progress=True)
    jobs = _jobs(run)
    build_all(pipe, "onnxruntime", jobs)
    records = bench_all(pipe, run, "onnxruntime", {"threads": 1}, jobs, None)
    text = capsys.readouterr().out
    assert not CONTROL.search(text)
    lines = text.splitlines()
    built = [ln for ln in lines if ln.startswith("  build on onnxruntime: artifact")]
    measured = [ln for ln in lines if ln.startswith("  measure on onnxruntime: artifact")]
    assert len(built) == 2 and len(measured) == 2, text
    assert re.search(
        r"artifact 1/2: cnn onnxruntime fp32 built \(.+ s\); .+ elapsed, ETA .+ s$", built[0]
    )
    assert "artifact 2/2: cnn onnxruntime dynamic_int8 built" in built[1]
    assert "artifact 1/2: cnn onnxruntime fp32 measured" in measured[0] and "ETA" in measured[0]
    assert measured[1].endswith("done")
    assert [r.status for r in records] == ["ok", "ok"], [r.reason for r in records]
    # every measured record says when and where it was measured
    here = machine.machine_fingerprint()
    for rec in records:
        assert rec.machine_id == here.id and rec.machine == here.description
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", rec.measured_at)


def test_cached_records_keep_when_and_where_they_were_measured(tiny, capsys):
    from modelpress.run.steps import bench_all, build_all

    tmp, run = tiny
    first_log: list[str] = []
    pipe = _pipeline(tmp, first_log.append)
    jobs = _jobs(run)
    build_all(pipe, "onnxruntime", jobs)  # cached by the test above
    first = bench_all(pipe, run, "onnxruntime", {"threads": 1}, jobs, None)
    time.sleep(1.1)  # a restamped record would show a later second
    for _ in range(2):  # the cache lookup path, twice
        log: list[str] = []
        cached: list[Record] = []
        pipe = _pipeline(tmp, log.append)
        build_all(pipe, "onnxruntime", jobs)
        again = bench_all(pipe, run, "onnxruntime", {"threads": 1}, jobs, None, from_cache=cached)
        assert pipe.cache.misses == 0 and len(cached) == 2
        assert [r.measured_at for r in again] == [r.measured_at for r in first]
        assert [r.model_dump() for r in again] == [r.model_dump() for r in first]
        stamp = first[0].measured_at[:16].replace("T", " ")
        assert any(
            "[cached] measure on onnxruntime: 2 record(s), measured" in ln and stamp in ln
            for ln in log
        ), log
    # fresh measurements (make bench) never replay the cache, and replace what it held
    log = []
    pipe = _pipeline(tmp, log.append, fresh_measurements=True)
    build_all(pipe, "onnxruntime", jobs)
    fresh = bench_all(pipe, run, "onnxruntime", {"threads": 1}, jobs, None)
    assert pipe.cache.misses == 2 and any("[run]    measure on onnxruntime" in ln for ln in log)
    assert all(f.measured_at > r.measured_at for f, r in zip(fresh, first))
    pipe = _pipeline(tmp, log.append)
    build_all(pipe, "onnxruntime", jobs)
    now_cached = bench_all(pipe, run, "onnxruntime", {"threads": 1}, jobs, None)
    assert [r.measured_at for r in now_cached] == [r.measured_at for r in fresh]
    capsys.readouterr()


def test_bench_cache_key_follows_the_machine(tiny, monkeypatch):
    from modelpress.run.steps import bench_key, bench_settings

    tmp, run = tiny
    pipe = _pipeline(tmp, lambda s: None)
    job = _jobs(run)[0]
    job.built = run.baseline
    settings = bench_settings(pipe)
    here = bench_key(pipe, job, "onnxruntime", {}, None, settings)
    assert here == bench_key(pipe, job, "onnxruntime", {}, None, settings)
    other = machine.Machine(id="0123456789ab", description="another machine", facts={})
    monkeypatch.setattr(machine, "machine_fingerprint", lambda: other)
    assert bench_key(pipe, job, "onnxruntime", {}, None, settings) != here


def test_fingerprint_is_computed_once_and_describes_the_machine(monkeypatch):
    first = machine.machine_fingerprint()
    assert first is machine.machine_fingerprint()  # once per process
    assert re.fullmatch(r"[0-9a-f]{12}", first.id)
    facts = first.facts
    assert {"cpu_model", "cpu_flags", "logical_cores", "usable_cores", "os", "runtimes"} <= set(
        facts
    )
    assert "torch" in facts["runtimes"] and "onnxruntime" in facts["runtimes"]
    assert bench.collect_environment().machine_id == first.id
    # another CPU (flags differ) is another machine
    machine.machine_fingerprint.cache_clear()
    from modelpress.devices import runner  # the facts are gathered by the travelling runner

    monkeypatch.setattr(runner, "cpu_flags", lambda: ["avx2", "sse4_2"])
    try:
        assert machine.machine_fingerprint().id != first.id
    finally:
        machine.machine_fingerprint.cache_clear()
        monkeypatch.undo()
    assert machine.machine_fingerprint().id == first.id


def test_old_records_without_machine_fields_still_load():
    rec = Record.model_validate(
        {"model": "cnn", "target": "onnxruntime", "precision": "fp32", "status": "ok"}
    )
    assert rec.measured_at is None and rec.machine_id is None and rec.machine is None
