"""The ``slower than fp32`` mark (measure/marks.py): set on crafted records, shown in the run's
table and the reports, gated with ``forbid_marks``, and never chosen by the search."""

import io
from types import SimpleNamespace

import pytest
from conftest import latency, make_record, make_results
from rich.console import Console

from modelpress.errors import ConfigError
from modelpress.measure.gate import load_policy, run_gates
from modelpress.measure.marks import (
    LEGEND,
    SLOWER_THAN_FP32,
    float_counterpart,
    mark_slower_than_fp32,
    slower_batches,
)
from modelpress.measure.report import html_report, markdown_report
from modelpress.run.search import Trial, choose, mark_slower_trials
from modelpress.run.table import print_summary

FP32 = make_record("cnn", "onnxruntime", "fp32", drop=0.0, speed=1.0, seed=0)


def marked(*records) -> dict[str, list[str]]:
    """label -> marks of every record after marking."""
    return {r.label: r.marks for r in mark_slower_than_fp32(make_results(*records)).records}


@pytest.mark.parametrize(
    ("speed", "expected"),
    [
        (1.5, [SLOWER_THAN_FP32]),  # clearly slower at both batch sizes
        (1.0, []),  # the same speed, other noise (another seed)
        (1.04, []),  # a few per cent: within what drifts between runs
        (0.5, []),  # faster
    ],
)
def test_int8_is_marked_only_when_clearly_slower(speed, expected):
    int8 = make_record("cnn", "onnxruntime", "int8", speed=speed, seed=7)
    marks = marked(FP32, int8)
    assert marks["cnn/onnxruntime/int8"] == expected
    assert marks["cnn/onnxruntime/fp32"] == []  # the float artifact itself is never marked


def test_slower_at_one_batch_size_is_enough():
    int8 = make_record("cnn", "onnxruntime", "int8", seed=7)
    int8 = int8.model_copy(update={"latency": [latency(1, 50, 7), latency(32, 400 * 1.4, 8)]})
    (batch, ci), *others = slower_batches(int8, FP32)
    assert batch == 32 and not others and 1.10 < ci.low < ci.ratio < ci.high
    assert marked(FP32, int8)["cnn/onnxruntime/int8"] == [SLOWER_THAN_FP32]


def test_no_fp32_counterpart_on_the_same_target_and_machine_no_mark():
    slow = dict(speed=2.0, seed=7)
    int8 = make_record("cnn", "onnxruntime", "int8", **slow)
    lrt = make_record("cnn", "litert", "fp32", speed=0.5)
    fp16 = make_record("cnn", "tensorrt", "fp16", **slow)  # TensorRT: no fp32 build
    assert marked(lrt, int8, fp16) == {
        "cnn/litert/fp32": [],
        "cnn/onnxruntime/int8": [],
        "cnn/tensorrt/fp16": [],
    }
    # an fp32 record of another machine (a copied cache), or another thread count: no counterpart
    elsewhere = FP32.model_copy(update={"machine_id": "another-machine"})
    assert float_counterpart(int8, [elsewhere]) is None
    assert marked(elsewhere, int8)["cnn/onnxruntime/int8"] == []
    assert float_counterpart(int8, [make_record("cnn", "onnxruntime", "fp32", threads=2)]) is None
    assert float_counterpart(int8, [FP32]) is FP32


def test_failed_records_are_ignored():
    failed_int8 = make_record("cnn", "onnxruntime", "int8", status="failed", reason="build")
    failed_fp32 = make_record("cnn", "onnxruntime", "fp32", status="failed", reason="build")
    slow_int8 = make_record("cnn", "onnxruntime", "int8", speed=2.0, seed=7)
    assert marked(FP32, failed_int8)["cnn/onnxruntime/int8"] == []
    assert marked(failed_fp32, slow_int8)["cnn/onnxruntime/int8"] == []


def test_a_compressed_int8_is_compared_with_the_fp32_of_its_own_chain():
    chain = "cnn+distill+prune"
    chain_fp32 = make_record(chain, "onnxruntime", "fp32", speed=0.4, seed=3)
    chain_int8 = make_record(chain, "onnxruntime", "int8", speed=0.7, seed=5)
    # faster than the float baseline, but slower than the pruned fp32 artifact: marked
    assert marked(FP32, chain_fp32, chain_int8)[f"{chain}/onnxruntime/int8"] == [SLOWER_THAN_FP32]
    # without the chain's fp32 the float baseline is the counterpart: 0.7x of it is not slower
    assert marked(FP32, chain_int8)[f"{chain}/onnxruntime/int8"] == []
    slower_than_baseline = make_record(chain, "onnxruntime", "int8", speed=1.6, seed=5)
    assert marked(FP32, slower_than_baseline)[f"{chain}/onnxruntime/int8"] == [SLOWER_THAN_FP32]


def test_marks_are_recomputed_and_other_marks_kept():
    stale = make_record("cnn", "onnxruntime", "int8", speed=0.5, seed=7)
    stale = stale.model_copy(update={"marks": ["over budget", SLOWER_THAN_FP32]})
    assert marked(FP32, stale)["cnn/onnxruntime/int8"] == ["over budget"]


@pytest.fixture(scope="module")
def results():
    return mark_slower_than_fp32(
        make_results(
            FP32,
            make_record("cnn", "onnxruntime", "int8", speed=1.8, seed=7),
            make_record("cnn", "litert", "fp32", speed=1.0, seed=9),
            make_record("cnn", "litert", "dynamic_int8", speed=0.6, seed=11),
        )
    )


def test_the_run_table_shows_the_mark_and_its_legend(results):
    console = Console(width=100, record=True, file=io.StringIO())
    print_summary("digits", [SimpleNamespace(label="cnn")], results, console=console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100, text
    rows = [line.split() for line in text.splitlines() if line.startswith("cnn")]
    assert rows[1][:5] == ["cnn", "ort", "i8", "ok", "slow"]
    assert [row[3:5] for row in rows if row[1] == "lrt"] == [["ok", "95.00"]] * 2
    assert "slow=slower than its fp32 on the same runtime" in " ".join(text.split())


def test_the_reports_show_the_mark_beside_the_row_and_a_legend(results):
    md = markdown_report(results)
    head = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert "| status | marks |" in head
    row = next(
        line for line in md.splitlines() if line.startswith("| cnn | cnn | onnxruntime | int8 |")
    )
    assert "| ok | slower than fp32 |" in row and row.count(" | ") == head.count(" | ")
    assert f"- {SLOWER_THAN_FP32}: {LEGEND[SLOWER_THAN_FP32]}" in md
    page = html_report(results)
    assert "<td>ok</td><td>slower than fp32</td>" in page
    assert f"<p class='legend'>{SLOWER_THAN_FP32}: p50 latency" in page
    plain = make_results(FP32)  # nothing marked: no marks column, no legend
    assert "marks" not in markdown_report(plain) and "class='legend'" not in html_report(plain)


def test_the_reports_say_what_the_build_of_a_marked_artifact_left_in_float():
    notes = ["run in float between DequantizeLinear and QuantizeLinear ...: HardSigmoid x28"]
    slow = make_record("cnn", "onnxruntime", "int8", speed=1.5, seed=7)
    slow = slow.model_copy(update={"runtime": {**slow.runtime, "build_notes": notes}})
    bare = make_record("rnn", "onnxruntime", "int8", speed=1.5, seed=8)
    fp32_rnn = make_record("rnn", "onnxruntime", "fp32", speed=1.0, seed=3)
    results = mark_slower_than_fp32(make_results(FP32, slow, fp32_rnn, bare))
    md = markdown_report(results)
    section = md.split("## Why marked artifacts are slower than fp32")[1]
    assert f"- cnn/onnxruntime/int8: {notes[0]}" in section
    assert "- rnn/onnxruntime/int8: its build left no op in float" in section
    assert "HardSigmoid x28" in html_report(results)
    unmarked = make_results(FP32, slow.model_copy(update={"marks": []}))
    assert "Why marked" not in markdown_report(unmarked)


def test_a_gate_rule_can_forbid_the_mark(results, tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text(
        "rules:\n  - match: {precision: '*int8'}\n    forbid_marks: [slower than fp32]\n"
    )
    report = run_gates(results, load_policy(path))
    checks = {c.record: c for c in report.checks if c.name == "forbid_marks"}
    assert checks["cnn/onnxruntime/int8"].status == "fail"
    assert checks["cnn/litert/dynamic_int8"].status == "pass" and report.exit_code == 1
    path.write_text("rules:\n  - forbid_marks: [slower than fp16]\n")
    with pytest.raises(ConfigError, match="unknown mark.*'slower than fp16'.*slower than fp32"):
        load_policy(path)


def test_the_search_never_chooses_a_trial_slower_than_fp32():
    fp32 = make_record("cnn~p0.5~k0", "onnxruntime", "fp32", speed=1.0, size=90_000)
    slow = make_record("cnn~p0.5~k0", "onnxruntime", "int8", speed=1.5, seed=7)
    fast = make_record("cnn~p0.5~k1", "onnxruntime", "int8", speed=0.8, seed=9, size=50_000)
    trials = [
        Trial("cnn", 0.5, "fp32", 0, accuracy_drop=0.1, size_bytes=90_000),
        Trial("cnn", 0.5, "int8", 0, accuracy_drop=0.3, size_bytes=30_000),
        Trial("cnn", 0.5, "int8", 1, accuracy_drop=0.2, size_bytes=50_000),
    ]
    mark_slower_trials(trials, [fp32, slow, fast])
    assert [t.marks for t in trials] == [[], [SLOWER_THAN_FP32], []]
    # by bytes the slow int8 trial is the best, but it is marked: the next smallest is chosen
    assert choose(trials, [0, 1, 2], max_drop=1.0, objective="bytes") == 2
    trials[2].accuracy_drop = 2.0  # over the budget: the fp32 trial, not the marked one
    assert choose(trials, [0, 1, 2], max_drop=1.0, objective="bytes") == 0
    # no fp32 trial of the same ratio: the unpruned fp32 trial is the counterpart; none: no mark
    alone = [Trial("cnn", 0.5, "int8", 0)]
    mark_slower_trials(alone, [slow])
    assert alone[0].marks == []
    pair = [Trial("cnn", 0.0, "fp32", 0), Trial("cnn", 0.5, "int8", 0)]
    mark_slower_trials(pair, [fp32, slow])
    assert pair[1].marks == [SLOWER_THAN_FP32]


def test_a_really_slowed_artifact_is_marked(tmp_path):
    """End to end on real per-call samples: two fresh workers time the same tiny checkpoint on
    torch, the second with every call made 5x as slow by the harness's busy wait."""
    import torch

    from modelpress.baselines import view_for
    from modelpress.checkpoint import save_trained
    from modelpress.data import DataConfig, load_dataset
    from modelpress.measure.bench import BenchJob, BenchSettings, benchmark
    from modelpress.models import create_model

    data = load_dataset(view_for("resnet8", DataConfig("digits")))
    torch.manual_seed(0)
    model = create_model("resnet8", input_spec=data.input_spec, num_classes=10, width=0.25)
    art = save_trained(tmp_path / "cnn.safetensors", model.eval(), data)
    settings = BenchSettings(
        batch_sizes=(1,),
        warmup_calls=5,
        warmup_seconds=0.0,
        min_calls=100,
        min_seconds=0.2,
        validate=False,
    )
    opts = {"threads": 1}
    jobs = [BenchJob(art, "torch", "fp32", opts, model="cnn")]
    # 5x: two workers on a loaded 2-core machine were seen to differ by 2x on their own
    jobs.append(BenchJob(art, "torch", "fp32", opts, model="cnn", slowdown=4.0))
    res = benchmark(jobs, settings)
    fp32, slowed = res.records
    assert fp32.status == slowed.status == "ok", (fp32.reason, slowed.reason)
    slowed = slowed.model_copy(update={"precision": "int8"})  # as a much slower int8 build
    out = mark_slower_than_fp32(res.model_copy(update={"records": [fp32, slowed]}))
    assert [r.marks for r in out.records] == [[], [SLOWER_THAN_FP32]]
