"""compare.html: one self-contained page of a :class:`~modelpress.measure.compare.Comparison`.

The columns and their machines, the merged table (failed and skipped cells shaded), then per
column (device or run) and per model family the report's Pareto plots, accuracy drop vs p50
latency and vs size (:func:`.report_plots.family_figure`, the front from
:func:`.stats.pareto_front`), embedded as SVG, each with the key of its numbered points.

>>> page = html_page(compare_files(["a.json", "b.json"]), "compare")   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

from .compare_format import (
    cell_text,
    column_lines,
    legend,
    marks_legend,
    table_head,
    versus_text,
)
from .report_plots import FamilyPoints, family_figure, family_points
from .report_table import human_bytes

if TYPE_CHECKING:  # annotations only: compare.py imports this module to write its outputs
    from .compare import Column, Comparison

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}td.failed{background:#fde8e8}td.skipped{background:#fff6dd}
td.missing{color:#999}td.versus{background:#f6f9ff}.wide{overflow-x:auto}
.key{margin-bottom:2em}img{max-width:100%;margin:.5em 0}"""

KEY_HEAD = ("#", "model", "target", "precision", "drop (pts)", "p50 ms", "size", "Pareto front")


def _td(text: str, cls: str = "") -> str:
    return f"<td class='{cls}'>{html.escape(text)}</td>" if cls else f"<td>{html.escape(text)}</td>"


def merged_table(cmp: Comparison) -> str:
    """The merged table: a cell per column, shaded by status, its ratio cell beside it."""
    esc = html.escape
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in table_head(cmp)) + "</tr>"]
    for row in cmp.rows:
        tds = [_td(k) for k in row.key]
        for cell, vs in zip(row.cells, row.versus):
            tds.append(_td(cell_text(cell, cmp.batch), cell.status))
            if vs is not None:
                tds.append(_td(versus_text(vs), "versus"))
        out.append("<tr>" + "".join(tds) + "</tr>")
    return "\n".join([*out, "</table>"])


def svg_base64(fig) -> str:
    """A matplotlib Figure as base64 SVG (text kept as text: small, searchable)."""
    from matplotlib import rc_context

    buf = io.BytesIO()
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _key_table(fam: FamilyPoints) -> str:
    esc = html.escape
    rows = [
        [
            str(p.number),
            p.record.model,
            p.record.target,
            p.record.precision,
            f"{p.drop:+.2f}",
            "-" if p.latency_ms is None else f"{p.latency_ms:.3f}",
            "-" if p.size_bytes is None else human_bytes(p.size_bytes),
            fam.on_front(p.number),
        ]
        for p in fam.points
    ]
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in KEY_HEAD) + "</tr>"]
    out += ["<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows]
    return "<div class='key'>" + "\n".join([*out, "</table>"]) + "</div>"


def column_section(col: Column) -> str:
    """A column's heading and machine, then per family its plot and key."""
    esc = html.escape
    parts = [f"<h2>{esc(col.label)}</h2><p>{esc(col.machine)}</p>"]
    for fam in family_points(col.results):
        if not fam.points:
            parts.append(f"<h3>{esc(fam.family)}</h3><p>nothing measured with an accuracy.</p>")
            continue
        alt = f"{col.label}, {fam.family}: accuracy drop vs p50 latency and size"
        parts.append(
            f"<h3>{esc(fam.family)}</h3><img alt='{esc(alt)}' "
            f"src='data:image/svg+xml;base64,{svg_base64(family_figure(fam))}'>"
        )
        parts.append(_key_table(fam))
    if len(parts) == 1:
        parts.append("<p>no record.</p>")
    return "\n".join(parts)


def html_page(cmp: Comparison, title: str) -> str:
    """One self-contained page: columns and machines, the merged table, per-column plots."""
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>",
        f"<p>{esc(legend(cmp).replace('**', ''))}</p><ul>",
        *(
            f"<li>{esc(line[2:].replace('**', '').replace('`', ''))}</li>"
            for line in column_lines(cmp)
        ),
        "</ul><div class='wide'>",
        merged_table(cmp),
        "</div>",
        *(f"<p class='legend'>{esc(line)}</p>" for line in marks_legend(cmp)),
        "<p>Per column and model family: accuracy drop vs the float model (points) "
        "against p50 latency and bytes on disk; lower left is better, the Pareto front is red.</p>",
        *(column_section(col) for col in cmp.columns),
        "</body></html>",
    ]
    return "\n".join(parts)
