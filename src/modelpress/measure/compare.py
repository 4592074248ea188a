"""Results side by side: several results files (devices, runs) merged into one table.

Each input file gives one **column** per device that measured its records (``Record.device``;
None, measured where the file was written, is a column too). Rows are (model, target, precision);
a cell holds the p50 latency at one batch size and the accuracy, or why the row failed or was
skipped there. Every column but the reference gets a ratio beside it: speed-up = the reference's
p50 / the column's (above 1: faster than the reference) and the accuracy difference in points
(above 0: more accurate). Labels are the device's name, else a name from the file (its stem, or
its folder for a file called ``results.json``), made unique; ``--labels`` overrides them.

Markdown (full table, and a summary of at most 60 lines for a pull request or a GitHub step
summary) is in :mod:`.compare_format`, the HTML page with per-column Pareto plots in
:mod:`.compare_page`.

>>> from modelpress.measure.compare import compare_files, write_compare   # doctest: +SKIP
>>> cmp = compare_files(["x86/results.json", "arm/results.json"], batch=1)
>>> [c.label for c in cmp.columns], cmp.rows[0].versus[1].speedup
(['x86', 'arm'], 0.42)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, one_line
from ..fsutil import atomic_write_text
from .machine import RUNTIMES
from .report_plots import PRECISION_MARKERS, TARGET_ORDER
from .results import Record, Results, load_results
from .speedup import ratio

Key = tuple[str, str, str]  # (model, target, precision)
GENERIC_STEMS = ("results",)  # file names that say nothing: the folder names the column
REASON_CHARS = 48  # a failed or skipped cell's reason, shortened


@dataclass(frozen=True)
class Column:
    """The records one device measured in one results file."""

    label: str
    source: str  # the results file
    device: str | None  # devices.yaml name; None: measured where the file was written
    machine: str  # one line: CPU, cores, OS, runtime versions
    machine_id: str | None
    results: Results  # the file with this column's records only


@dataclass(frozen=True)
class Cell:
    status: str  # ok | failed | skipped | missing (the column has no such row)
    p50_ms: float | None = None
    batch: int | None = None  # the batch of p50_ms: the one asked for, else the nearest measured
    accuracy: float | None = None  # 0..1
    reason: str = ""  # shortened, one line
    marks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Versus:
    """A column against the reference column, on one row."""

    speedup: float | None  # reference p50 / column p50 (same batch): above 1, the column is faster
    accuracy_pts: float | None  # column accuracy - reference accuracy, in points


@dataclass(frozen=True)
class Row:
    key: Key
    cells: tuple[Cell, ...]  # one per column, in column order
    versus: tuple[Versus | None, ...]  # one per column; None for the reference


@dataclass(frozen=True)
class Comparison:
    columns: tuple[Column, ...]
    reference: int  # index of the reference column
    batch: int  # the batch size whose p50 is compared
    rows: tuple[Row, ...]

    @property
    def reference_label(self) -> str:
        return self.columns[self.reference].label

    def to_dict(self) -> dict[str, Any]:
        """The merged table as data (compare.json)."""
        labels = [c.label for c in self.columns]
        return {
            "kind": "modelpress.compare",
            "version": 1,
            "batch": self.batch,
            "reference": self.reference_label,
            "columns": [
                {
                    "label": c.label,
                    "source": c.source,
                    "device": c.device,
                    "machine": c.machine,
                    "machine_id": c.machine_id,
                    "created": c.results.created,
                }
                for c in self.columns
            ],
            "rows": [
                {
                    "model": row.key[0],
                    "target": row.key[1],
                    "precision": row.key[2],
                    "cells": {lb: _cell_dict(c) for lb, c in zip(labels, row.cells)},
                    "versus_reference": {
                        lb: asdict(v) for lb, v in zip(labels, row.versus) if v is not None
                    },
                }
                for row in self.rows
            ],
        }


def _cell_dict(cell: Cell) -> dict[str, Any]:
    return {**asdict(cell), "marks": list(cell.marks)}


# --- columns and their labels ---------------------------------------------------------------------


def file_labels(paths: Sequence[str | Path]) -> list[str]:
    """A short, unique name per file: its stem (its folder for ``results.json``), with more of
    its path while two are equal, then ``#2``, ``#3``.

    >>> file_labels(["a/results.json", "b/results.json", "base.json"])
    ['a', 'b', 'base']
    """
    chains = []
    for p in paths:
        p = Path(p)
        names = [p.stem, *(q.name for q in p.absolute().parents if q.name)]
        chains.append(names[1:] if p.stem in GENERIC_STEMS and len(names) > 1 else names)
    depth = [1] * len(chains)
    while True:
        labels = ["/".join(reversed(c[:d])) for c, d in zip(chains, depth)]
        grow = [  # more of the path, while it tells two files apart (not the same file twice)
            i
            for i, lb in enumerate(labels)
            if depth[i] < len(chains[i])
            and any(lb == other and chains[i] != chains[j] for j, other in enumerate(labels))
        ]
        if not grow:
            return unique(labels)
        for i in grow:
            depth[i] += 1


def unique(labels: Sequence[str]) -> list[str]:
    """``labels`` with the second and later copies of a label suffixed ``#2``, ``#3``, ..."""
    out: list[str] = []
    for lb in labels:
        name, n = lb, 1
        while name in out:
            n += 1
            name = f"{lb} #{n}"
        out.append(name)
    return out


def column_labels(file_label: Sequence[str], devices: Sequence[str | None]) -> list[str]:
    """Per column (its file's label, its device): the device's name, else the file's label; a
    device name that two columns share is qualified with the file (``pi@base``)."""
    bases = [dev or fl for fl, dev in zip(file_label, devices)]
    counts = Counter(bases)
    named = [
        f"{base}@{fl}" if dev and counts[base] > 1 else base
        for base, fl, dev in zip(bases, file_label, devices)
    ]
    return unique(named)


def split_columns(
    inputs: Sequence[tuple[str | Path, Results]], labels: Sequence[str] | None = None
) -> list[Column]:
    """One column per (file, device), in file order, devices in order of first appearance."""
    parts = []  # (source, file label, device, the file with this device's records only)
    for (path, res), fl in zip(inputs, file_labels([p for p, _ in inputs])):
        for dev in list(dict.fromkeys(r.device for r in res.records)) or [None]:
            mine = res.model_copy(update={"records": [r for r in res.records if r.device == dev]})
            parts.append((str(path), fl, dev, mine))
    auto = column_labels([fl for _, fl, _, _ in parts], [dev for _, _, dev, _ in parts])
    chosen = _checked_labels(labels, auto) if labels else auto
    return [
        Column(label, src, dev, machine_line(mine, dev), _machine_id(mine), mine)
        for label, (src, _, dev, mine) in zip(chosen, parts)
    ]


def _checked_labels(labels: Sequence[str], auto: Sequence[str]) -> list[str]:
    labels = [lb.strip() for lb in labels]
    if len(labels) != len(auto):
        raise ConfigError(
            f"--labels gives {len(labels)} label(s) for {len(auto)} column(s) "
            f"({', '.join(auto)}): give one per column, in that order"
        )
    if not all(labels) or len(set(labels)) != len(labels):
        raise ConfigError(
            f"--labels {','.join(labels)!r} has an empty or repeated label: give unique names"
        )
    return labels


def machine_line(results: Results, device: str | None) -> str:
    """One line about the machine that measured: CPU, cores and OS (the file's environment for
    local records, the records' own description for a device), then the runtimes' versions."""
    if device is None:
        env = results.environment
        where = (
            f"{env.cpu_model}, {env.usable_cores} of {env.logical_cores} cores, "
            f"{env.platform}, Python {env.python}"
        )
        found = {k: v for k, v in env.versions.items() if k in RUNTIMES}
    else:
        described = Counter(r.machine for r in results.records if r.machine)
        where = f"device {device}: " + (
            described.most_common(1)[0][0] if described else "machine not recorded"
        )
        found = {}
    for r in results.records:  # this column's records: a device's runtimes are its own
        name, version = r.runtime.get("runtime"), r.runtime.get("version")
        if r.device == device and name and version:  # ai_edge_litert is ai-edge-litert
            found.setdefault(str(name).replace("_", "-"), str(version))
    runtimes = ", ".join(f"{k} {v}" for k, v in sorted(found.items()))
    return one_line(f"{where}; {runtimes}" if runtimes else where)


def _machine_id(results: Results) -> str | None:
    ids = Counter(r.machine_id for r in results.records if r.machine_id)
    return ids.most_common(1)[0][0] if ids else results.environment.machine_id


# --- rows, cells and ratios -----------------------------------------------------------------------


def short_reason(text: str, limit: int = REASON_CHARS) -> str:
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def cell_of(record: Record | None, batch: int) -> Cell:
    """A record's cell: p50 at ``batch`` (else at the nearest batch measured) and accuracy."""
    if record is None:
        return Cell("missing")
    marks = tuple(record.marks)
    if record.status != "ok":
        return Cell(record.status, reason=short_reason(record.reason), marks=marks)
    lat = record.latency_at(batch) or min(
        record.latency, key=lambda x: (abs(x.batch - batch), x.batch), default=None
    )
    acc = record.validation.accuracy if record.validation else None
    return Cell(
        "ok",
        lat.p50_ms if lat else None,
        lat.batch if lat else None,
        acc,
        marks=marks,
    )


def versus(ref: Cell, cell: Cell) -> Versus:
    """``cell`` against the reference cell; a latency at another batch has no speed-up."""
    same_batch = ref.batch is not None and ref.batch == cell.batch
    speed = ratio(ref.p50_ms, cell.p50_ms) if same_batch else None
    acc = (
        100.0 * (cell.accuracy - ref.accuracy)
        if cell.accuracy is not None and ref.accuracy is not None
        else None
    )
    return Versus(speed, acc)


def row_key(r: Record) -> Key:
    """A row of the table: (model, target, precision); the device is the record's column."""
    return (r.model, r.target, r.precision)


def row_order(key: Key) -> tuple:
    model, target, precision = key
    targets, precisions = list(TARGET_ORDER), list(PRECISION_MARKERS)
    return (
        model,
        targets.index(target) if target in targets else len(targets),
        target,
        precisions.index(precision) if precision in precisions else len(precisions),
        precision,
    )


def build_comparison(
    columns: Sequence[Column], batch: int = 1, reference: str | None = None
) -> Comparison:
    """Rows (model, target, precision) of every column, sorted; cells and ratios per column."""
    if batch < 1:
        raise ConfigError(f"--batch {batch} is not a batch size: give 1 or more")
    labels = [c.label for c in columns]
    if reference is not None and reference not in labels:
        raise ConfigError(
            f"--reference {reference!r} is not a column; the columns are {', '.join(labels)}: "
            "pass one of them (or --labels to name them)"
        )
    ref = labels.index(reference) if reference is not None else 0
    by_key = [{row_key(r): r for r in reversed(c.results.records)} for c in columns]  # first wins
    keys = sorted({k for recs in by_key for k in recs}, key=row_order)
    rows = []
    for key in keys:
        cells = tuple(cell_of(recs.get(key), batch) for recs in by_key)
        vs = tuple(None if i == ref else versus(cells[ref], c) for i, c in enumerate(cells))
        rows.append(Row(key, cells, vs))
    return Comparison(tuple(columns), ref, batch, tuple(rows))


def compare_files(
    paths: Sequence[str | Path],
    batch: int = 1,
    reference: str | None = None,
    labels: Sequence[str] | None = None,
) -> Comparison:
    """Load the results files (one-line ConfigError on a bad one) and compare their columns."""
    if not paths:
        raise ConfigError("compare needs at least one results file: give their paths")
    inputs = [(str(p), load_results(p)) for p in paths]
    return build_comparison(split_columns(inputs, labels), batch, reference)


# --- outputs and the command ----------------------------------------------------------------------


def write_compare(cmp: Comparison, out_dir: str | Path, title: str) -> list[Path]:
    """compare.md, compare.html and compare.json in ``out_dir``: every text is made before the
    first write, and each write is atomic."""
    from .compare_format import markdown_page
    from .compare_page import html_page

    texts = {
        "compare.md": markdown_page(cmp, title),
        "compare.html": html_page(cmp, title),
        "compare.json": json.dumps(cmp.to_dict(), indent=1),
    }
    return [atomic_write_text(Path(out_dir) / name, text) for name, text in texts.items()]


def write_summary(text: str, path: str | Path | None) -> Path | None:
    """The summary to ``path``; without one, appended to $GITHUB_STEP_SUMMARY when it is set.
    The file is replaced atomically (what was in it, then the summary)."""
    append = path is None
    path = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return None
    path = Path(path)
    before = path.read_text(encoding="utf-8") if append and path.is_file() else ""
    sep = "\n" if before and not before.endswith("\n") else ""
    return atomic_write_text(path, before + sep + text)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``modelpress compare`` (for cli.py's subparser)."""
    p.add_argument("results", nargs="+", type=Path, help="results files (bench, run, devices)")
    p.add_argument("--batch", type=int, default=1, help="batch size whose p50 is compared")
    p.add_argument("--reference", metavar="LABEL", help="column the ratios are against (first)")
    p.add_argument("--labels", metavar="A,B,...", help="column labels, one per column, in order")
    p.add_argument("--out", type=Path, default=Path("compare"), help="folder for compare.*")
    p.add_argument(
        "--summary", type=Path, help="markdown summary (<= 60 lines; default $GITHUB_STEP_SUMMARY)"
    )
    p.add_argument("--title", default="modelpress compare")


def emit(cmp: Comparison, out: Path, summary: Path | None, title: str) -> int:
    """Print the table, write the outputs and the summary; exit code 0."""
    from .compare_format import markdown_summary, terminal_text

    print(terminal_text(cmp))
    written = write_compare(cmp, out, title)
    print(f"compare -> {', '.join(str(p) for p in written)}")
    target = write_summary(markdown_summary(cmp, title), summary)
    if target is not None:
        print(f"summary -> {target}")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    """Run ``modelpress compare``: 0 when written, 2 on bad input."""
    labels = a.labels.split(",") if a.labels else None
    cmp = compare_files(a.results, a.batch, a.reference, labels)
    return emit(cmp, a.out, a.summary, a.title)


def main(argv: list[str] | None = None) -> int:
    """``python -m modelpress.measure.compare RESULTS... [--out DIR]``."""
    from ..exits import standalone

    return standalone("modelpress compare", __doc__, configure_parser, cmd_compare, argv)


if __name__ == "__main__":
    sys.exit(main())
