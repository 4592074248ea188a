"""Reports of benchmark results and gate runs.

- :func:`markdown_table` / :func:`write_report`: one row per (artifact, target), failed and
  skipped rows with their reason; a self-contained HTML file (plots embedded as base64 PNG):
  accuracy vs p50 latency per target with the Pareto front marked, size bars, and a per-family
  comparison. Plots use matplotlib's Agg canvas directly (no pyplot, no global state).
- :func:`gate_junit_xml`, :func:`gate_markdown`, :func:`print_gate`: a gate run as JUnit XML
  (one testcase per check, so CI systems list every gate), markdown and a terminal table.

>>> from modelpress.report import write_report                        # doctest: +SKIP
>>> md, html = write_report(load_results("results.json"), "report/")
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from .fsutil import atomic_write_text
from .report_table import human_bytes
from .results import Record, Results

if TYPE_CHECKING:
    from .gate import GateReport


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def batches_of(results: Results) -> list[int]:
    return sorted({lat.batch for r in results.records for lat in r.latency})


def table_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the results table, shared by markdown and HTML."""
    batches = batches_of(results)
    first, rest = (batches[0], batches[1:]) if batches else (1, [])
    head = ["model", "family", "target", "precision", "status", "accuracy", "drop (pts)"]
    head += ["agreement", f"p50 / p90 / p99 ms (batch {first})"]
    head += [f"p50 ms (batch {b})" for b in rest] + [f"samples/s (batch {b})" for b in rest]
    head += ["size", "load s", "peak RSS", "threads", "reason"]
    rows = []
    for r in results.records:
        v, lat = r.validation, r.latency_at(first)
        p = f"{lat.p50_ms:.3f} / {lat.p90_ms:.3f} / {lat.p99_ms:.3f}" if lat else "-"
        rows.append(
            [r.model, r.family, r.target, r.precision, r.status]
            + [_fmt(v and v.accuracy), _fmt(v and v.accuracy_drop, ".2f"), _fmt(v and v.agreement)]
            + [p]
            + [_fmt(x.p50_ms if (x := r.latency_at(b)) else None, ".3f") for b in rest]
            + [_fmt(x.throughput_sps if (x := r.latency_at(b)) else None, ",.0f") for b in rest]
            + [
                human_bytes(r.size_bytes) if r.size_bytes is not None else "-",
                _fmt(r.load_s, ".2f"),
            ]
            + [human_bytes(r.peak_rss_bytes) if r.peak_rss_bytes else "-", _fmt(r.threads, "d")]
            + [r.reason]
        )
    return head, rows


def markdown_table(results: Results) -> str:
    """One markdown row per record; ``|`` in reasons is escaped."""
    head, rows = table_rows(results)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def environment_lines(results: Results) -> list[str]:
    env = results.environment
    libs = ", ".join(f"{k} {v}" for k, v in env.versions.items())
    return [
        f"CPU: {env.cpu_model}, {env.logical_cores} logical cores ({env.usable_cores} usable)",
        f"Platform: {env.platform}, Python {env.python}",
        f"Libraries: {libs}",
        f"Created: {results.created} (schema v{results.schema_version})",
    ]


def markdown_report(results: Results, title: str = "modelpress benchmark") -> str:
    env = "\n".join(f"- {line}" for line in environment_lines(results))
    return f"# {title}\n\n{env}\n\n{markdown_table(results)}\n"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (latency, accuracy) points no other point beats on both, by latency.

    A point is dominated when another is at least as fast and at least as accurate, and
    strictly better on one of the two.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _first_latency(r: Record):
    return min(r.latency, key=lambda lat: lat.batch) if r.latency else None


def _ok(results: Results) -> list[Record]:
    return [r for r in results.records if r.status == "ok" and r.latency]


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax, text: str = "no successful record") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def plot_pareto(results: Results) -> str:
    """Accuracy vs p50 latency (smallest batch), one panel per target, Pareto front marked."""
    from matplotlib.figure import Figure

    recs = [r for r in _ok(results) if r.validation]
    targets = sorted({r.target for r in recs}) or ["-"]
    fig = Figure(figsize=(4.2 * len(targets), 3.6), layout="constrained")
    for k, target in enumerate(targets):
        ax = fig.add_subplot(1, len(targets), k + 1)
        mine = [r for r in recs if r.target == target]
        if not mine:
            _empty(ax, "no successful record with accuracy")
            continue
        pts = [(_first_latency(r).p50_ms, r.validation.accuracy) for r in mine]
        front = pareto_front(pts)
        ax.scatter(*zip(*pts), color="#888", label="measured")
        fx, fy = zip(*(pts[i] for i in front))
        ax.step(fx, fy, where="post", color="#d62728", label="Pareto front")
        ax.scatter(fx, fy, color="#d62728", zorder=3)
        for (x, y), r in zip(pts, mine):
            ax.annotate(
                f"{r.model}/{r.precision}",
                (x, y),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.set(
            title=target,
            xlabel=f"p50 latency, ms (batch {_first_latency(mine[0]).batch})",
            ylabel="test accuracy",
        )
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def plot_sizes(results: Results) -> str:
    """Bytes on disk of every record with a known size (KiB), coloured by target."""
    from matplotlib.figure import Figure

    recs = [r for r in results.records if r.size_bytes]
    fig = Figure(figsize=(7, 0.3 * max(len(recs), 4) + 1), layout="constrained")
    ax = fig.add_subplot()
    if not recs:
        _empty(ax, "no size measured")
        return _png(fig)
    targets = sorted({r.target for r in recs})
    colors = {t: f"C{i}" for i, t in enumerate(targets)}
    ax.barh(
        [r.label for r in recs],
        [r.size_bytes / 1024 for r in recs],
        color=[colors[r.target] for r in recs],
    )
    ax.invert_yaxis()
    ax.set(xlabel="size on disk, KiB", title="artifact size")
    return _png(fig)


def plot_families(results: Results) -> str:
    """Per family: the best p50 latency and the best accuracy each target reached."""
    from matplotlib.figure import Figure

    recs = _ok(results)
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_lat, ax_acc = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if not recs:
        _empty(ax_lat), _empty(ax_acc)
        return _png(fig)
    families = sorted({r.family or "?" for r in recs})
    targets = sorted({r.target for r in recs})
    width = 0.8 / len(targets)
    for j, target in enumerate(targets):
        lat, acc = [], []
        for fam in families:
            mine = [r for r in recs if r.target == target and (r.family or "?") == fam]
            nan = float("nan")  # no bar where the target has no record of the family
            lat.append(min((_first_latency(r).p50_ms for r in mine), default=nan))
            acc.append(max((r.validation.accuracy for r in mine if r.validation), default=nan))
        xs = [i + j * width for i in range(len(families))]
        ax_lat.bar(xs, lat, width, label=target, color=f"C{j}")
        ax_acc.bar(xs, acc, width, label=target, color=f"C{j}")
    for ax, what in ((ax_lat, "best p50 latency, ms"), (ax_acc, "best accuracy")):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(families))], families)
        ax.set(ylabel=what, title=f"{what} per family and target")
        ax.legend(fontsize=7)
    return _png(fig)


PLOTS = {
    "Accuracy vs p50 latency (Pareto front in red)": plot_pareto,
    "Size on disk": plot_sizes,
    "Per-family comparison": plot_families,
}

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}tr.failed td{background:#fde8e8}tr.skipped td{background:#fff6dd}
img{max-width:100%;margin:.5em 0 1.5em}"""


def html_report(results: Results, title: str = "modelpress benchmark") -> str:
    """One self-contained HTML page: environment, the table, and every plot of :data:`PLOTS`."""
    esc = html.escape
    head, rows = table_rows(results)
    status_col = head.index("status")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1><ul>",
    ]
    parts += [f"<li>{esc(line)}</li>" for line in environment_lines(results)]
    parts.append("</ul><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        cells = "".join(f"<td>{esc(c)}</td>" for c in row)
        parts.append(f"<tr class='{esc(row[status_col])}'>{cells}</tr>")
    parts.append("</table>")
    for caption, plot in PLOTS.items():
        parts.append(
            f"<h2>{esc(caption)}</h2><img alt='{esc(caption)}' "
            f"src='data:image/png;base64,{plot(results)}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: Results, out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.html`` into ``out_dir`` (atomically); return both paths."""
    out_dir = Path(out_dir)
    md = atomic_write_text(out_dir / f"{stem}.md", markdown_report(results))
    page = atomic_write_text(out_dir / f"{stem}.html", html_report(results))
    return md, page


def gate_junit_xml(report: GateReport) -> str:
    """JUnit XML: one testcase per check; failures, errors and skips with their message."""
    suite = ET.Element(
        "testsuite",
        name="modelpress.gate",
        tests=str(len(report.checks)),
        failures=str(report.count("fail")),
        errors=str(report.count("error")),
        skipped=str(report.count("skip")),
        time="0",
    )
    for c in report.checks:
        case = ET.SubElement(
            suite, "testcase", classname="gate." + c.record.replace("/", "."), name=c.name, time="0"
        )
        text = f"measured: {c.measured}\nthreshold: {c.threshold}\n{c.message}"
        if c.status == "fail":
            ET.SubElement(case, "failure", message=c.message, type="GateFailed").text = text
        elif c.status == "error":
            ET.SubElement(case, "error", message=c.message, type="GateError").text = text
        elif c.status == "skip":
            ET.SubElement(case, "skipped", message=c.message)
        if c.details:
            ET.SubElement(case, "system-out").text = "\n".join(
                f"{k}: {v}" for k, v in c.details.items()
            )
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _cell(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)


def gate_markdown(report: GateReport) -> str:
    lines = [
        "| status | record | check | measured | threshold | message |",
        "|---|---|---|---|---|---|",
    ]
    for c in report.checks:
        cells = (c.status, c.record, c.name, _cell(c.measured), _cell(c.threshold), c.message)
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    return "\n".join([*lines, "", f"**{report.summary()}**"])


def print_gate(report: GateReport, quiet: bool = False) -> None:
    """The checks as a terminal table (failures and errors first), then the summary line."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not quiet:
        style = {"pass": "green", "fail": "bold red", "error": "bold magenta", "skip": "yellow"}
        table = Table(title="modelpress gate")
        for col in ("status", "record", "check", "measured", "threshold", "message"):
            table.add_column(col, overflow="fold")
        order = {"error": 0, "fail": 1, "skip": 2, "pass": 3}
        for c in sorted(report.checks, key=lambda c: order[c.status]):
            table.add_row(
                f"[{style[c.status]}]{c.status}[/]",
                c.record,
                c.name,
                _cell(c.measured),
                _cell(c.threshold),
                c.message,
            )
        console.print(table)
    console.print(report.summary(), highlight=False)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``modelpress report`` (for cli.py's subparser)."""
    p.add_argument("results", type=Path, help="results.json written by `modelpress bench`")
    p.add_argument("--out", type=Path, default=Path("report"), help="folder for report.md/.html")
    p.add_argument("--title", default="modelpress benchmark")


def cmd_report(a: argparse.Namespace) -> int:
    from .results import load_results

    results = load_results(a.results)
    out = Path(a.out)
    md = atomic_write_text(out / "report.md", markdown_report(results, a.title))
    page = atomic_write_text(out / "report.html", html_report(results, a.title))
    print(f"report -> {md}, {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m modelpress.report RESULTS [--out DIR]``."""
    from .cli import standalone

    return standalone("modelpress report", __doc__, configure_parser, cmd_report, argv)


if __name__ == "__main__":
    sys.exit(main())
