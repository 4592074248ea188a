import io
import re
from types import SimpleNamespace

import pytest
from conftest import make_record, make_results
from rich.console import Console

from modelpress.errors import TargetUnavailable, one_line
from modelpress.run.table import print_summary, unavailable_lines, unavailable_reason
from modelpress.targets.base import Availability

TRT_WHY = "no CUDA GPU is visible (torch.cuda.is_available() is False)"


def _skip_reason(availability: Availability, target: str) -> str:
    """The reason the bench worker records when a target is unavailable (bench_worker.py)."""
    with pytest.raises(TargetUnavailable) as exc:
        availability.require(target)
    return one_line(exc.value)


TRT_REASON = _skip_reason(Availability(False, TRT_WHY), "tensorrt")
LONG_MODEL = "attention+distill+prune"
ANSI = re.compile(r"\x1b|\x9b")


@pytest.fixture(scope="module")
def results():
    recs = []
    for label, family in (("cnn", "cnn"), ("attention", "attention")):
        for model in (label, f"{label}+distill+prune"):
            recs += [
                make_record(model, "onnxruntime", "fp32", family=family, drop=0.0, size=90_000),
                make_record(model, "onnxruntime", "int8", family=family, speed=0.5, seed=3),
                make_record(model, "litert", "dynamic_int8", family=family, drop=1.25, seed=5),
                make_record(model, "tensorrt", "fp16", status="skipped", reason=TRT_REASON),
            ]
    recs.append(
        make_record(
            LONG_MODEL, "litert", "int8", status="failed", reason="build: BuildError: op Foo"
        )
    )
    recs.append(
        make_record(
            "cnn", "litert", "qdq", status="skipped", reason="target litert does not build 'qdq'"
        )
    )
    assert sum(unavailable_reason(r) is not None for r in recs) == 4
    recs += [
        make_record(m, "tensorrt", "int8", status="skipped", reason=TRT_REASON)
        for m in ("cnn", "attention")
    ]
    return make_results(*recs)


MODELS = [SimpleNamespace(label="cnn"), SimpleNamespace(label="attention")]


def render(results, width=100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    print_summary("digits", MODELS, results, console=console)
    return console.export_text()


def test_unavailable_target_is_one_line_not_rows(results):
    text = render(results)
    lines, rows = text.splitlines(), [line.split() for line in text.splitlines()]
    flat = " ".join(text.split())  # an entry may wrap at the console width
    table = [row for row in rows if row and row[0].startswith(("cnn", "attention"))]
    assert len(table) == 4 * 3 + 2 and not any("trt" in row or "tensorrt" in row for row in table)
    assert [line for line in lines if "tensorrt (" in line] == [
        next(line for line in lines if line.startswith("unavailable  tensorrt (6 builds not run)"))
    ]
    assert f"{TRT_WHY} — pip install -e '.[tensorrt]' on a CUDA machine" in flat
    # the other failed / skipped rows stay, short status, their reasons under the table
    assert [LONG_MODEL, "lrt", "i8", "failed"] in rows and ["cnn", "lrt", "qdq", "skipped"] in rows
    assert "not measured litert int8: build: BuildError: op Foo" in flat
    assert "not measured litert qdq: target litert does not build 'qdq'" in flat


def test_table_fits_100_columns_with_a_legend(results):
    for width in (100, 80):
        text = render(results, width)
        assert max(len(line) for line in text.splitlines()) <= width, text
    text = render(results)
    rows = [line for line in text.splitlines() if line.startswith(("cnn", "attention"))]
    assert len(rows) == 4 * 3 + 2  # every row on one line (none wrapped)
    assert any(line.startswith(LONG_MODEL) for line in rows)  # fits without shortening
    legend = next(line for line in text.splitlines() if line.startswith("ort=ONNX Runtime"))
    for word in ("ort=ONNX Runtime", "lrt=LiteRT", "i8=", "dyn8=", "Δpt=", "×sm/×fast="):
        assert word in legend, legend
    assert "TensorRT" not in legend and "PyTorch" not in legend  # no row uses them
    header = next(line for line in text.splitlines() if line.startswith("model"))
    assert header.split() == ["model", "tgt", "prec", "status", "acc", "%", "Δpt", "size"] + [
        "×sm",
        "p50ms",
        "×fast",
    ]


def test_long_labels_are_shortened_not_wrapped(results):
    long = results.model_copy(deep=True)
    for r in long.records:
        r.model = r.model.replace("cnn", "cnn_with_a_very_long_registry_name_v2")
    console = Console(width=100, record=True, file=io.StringIO())
    print_summary(
        "digits",
        [SimpleNamespace(label="cnn_with_a_very_long_registry_name_v2")],
        long,
        console=console,
    )
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100, text
    assert sum("…+distill+prune" in line for line in text.splitlines()) == 3


def test_no_control_codes_without_a_terminal(results, capsys, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")  # not a tty wins: CI logs stay plain text
    print_summary("digits", MODELS, results)
    out = capsys.readouterr().out
    assert not ANSI.search(out) and "ort=ONNX Runtime" in out and "cnn+distill+prune" in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_how_to_enable_comes_from_the_pip_extra_when_the_target_is_not_known():
    reason = _skip_reason(Availability(False, "no NPU driver", extra="npu"), "npu")
    rec = make_record("cnn", "npu", "int8", status="skipped", reason=reason)
    assert unavailable_reason(rec) == "no NPU driver"
    assert unavailable_lines([rec]) == [
        "npu (1 build not run): no NPU driver — pip install 'modelpress[npu]'"
    ]
    other = make_record("cnn", "npu", "fp32", status="skipped", reason="npu does not build fp32")
    assert unavailable_reason(other) is None and unavailable_lines([other]) == []
