"""Text of a :class:`~modelpress.measure.compare.Comparison`: the table's cells (shared by the
markdown, the terminal and the HTML page), compare.md, and the summary of at most 60 lines for
a pull request comment or a GitHub step summary.

A cell reads ``p50 ms / accuracy %`` (the p50 at the compared batch; ``(batch N)`` when the
column only measured another batch, then it has no speed-up), ``failed: reason`` or ``skipped:
reason``, with the record's marks in brackets; a ratio cell reads ``speed-up x / accuracy
difference in points`` against the reference column.

>>> print(markdown_summary(compare_files(["a.json", "b.json"]), "compare"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: compare.py imports this module to write its outputs
    from .compare import Cell, Comparison, Row, Versus

SUMMARY_LINES = 60  # a PR comment or step summary stays short whatever the number of rows
SUMMARY_COLUMNS = 10  # column descriptions listed in the summary, at most


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}" if value < 100 else f"{value:.1f}"


def cell_text(cell: Cell, batch: int) -> str:
    """``0.052 / 95.00``, ``0.40 / 95.00 (batch 32)``, ``failed: reason``; marks in brackets."""
    if cell.status == "missing":
        return "-"
    if cell.status != "ok":
        text = f"{cell.status}: {cell.reason}" if cell.reason else cell.status
    else:
        acc = "-" if cell.accuracy is None else f"{100 * cell.accuracy:.2f}"
        other = cell.p50_ms is not None and cell.batch != batch
        text = f"{ms(cell.p50_ms)} / {acc}" + (f" (batch {cell.batch})" if other else "")
    return text + (f" [{'; '.join(cell.marks)}]" if cell.marks else "")


def versus_text(v: Versus) -> str:
    """``1.73x / -0.20``: speed-up, accuracy difference in points; ``-`` where unknown."""
    if v.speedup is None and v.accuracy_pts is None:
        return "-"
    speed = "-" if v.speedup is None else f"{v.speedup:.2f}x"
    acc = "-" if v.accuracy_pts is None else f"{v.accuracy_pts:+.2f}"
    return f"{speed} / {acc}"


def table_head(cmp: Comparison) -> list[str]:
    """model, target, precision, then per column its cell and (not the reference) its ratios."""
    ref = cmp.reference_label
    head = ["model", "target", "precision"]
    for i, col in enumerate(cmp.columns):
        head.append(f"{col.label}{' (reference)' if i == cmp.reference else ''}: p50 ms / acc %")
        if i != cmp.reference:
            head.append(f"{col.label} vs {ref}: speed-up (>1 faster) / acc pts (>0 better)")
    return head


def table_row(cmp: Comparison, row: Row) -> list[str]:
    out = list(row.key)
    for cell, vs in zip(row.cells, row.versus):
        out.append(cell_text(cell, cmp.batch))
        if vs is not None:
            out.append(versus_text(vs))
    return out


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def table_lines(cmp: Comparison) -> list[str]:
    """The markdown table: header, separator, one line per row."""
    head = table_head(cmp)
    return [_md_row(head), "|" + "---|" * len(head)] + [
        _md_row(table_row(cmp, r)) for r in cmp.rows
    ]


def legend(cmp: Comparison) -> str:
    ref = cmp.reference_label
    return (
        f"p50 latency at batch {cmp.batch} and accuracy per column; against the reference "
        f"**{ref}**: speed-up = {ref}'s p50 / the column's (above 1: faster than {ref}), "
        f"accuracy difference in points (above 0: more accurate than {ref})."
    )


def column_lines(cmp: Comparison) -> list[str]:
    """One markdown bullet per column: label, machine, runtimes, file."""
    out = []
    for i, c in enumerate(cmp.columns):
        ref = " (reference)" if i == cmp.reference else ""
        ident = f", machine id {c.machine_id}" if c.machine_id else ""
        out.append(f"- **{c.label}**{ref}: {c.machine}{ident}; from `{c.source}`")
    return out


def marks_legend(cmp: Comparison) -> list[str]:
    """What each mark shown in the table means (:mod:`.marks`), one line per mark."""
    from .marks import legend_lines

    return legend_lines(r for c in cmp.columns for r in c.results.records)


def markdown_page(cmp: Comparison, title: str) -> str:
    """compare.md: the columns, the legend and the full table, then what the marks mean."""
    lines = [f"# {title}", "", legend(cmp), "", *column_lines(cmp), "", *table_lines(cmp)]
    marks = marks_legend(cmp)
    lines += ["", "Marks:", "", *(f"- {m}" for m in marks)] if marks else []
    return "\n".join(lines) + "\n"


def markdown_summary(cmp: Comparison, title: str, max_lines: int = SUMMARY_LINES) -> str:
    """At most ``max_lines`` lines (default 60) whatever the number of rows and columns: the
    table is cut with "... N more rows, see compare.html"."""
    cols = column_lines(cmp)
    if len(cols) > SUMMARY_COLUMNS:
        more = len(cols) - SUMMARY_COLUMNS + 1
        cols = cols[: SUMMARY_COLUMNS - 1] + [f"- ... {more} more columns, see compare.html"]
    top = [f"### {title}", "", legend(cmp), "", *cols, ""]
    table = table_lines(cmp)
    room = max_lines - len(top) - 2  # lines left for rows under the header and separator
    rows = table[2:]
    if len(rows) > room:
        shown = max(room - 2, 0)  # a blank line ends the table, then the note
        rows = rows[:shown] + ["", f"... {len(rows) - shown} more rows, see compare.html"]
    return "\n".join([*top, *table[:2], *rows]) + "\n"


def terminal_text(cmp: Comparison) -> str:
    """What ``modelpress compare`` prints: the columns, then the table (markdown)."""
    return "\n".join([*column_lines(cmp), "", legend(cmp), "", *table_lines(cmp)])
