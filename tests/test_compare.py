"""`modelpress compare`: results of several machines, devices and runs side by side."""

import base64
import json
import re

import pytest
from conftest import ENV, make_record, make_results, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from modelpress.errors import ConfigError
from modelpress.measure import compare_page
from modelpress.measure.compare import (
    Cell,
    build_comparison,
    column_labels,
    compare_files,
    file_labels,
    split_columns,
    versus,
    write_compare,
    write_summary,
)
from modelpress.measure.compare_format import markdown_page, markdown_summary, terminal_text
from modelpress.measure.results import save_results

SVG = re.compile(r"src='data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)'")
LONG = "build: BuildError: op GatherND | is not supported by the converter at all, see logs"
ARM = ENV.model_copy(update={"cpu_model": "Arm Neoverse-N1", "logical_cores": 4, "usable_cores": 4})


def on_device(record, device, **extra):
    return record.model_copy(update={"device": device, **extra})


@pytest.fixture
def files(tmp_path):
    """x86/results.json and arm/results.json (two machines), and pis.json (two devices)."""
    x86 = make_results(
        make_record("resnet8", "onnxruntime", "fp32", accuracy=0.97, speed=1.0),
        make_record("resnet8", "onnxruntime", "int8", accuracy=0.96, speed=0.5, seed=2),
        make_record("gru", "onnxruntime", "dynamic_int8", family="rnn", accuracy=0.9, seed=4),
        make_record("resnet8", "tensorrt", "fp16", status="skipped", reason="no CUDA device"),
        env=ENV.model_copy(update={"machine_id": "aaaa"}),
    )
    arm = make_results(
        make_record("resnet8", "onnxruntime", "fp32", accuracy=0.97, speed=2.0, seed=6),
        make_record("resnet8", "onnxruntime", "int8", accuracy=0.95, speed=1.6, seed=8),
        make_record("resnet8", "litert", "int8", status="failed", reason=LONG),
        env=ARM.model_copy(update={"machine_id": "bbbb"}),
    )
    pi = {"machine": "Cortex-A76, 4 of 4 cores, Linux", "machine_id": "cccc"}
    runtime = {"runtime": "onnxruntime", "version": "1.19.2"}
    pis = make_results(
        on_device(make_record(speed=4.0), "pi5", runtime=runtime, marks=["over budget"], **pi),
        on_device(make_record(precision="fp32", speed=6.0), "pi5", runtime=runtime, **pi),
        on_device(make_record(speed=3.0, seed=3), "jetson", machine="Orin Nano, 6 cores"),
    )
    paths = [tmp_path / "x86" / "results.json", tmp_path / "arm" / "results.json"]
    paths.append(tmp_path / "pis.json")
    for path, res in zip(paths, (x86, arm, pis)):
        path.parent.mkdir(exist_ok=True)
        save_results(res, path)
    return paths


def p50(path_results, model, target, precision, batch=1):
    rec = next(r for r in path_results.records if r.key[:3] == (model, target, precision))
    return rec.latency_at(batch).p50_ms


def test_rows_columns_cells_and_machines(files):
    cmp = compare_files(files)
    assert [c.label for c in cmp.columns] == ["x86", "arm", "pi5", "jetson"]
    assert [c.device for c in cmp.columns] == [None, None, "pi5", "jetson"]
    assert cmp.reference_label == "x86"
    keys = [row.key for row in cmp.rows]
    assert keys == [
        ("gru", "onnxruntime", "dynamic_int8"),
        ("resnet8", "onnxruntime", "fp32"),
        ("resnet8", "onnxruntime", "int8"),
        ("resnet8", "litert", "int8"),
        ("resnet8", "tensorrt", "fp16"),
    ]
    rows = {row.key: row for row in cmp.rows}
    int8 = rows[("resnet8", "onnxruntime", "int8")]
    assert [c.status for c in int8.cells] == ["ok", "ok", "ok", "ok"]
    assert int8.cells[2].marks == ("over budget",)
    assert [c.status for c in rows[("gru", "onnxruntime", "dynamic_int8")].cells] == [
        "ok",
        "missing",
        "missing",
        "missing",
    ]
    # machines: the file's environment for local columns, the records' own for devices
    x86, arm, pi5, jetson = (c.machine for c in cmp.columns)
    assert x86.startswith("Test CPU, 2 of 2 cores") and arm.startswith("Arm Neoverse-N1, 4 of 4")
    assert "device pi5: Cortex-A76, 4 of 4 cores, Linux" in pi5 and "onnxruntime 1.19.2" in pi5
    assert "Orin Nano" in jetson
    assert [c.machine_id for c in cmp.columns[:3]] == ["aaaa", "bbbb", "cccc"]


def test_ratios_are_reference_over_column_and_accuracy_in_points(files):
    cmp = compare_files(files)
    x86, arm = (c.results for c in cmp.columns[:2])
    row = next(r for r in cmp.rows if r.key == ("resnet8", "onnxruntime", "int8"))
    assert row.versus[0] is None  # the reference
    key = ("resnet8", "onnxruntime", "int8")
    expected = p50(x86, *key) / p50(arm, *key)
    assert row.versus[1].speedup == pytest.approx(expected)
    assert row.versus[1].speedup < 1  # arm is 1.6 / 0.5 times slower here
    assert row.versus[1].accuracy_pts == pytest.approx(-1.0)
    # the same batch everywhere: --batch 32 compares the batch-32 medians
    cmp32 = compare_files(files, batch=32)
    row32 = next(r for r in cmp32.rows if r.key == key)
    assert row32.cells[0].batch == 32
    assert row32.versus[1].speedup == pytest.approx(p50(x86, *key, 32) / p50(arm, *key, 32))
    text = terminal_text(cmp)
    assert f"{expected:.2f}x / -1.00" in text
    assert "arm vs x86: speed-up (>1 faster) / acc pts (>0 better)" in text


def test_reference_selection(files):
    cmp = compare_files(files, reference="arm")
    assert cmp.reference == 1 and cmp.reference_label == "arm"
    row = next(r for r in cmp.rows if r.key == ("resnet8", "onnxruntime", "fp32"))
    assert row.versus[1] is None and row.versus[0].speedup > 1  # x86 is faster than arm
    back = compare_files(files)
    row_back = next(r for r in back.rows if r.key == row.key)
    assert row.versus[0].speedup * row_back.versus[1].speedup == pytest.approx(1.0)
    assert "against the reference **arm**" in markdown_page(cmp, "t")
    with pytest.raises(ConfigError, match=r"'mac' is not a column; the columns are x86, arm"):
        compare_files(files, reference="mac")


def test_labels_are_unique_and_can_be_given(files, tmp_path):
    assert file_labels(["a/results.json", "b/results.json", "base.json"]) == ["a", "b", "base"]
    assert file_labels(["x/run/results.json", "y/run/results.json"]) == ["x/run", "y/run"]
    assert file_labels(["new.json", "new.json"]) == ["new", "new #2"]
    # one device measured in two runs: qualified by the run's file
    assert column_labels(["base", "new", "new"], ["pi", "pi", None]) == ["pi@base", "pi@new", "new"]
    cmp = compare_files(files, labels=["laptop", "graviton", "pi", "orin"])
    assert [c.label for c in cmp.columns] == ["laptop", "graviton", "pi", "orin"]
    assert compare_files(files, labels=list("abcd"), reference="c").reference == 2
    with pytest.raises(ConfigError, match="2 label.* for 4 column.*x86, arm, pi5, jetson"):
        compare_files(files, labels=["a", "b"])
    with pytest.raises(ConfigError, match="empty or repeated"):
        compare_files(files, labels=["a", "a", "b", "c"])


def test_failed_skipped_and_other_batch_cells(files):
    cmp = compare_files(files)
    rows = {row.key: row for row in cmp.rows}
    failed = rows[("resnet8", "litert", "int8")].cells[1]
    assert failed.status == "failed" and len(failed.reason) <= 48
    assert (
        failed.reason.startswith("build: BuildError: op GatherND") and failed.reason[-3:] == "..."
    )
    skipped = rows[("resnet8", "tensorrt", "fp16")]
    assert skipped.cells[0].reason == "no CUDA device"
    assert skipped.versus[1].speedup is None
    lines = markdown_page(cmp, "t").splitlines()
    line = next(x for x in lines if x.startswith("| resnet8 | litert"))
    assert "failed: build: BuildError: op GatherND \\|" in line  # the pipe is escaped
    assert "skipped: no CUDA device" in markdown_page(cmp, "t")
    assert "[over budget]" in markdown_page(cmp, "t")
    # a column that only measured batch 32: its cell says so and gets no speed-up
    only32 = make_record(seed=5)
    only32 = only32.model_copy(update={"latency": only32.latency[1:]})
    ref = make_results(make_record())
    cmp = build_comparison(split_columns([("a.json", ref), ("b.json", make_results(only32))]))
    cell, vs = cmp.rows[0].cells[1], cmp.rows[0].versus[1]
    assert cell.batch == 32 and vs.speedup is None and vs.accuracy_pts == pytest.approx(0.0)
    assert "(batch 32)" in terminal_text(cmp)


def many_rows(n_rows: int, n_files: int, tmp_path):
    paths = []
    for f in range(n_files):
        recs = [
            make_record(f"m{i:03d}", "onnxruntime", "int8", speed=1 + f, seed=i)
            for i in range(n_rows)
        ]
        paths.append(tmp_path / f"run{f}.json")
        save_results(make_results(*recs), paths[-1])
    return compare_files(paths)


@pytest.mark.parametrize("n_rows, n_files", [(3, 2), (57, 2), (200, 3), (5, 14)])
def test_summary_is_at_most_60_lines(n_rows, n_files, tmp_path):
    cmp = many_rows(n_rows, n_files, tmp_path)
    text = markdown_summary(cmp, "compare")
    lines = text.splitlines()
    assert len(lines) <= 60
    shown = sum(1 for x in lines if re.match(r"\| m\d{3} \|", x))
    note = [x for x in lines if x.startswith("... ")]
    if shown < n_rows:
        assert note == [f"... {n_rows - shown} more rows, see compare.html"]
        assert shown >= 35
    else:
        assert not note
    assert len(markdown_page(cmp, "c").splitlines()) > n_rows  # the full table has them all


def test_outputs_page_plots_and_data(files, tmp_path):
    cmp = compare_files(files)
    written = write_compare(cmp, tmp_path / "out", "side by side")
    assert [p.name for p in written] == ["compare.md", "compare.html", "compare.json"]
    page = (tmp_path / "out" / "compare.html").read_text()
    for col in cmp.columns:
        assert f"<h2>{col.label}</h2>" in page and col.machine in page
    svgs = [base64.b64decode(s).decode() for s in SVG.findall(page)]
    # x86: cnn and rnn; arm, pi5, jetson: cnn
    assert len(svgs) == 5 and all("<svg" in s and "Pareto" in s for s in svgs)
    assert "<td class='failed'>failed: build" in page
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert data["reference"] == "x86" and [c["label"] for c in data["columns"]] == [
        "x86",
        "arm",
        "pi5",
        "jetson",
    ]
    row = next(r for r in data["rows"] if r["precision"] == "int8" and r["target"] == "onnxruntime")
    mine = next(r for r in cmp.rows if r.key == ("resnet8", "onnxruntime", "int8"))
    assert row["versus_reference"]["arm"]["speedup"] == pytest.approx(mine.versus[1].speedup)
    assert row["cells"]["pi5"]["marks"] == ["over budget"]


def test_no_half_written_outputs(files, tmp_path, monkeypatch):
    def broken(cmp, title):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(compare_page, "html_page", broken)
    with pytest.raises(RuntimeError):
        write_compare(compare_files(files), tmp_path / "out", "t")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_summary_goes_to_the_github_step_summary(tmp_path, monkeypatch):
    step = tmp_path / "step.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    assert write_summary("### compare\n", None) == step
    assert step.read_text() == "earlier step\n### compare\n"
    assert write_summary("mine\n", tmp_path / "s.md") == tmp_path / "s.md"  # --summary wins
    assert (tmp_path / "s.md").read_text() == "mine\n" and "mine" not in step.read_text()
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert write_summary("x", None) is None


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelpress: error: "), proc.stderr
    return lines[0]


def test_cli_end_to_end(files, tmp_path):
    out, summary = tmp_path / "cmp", tmp_path / "summary.md"
    args = [str(p) for p in files[:2]]
    proc = run_cli("compare", *args, "--out", str(out), "--summary", str(summary), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "| resnet8 | onnxruntime | int8 |" in proc.stdout and "**x86** (reference)" in proc.stdout
    )
    assert {p.name for p in out.iterdir()} == {"compare.md", "compare.html", "compare.json"}
    assert summary.read_text().startswith("### modelpress compare")
    # `report` with several inputs writes the compare page instead of a single-run report
    proc = run_cli("report", *args, "--out", str(tmp_path / "rep"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in (tmp_path / "rep").iterdir()} >= {"compare.md", "compare.html"}


def test_cli_bad_input_exits_2_with_one_line(files, tmp_path):
    line = _one_line_error(run_cli("compare", str(files[0]), str(tmp_path / "nope.json")))
    assert "nope.json does not exist" in line
    other = tmp_path / "policy.json"
    other.write_text('{"kind": "something else"}')
    assert "not a modelpress results file" in _one_line_error(
        run_cli("compare", str(files[0]), str(other))
    )
    line = _one_line_error(run_cli("compare", *map(str, files[:2]), "--reference", "mac"))
    assert "'mac' is not a column" in line and "x86, arm" in line
    assert not (tmp_path / "compare").exists()


label_part = st.text("abc/.", min_size=1, max_size=4).filter(lambda s: s.strip("/."))


@settings(max_examples=60, deadline=None)
@given(
    files=st.lists(st.tuples(label_part, st.sampled_from(["results", "a", "b"])), max_size=6),
    devices=st.lists(st.sampled_from([None, "pi", "a", "b #2"]), max_size=6),
)
def test_labels_always_unique_and_readable(files, devices):
    paths = [f"{folder}/{stem}.json" for folder, stem in files]
    fls = file_labels(paths)
    assert len(set(fls)) == len(fls) and all(fls)
    devices = devices[: len(fls)]
    cols = column_labels(fls[: len(devices)], devices)
    assert len(set(cols)) == len(cols) and all(cols)
    for label, dev in zip(cols, devices):
        assert dev is None or label.startswith(dev)


positive = st.floats(1e-3, 1e3, allow_nan=False)
accuracy = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(a=positive, b=positive, acc_a=accuracy, acc_b=accuracy)
def test_ratio_direction(a, b, acc_a, acc_b):
    ref, col = Cell("ok", a, 1, acc_a), Cell("ok", b, 1, acc_b)
    there, back = versus(ref, col), versus(col, ref)
    assert there.speedup == pytest.approx(a / b) and there.speedup * back.speedup == pytest.approx(
        1
    )
    assert (there.speedup > 1) == (b < a) or a == b
    assert there.accuracy_pts == pytest.approx(100 * (acc_b - acc_a))
    assert there.accuracy_pts == pytest.approx(-back.accuracy_pts)
    assert versus(ref, Cell("ok", b, 32, acc_b)).speedup is None  # other batch: no ratio
