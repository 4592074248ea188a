import base64
import re

import pytest
from test_gate import make_record, make_results

from modelpress.report import (
    PLOTS,
    html_report,
    main,
    markdown_table,
    pareto_front,
    write_report,
)
from modelpress.results import load_results, save_results


@pytest.fixture(scope="module")
def results():
    return make_results(
        make_record("resnet8", "onnxruntime", "fp32", accuracy=0.97, speed=1.0),
        make_record("resnet8", "onnxruntime", "int8", accuracy=0.96, speed=0.6, seed=2),
        make_record("resnet8", "onnxruntime", "fp16", accuracy=0.95, speed=1.5, seed=4),
        make_record("gru", "onnxruntime", "dynamic_int8", family="rnn", accuracy=0.93, seed=6),
        make_record("vit", "torch", "fp32", family="attention", accuracy=0.9, speed=3.0, seed=8),
        make_record(
            "mobilenet",
            "litert",
            "int8",
            status="failed",
            reason="build: BuildError: <script>alert(1)</script> | op not supported",
        ),
        make_record(
            "lstm",
            "tensorrt",
            "fp16",
            family="rnn",
            status="skipped",
            reason="target tensorrt is unavailable: no CUDA device",
        ),
    )


@pytest.mark.parametrize(
    "points, front",
    [
        ([(1.0, 0.9), (2.0, 0.95), (3.0, 0.94), (0.5, 0.5)], [3, 0, 1]),
        ([(1.0, 0.9), (1.0, 0.95)], [1]),  # same latency: only the more accurate one
        ([(1.0, 0.9), (2.0, 0.9)], [0]),  # same accuracy: only the faster one
        ([], []),
    ],
)
def test_pareto_front(points, front):
    assert pareto_front(points) == front


def test_markdown_has_every_record_and_the_reasons(results):
    md = markdown_table(results)
    lines = md.splitlines()
    assert len(lines) == 2 + len(results.records)
    assert "p50 / p90 / p99 ms (batch 1)" in lines[0] and "samples/s (batch 32)" in lines[0]
    failed = next(line for line in lines if "| failed |" in line)
    assert "BuildError" in failed and "\\| op not supported" in failed  # pipe escaped
    skipped = next(line for line in lines if "| skipped |" in line)
    assert "no CUDA device" in skipped
    # every row has as many cells as the header
    assert {line.count(" | ") for line in lines[2:]} == {lines[0].count(" | ")}


def test_html_is_self_contained_with_every_plot(results):
    page = html_report(results)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(PLOTS) == 3
    for img in images:
        assert base64.b64decode(img).startswith(b"\x89PNG")
    assert "<script>" not in page and "&lt;script&gt;" in page  # reasons are escaped
    assert "<tr class='failed'>" in page and "<tr class='skipped'>" in page
    assert "Test CPU" in page and "http" not in page.replace("http-equiv", "")


def test_plots_render_without_any_successful_record(results):
    only_failed = make_results(*[r for r in results.records if r.status != "ok"])
    page = html_report(only_failed)
    assert page.count("data:image/png;base64,") == 3


def test_write_report_and_cli(tmp_path, results, capsys):
    md, page = write_report(results, tmp_path / "out")
    assert md.read_text().startswith("# modelpress benchmark") and page.stat().st_size > 10_000
    save_results(results, tmp_path / "results.json")
    assert load_results(tmp_path / "results.json") == results  # the schema round-trips
    assert main([str(tmp_path / "results.json"), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    (tmp_path / "bad.json").write_text("[]")
    assert main([str(tmp_path / "bad.json")]) == 2
    assert "not a modelpress results file" in capsys.readouterr().err
