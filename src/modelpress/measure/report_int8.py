"""The report's "int8 accuracy budget" section: for every artifact whose int8 build lost more
than its budget (``Record.runtime["int8_budget"]``, written by ``run/int8_fallback.py``), the
drop before and after, the layers kept in float, each try, and the localisation table that
chose them. Records within budget at once are not listed.
"""

from __future__ import annotations

import html
from typing import Any

from .results import Record, Results

TITLE = "int8 accuracy budget"
TRY_HEAD = ("try", "kept in float", "drop (pts)", "status")
LAYER_HEAD = ("layer", "op", "SQNR dB", "SQNR lost dB", "max abs diff")


def needing(results: Results) -> list[tuple[Record, dict[str, Any]]]:
    """Records whose first int8 build was over budget (or whose check failed)."""
    out = []
    for r in results.records:
        b = r.runtime.get("int8_budget") if isinstance(r.runtime, dict) else None
        if b and (len(b.get("tries", [])) > 1 or not b.get("within_budget")):
            out.append((r, b))
    return out


def _num(x: Any, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def tables(b: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """Rows of the tries table and of the localisation table of one record's budget loop."""
    tries = [
        [str(i), ", ".join(t["kept_float"]) or "none", _num(t.get("drop")), t.get("status", "")]
        for i, t in enumerate(b.get("tries", []))
    ]
    layers = [
        [
            d["layer"],
            d.get("op", ""),
            _num(d.get("sqnr_db"), ".1f"),
            _num(d.get("sqnr_drop_db"), ".1f"),
            _num(d.get("max_abs_diff"), ".3g"),
        ]
        for d in (b.get("localisation") or {}).get("layers", [])
    ]
    return tries, layers


def _intro(b: dict[str, Any]) -> str:
    return (
        f"budget {b['max_drop']} points on the {b.get('split', 'test')} split vs its float "
        f"model, strategy {b.get('strategy', '')}: {b.get('summary', '')}"
    )


def budget_markdown(results: Results) -> str:
    """The section in markdown ('' when no record needed it)."""
    found = needing(results)
    if not found:
        return ""
    lines = [f"## {TITLE}", ""]
    for r, b in found:
        lines += [f"### {r.label}", "", _intro(b).replace("|", "\\|"), ""]
        tries, layers = tables(b)
        for head, rows in ((TRY_HEAD, tries), (LAYER_HEAD, layers)):
            if rows:
                lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                lines += [
                    "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows
                ]
                lines.append("")
    return "\n".join(lines)


def budget_html(results: Results) -> str:
    """The section in HTML ('' when no record needed it)."""
    found = needing(results)
    if not found:
        return ""
    esc = html.escape
    parts = [f"<h2>{esc(TITLE)}</h2>"]
    for r, b in found:
        parts.append(f"<h3>{esc(r.label)}</h3><p>{esc(_intro(b))}</p>")
        tries, layers = tables(b)
        for head, rows in ((TRY_HEAD, tries), (LAYER_HEAD, layers)):
            if rows:
                parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
                parts += [
                    "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows
                ]
                parts.append("</table>")
    return "\n".join(parts)
