import base64
import re

import pytest
from conftest import make_record, make_results

from modelpress import report
from modelpress.measure.report import (
    html_report,
    main,
    markdown_report,
    markdown_table,
    write_report,
)
from modelpress.measure.report_plots import family_figure, family_points
from modelpress.measure.results import Validation, load_results, save_results

IMAGE = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


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


@pytest.fixture(scope="module")
def page(results):
    return html_report(results)


def _sections(page: str) -> dict[str, str]:
    """HTML of each <h2> section, by its heading."""
    parts = re.split(r"<h2>([^<]*)</h2>", page)
    return dict(zip(parts[1::2], parts[2::2]))


def test_html_is_self_contained_with_one_plot_pair_per_family(results, page):
    images = IMAGE.findall(page)
    families = {r.family for r in results.records if r.status == "ok"}
    assert len(images) == len(families) == 3  # cnn, rnn, attention: one figure (2 panels) each
    for img in images:
        assert base64.b64decode(img).startswith(b"\x89PNG")
    sections = _sections(page)
    assert set(families) <= set(sections)
    for family in families:  # every key lists this family's measured records and no other
        keys = re.findall(
            r"<tr><td>\d+</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>", sections[family]
        )
        mine = {r.label for r in results.records if r.family == family and r.status == "ok"}
        assert {"/".join(k) for k in keys} == mine and len(IMAGE.findall(sections[family])) == 1
    assert "<script>" not in page and "&lt;script&gt;" in page  # reasons are escaped
    assert "<tr class='failed'>" in page and "<tr class='skipped'>" in page
    assert "Test CPU" in page and "http" not in page.replace("http-equiv", "")


def test_the_old_bar_charts_are_gone(page):
    assert not any(hasattr(report, name) for name in ("plot_families", "plot_sizes", "PLOTS"))
    assert "best accuracy" not in page and "Per-family comparison" not in page


def test_families_are_numbered_apart_with_their_own_fronts():
    fast = make_record("cnn+prune", "onnxruntime", "int8", drop=1.0, speed=0.5, size=10_000, seed=1)
    recs = [
        make_record("cnn", "onnxruntime", "fp32", drop=0.0, speed=1.0, size=40_000),
        fast,
        make_record("cnn", "litert", "int8", drop=2.0, speed=0.8, size=12_000, seed=3),
        make_record("gru", "onnxruntime", "fp32", family="rnn", drop=0.0, speed=9.0, seed=5),
    ]
    # a record measured at batch 1 only: the family falls back to its first batch
    only_b1 = make_record("gru", "litert", "fp32", family="rnn", drop=0.4, speed=0.1, seed=7)
    recs.append(only_b1.model_copy(update={"latency": only_b1.latency[:1]}))
    cnn, rnn = family_points(make_results(*recs))
    assert (cnn.family, cnn.batch, rnn.family, rnn.batch) == ("cnn", 32, "rnn", 1)
    assert [p.number for p in cnn.points] == [1, 2, 3] and [p.number for p in rnn.points] == [1, 2]
    assert {p.record.family for p in cnn.points} == {"cnn"}
    labels = {p.number: p.record.label for p in cnn.points}
    assert [labels[n] for n in cnn.latency_front] == [
        "cnn+prune/onnxruntime/int8",
        "cnn/onnxruntime/fp32",
    ]
    # litert int8 is neither faster nor better than the pruned int8 on ORT; it is not smaller either
    assert [labels[n] for n in cnn.size_front] == [
        "cnn+prune/onnxruntime/int8",
        "cnn/onnxruntime/fp32",
    ]
    by_number = {p.number: p.record.target for p in rnn.points}
    assert [by_number[n] for n in rnn.latency_front] == ["litert", "onnxruntime"]
    # without a float reference: the drop is taken vs the base model's fp32 on the same target
    bare = make_record("cnn+prune", "onnxruntime", "fp16", accuracy=0.9, seed=9)
    recs.append(bare.model_copy(update={"validation": Validation(n=360, accuracy=0.9)}))
    recs.append(
        bare.model_copy(update={"target": "torch", "validation": Validation(n=3, accuracy=1)})
    )
    (cnn, _) = family_points(make_results(*recs))
    base_acc = recs[0].validation.accuracy
    assert [round(p.drop, 6) for p in cnn.points if p.record.precision == "fp16"] == [
        round(100 * (base_acc - 0.9), 6)  # the torch one has no fp32 base: not plotted
    ]
    md = markdown_report(make_results(*recs))
    assert "### cnn" in md and "### rnn" in md
    assert "- latency (p50, batch 32): cnn+prune/onnxruntime/int8 (+1.00 pts" in md


def test_numbers_never_overlap_on_a_crowded_plot():
    targets, precisions = ("onnxruntime", "litert", "torch"), ("fp32", "int8", "dynamic_int8")
    recs = [  # 18 points within 1 % of each other, a few exactly on top of each other
        make_record(
            f"m{i % 6}",
            targets[i % 3],
            precisions[i // 6],
            drop=0.5 + 0.01 * (i % 4),
            speed=1.0 + 0.01 * (i % 5),
            size=40_000 + 50 * (i % 7),
            seed=i,
        )
        for i in range(18)
    ]
    (fam,) = family_points(make_results(*recs))
    fig = family_figure(fam)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert sorted(t.get_text() for t in ax.texts) == sorted(str(n) for n in range(1, 19))
        inside = ax.get_window_extent(renderer)
        for i, box in enumerate(boxes):
            assert not any(box.overlaps(other) for other in boxes[:i])
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1
            assert inside.y0 <= box.y0 and box.y1 <= inside.y1


def test_plots_render_without_any_successful_record(results):
    only_failed = make_results(*[r for r in results.records if r.status != "ok"])
    page = html_report(only_failed)
    assert page.count("data:image/png;base64,") == 0
    assert "no record of this family was measured" in page
    assert "<tr class='failed'>" in page


def test_write_report_and_cli(tmp_path, results, capsys):
    md, page = write_report(results, tmp_path / "out")
    text = md.read_text()
    assert text.startswith("# modelpress benchmark") and page.stat().st_size > 10_000
    assert "## Pareto fronts per family" in text and "| reason |" in text
    save_results(results, tmp_path / "results.json")
    assert load_results(tmp_path / "results.json") == results  # the schema round-trips
    assert main([str(tmp_path / "results.json"), "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "report.html").is_file()
    (tmp_path / "bad.json").write_text("[]")
    assert main([str(tmp_path / "bad.json")]) == 2
    assert "not a modelpress results file" in capsys.readouterr().err
