"""Reports of benchmark results and gate runs.

- :func:`markdown_table` / :func:`write_report`: one row per (artifact, target), failed and
  skipped rows with their reason, a record's marks beside its status (``slower than fp32``, one
  legend line each: :mod:`.marks`), and the Pareto fronts of each model family; a self-contained
  HTML file: per family, accuracy drop vs p50 latency and vs size on disk with the front marked
  and a key of the numbered points (plots from :mod:`modelpress.measure.report_plots`, embedded as
  base64 PNG), then the table.
(A gate run's JUnit XML, markdown and terminal table are in :mod:`.gate_format`.)

>>> from modelpress.measure.report import write_report                        # doctest: +SKIP
>>> md, html = write_report(load_results("results.json"), "report/")
"""

from __future__ import annotations

import argparse
import html
import sys
from collections.abc import Sequence
from pathlib import Path

from ..fsutil import atomic_write_text
from .marks import SLOWER_THAN_FP32, legend_lines
from .report_int8 import budget_html, budget_markdown
from .report_plots import FamilyPoints, family_points, plot_family
from .report_table import human_bytes
from .results import Results


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def batches_of(results: Results) -> list[int]:
    return sorted({lat.batch for r in results.records for lat in r.latency})


def table_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the results table, shared by markdown and HTML; a
    ``marks`` column beside the status when a record carries a mark (see :func:`legend_lines`)."""
    batches = batches_of(results)
    first, rest = (batches[0], batches[1:]) if batches else (1, [])
    marked = any(r.marks for r in results.records)
    head = ["model", "family", "target", "precision", "status"] + ["marks"] * marked
    head += ["accuracy", "drop (pts)"]
    head += ["agreement", f"p50 / p90 / p99 ms (batch {first})"]
    head += [f"p50 ms (batch {b})" for b in rest] + [f"samples/s (batch {b})" for b in rest]
    head += ["size", "load s", "peak RSS", "threads", "reason"]
    rows = []
    for r in results.records:
        v, lat = r.validation, r.latency_at(first)
        p = f"{lat.p50_ms:.3f} / {lat.p90_ms:.3f} / {lat.p99_ms:.3f}" if lat else "-"
        rows.append(
            [r.model, r.family, r.target + (f"@{r.device}" if r.device else ""), r.precision]
            + [r.status]
            + [", ".join(r.marks)] * marked
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


def pareto_lines(fam: FamilyPoints) -> list[str]:
    """Markdown bullets: the records on the family's drop-vs-latency and drop-vs-size fronts."""
    by_number = {p.number: p for p in fam.points}

    def item(n: int, what: str) -> str:
        p = by_number[n]
        x = f"{p.latency_ms:.3f} ms" if what == "latency" else human_bytes(p.size_bytes or 0)
        return f"{p.record.label} ({p.drop:+.2f} pts, {x})"

    batch = f" (p50, batch {fam.batch})" if fam.batch else ""
    latency = ", ".join(item(n, "latency") for n in fam.latency_front) or "not measured"
    size = ", ".join(item(n, "size") for n in fam.size_front) or "not measured"
    return [f"- latency{batch}: {latency}", f"- size on disk: {size}"]


def markdown_report(results: Results, title: str = "modelpress benchmark") -> str:
    """Environment, the Pareto fronts of each family (lower drop and latency / size are
    better), then the table of every record."""
    env = "\n".join(f"- {line}" for line in environment_lines(results))
    fronts = ["## Pareto fronts per family", ""]
    for fam in family_points(results):
        fronts += [f"### {fam.family}", "", *(pareto_lines(fam) if fam.points else ["- none"]), ""]
    marks = "".join(f"\n- {line}" for line in legend_lines(results.records))
    slower = "".join(f"\n- {label}: {why}" for label, why in slower_why(results))
    return (
        f"# {title}\n\n{env}\n\n"
        + "\n".join(fronts)
        + f"\n## Records\n\n{markdown_table(results)}\n"
        + (f"\nMarks:\n{marks}\n" if marks else "")
        + (f"\n## {SLOWER_TITLE}\n{slower}\n" if slower else "")
        + (f"\n{budget}\n" if (budget := budget_markdown(results)) else "")
    )


SLOWER_TITLE = "Why marked artifacts are slower than fp32: what their builds say"


def slower_why(results: Results) -> list[tuple[str, str]]:
    """(label, what its build says) for every record marked slower than fp32: the ops left in
    float or run in float between (de)quantizations, graphs not built (``build_notes``)."""
    out = []
    for r in results.records:
        if SLOWER_THAN_FP32 in r.marks:
            notes = r.runtime.get("build_notes") if isinstance(r.runtime, dict) else None
            why = (
                "; ".join(notes) if notes else "its build left no op in float and says nothing more"
            )
            out.append((r.label, why))
    return out


KEY_HEAD = (
    "#",
    "model",
    "target",
    "precision",
    "accuracy",
    "drop (pts)",
    "p50 ms",
    "size",
    "Pareto front",
)


def key_rows(fam: FamilyPoints) -> list[list[str]]:
    """The key under a family's plot: number -> record, drop, latency, size, fronts it is on."""
    return [
        [
            str(p.number),
            p.record.model,
            p.record.target,
            p.record.precision,
            _fmt(p.record.validation and p.record.validation.accuracy),
            f"{p.drop:+.2f}",
            _fmt(p.latency_ms, ".3f"),
            human_bytes(p.size_bytes) if p.size_bytes is not None else "-",
            fam.on_front(p.number),
        ]
        for p in fam.points
    ]


def _html_table(head: Sequence[str], rows: list[list[str]], status_col: int | None = None) -> str:
    esc = html.escape
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cls = f" class='{esc(row[status_col])}'" if status_col is not None else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    return "\n".join([*out, "</table>"])


def _family_section(fam: FamilyPoints) -> str:
    esc = html.escape
    title = f"<h2>{esc(fam.family)}</h2>"
    if not fam.points:
        return f"{title}<p>no record of this family was measured with an accuracy.</p>"
    head = list(KEY_HEAD)
    head[6] += f" (batch {fam.batch})" if fam.batch else ""
    return (
        f"{title}<img alt='{esc(fam.family)}: accuracy drop vs latency and size' "
        f"src='data:image/png;base64,{plot_family(fam)}'>\n"
        f"<div class='key'>{_html_table(head, key_rows(fam))}</div>"
    )


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}tr.failed td{background:#fde8e8}tr.skipped td{background:#fff6dd}
.key td:first-child{font-weight:bold;text-align:right}.key{margin-bottom:2em}
img{max-width:100%;margin:.5em 0}.records{overflow-x:auto}"""


def html_report(results: Results, title: str = "modelpress benchmark") -> str:
    """One self-contained HTML page: environment; per family, accuracy drop vs p50 latency and
    vs size with the Pareto fronts and a key of the numbered points; the table of every record."""
    esc = html.escape
    head, rows = table_rows(results)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1><ul>",
    ]
    parts += [f"<li>{esc(line)}</li>" for line in environment_lines(results)]
    parts.append(
        "</ul><p>Per model family: accuracy drop vs the float model (points) against p50 "
        "latency and bytes on disk; lower left is better, the Pareto front is in red.</p>"
    )
    parts += [_family_section(fam) for fam in family_points(results)]
    parts.append("<h2>Every record</h2><div class='records'>")
    parts += [_html_table(head, rows, head.index("status")), "</div>"]
    parts += [f"<p class='legend'>{esc(line)}</p>" for line in legend_lines(results.records)]
    if slower := slower_why(results):
        parts.append(f"<h2>{esc(SLOWER_TITLE)}</h2><ul>")
        parts += [f"<li><b>{esc(label)}</b>: {esc(why)}</li>" for label, why in slower]
        parts.append("</ul>")
    parts.append(budget_html(results))  # int8 builds over budget: tries, localisation
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(results: Results, out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.html`` into ``out_dir`` (atomically); return both paths."""
    out_dir = Path(out_dir)
    md = atomic_write_text(out_dir / f"{stem}.md", markdown_report(results))
    page = atomic_write_text(out_dir / f"{stem}.html", html_report(results))
    return md, page


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``modelpress report`` (for cli.py's subparser)."""
    p.add_argument(
        "results",
        nargs="+",
        type=Path,
        help="results.json written by `modelpress bench`; several: side by side (compare.*)",
    )
    p.add_argument("--out", type=Path, default=Path("report"), help="folder for report.md/.html")
    p.add_argument("--title", default="modelpress benchmark")


def cmd_report(a: argparse.Namespace) -> int:
    from .results import load_results

    if len(a.results) > 1:  # several runs or devices: the compare page instead
        from .compare import compare_files, emit

        return emit(compare_files(a.results), a.out, None, a.title)
    results = load_results(a.results[0])
    out = Path(a.out)
    md = atomic_write_text(out / "report.md", markdown_report(results, a.title))
    page = atomic_write_text(out / "report.html", html_report(results, a.title))
    print(f"report -> {md}, {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m modelpress.measure.report RESULTS [--out DIR]``."""
    from ..exits import standalone

    return standalone("modelpress report", __doc__, configure_parser, cmd_report, argv)


if __name__ == "__main__":
    sys.exit(main())
