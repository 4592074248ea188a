"""A gate run (:class:`~.gate.GateReport`) as JUnit XML (one testcase per check, so CI systems
list every gate), as a markdown table and as a terminal table. Takes the report as data: the
gate imports this module, never the other way round."""

from __future__ import annotations

from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

if TYPE_CHECKING:
    from .gate import GateReport


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
