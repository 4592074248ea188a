"""The run's terminal table: one row per record, sizes and speed-ups relative to the model's
float baseline measured in the same run, in at most 100 columns.

Targets that cannot run on this machine (TensorRT without CUDA, a runtime not installed) get one
line each under the table (why, and how to enable them) instead of one row per artifact; other
failed or skipped rows stay, with their reasons listed under the table. Without a terminal (CI
logs) the output is plain text: no colour, no control codes.

>>> from modelpress.run.table import print_summary                   # doctest: +SKIP
>>> print_summary("digits", models, load_results("runs/digits/results.json"))
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from ..measure.results import Record, Results
    from .state import ModelRun

MAX_WIDTH = 100
COLUMNS = ("model", "tgt", "prec", "status", "acc %", "Δpt", "size", "×sm", "p50ms", "×fast")
TARGETS = {"onnxruntime": "ort", "litert": "lrt", "tensorrt": "trt", "torch": "pt"}
TARGET_NAMES = {
    "onnxruntime": "ONNX Runtime",
    "litert": "LiteRT",
    "tensorrt": "TensorRT",
    "torch": "PyTorch",
}
PRECISIONS = {"int8": "i8", "dynamic_int8": "dyn8"}
PRECISION_NAMES = {"int8": "int8", "dynamic_int8": "dynamic int8"}
# a record's marks (measure/marks.py), short, after "ok" in the status column ("ok slow"):
# "slow" = slower than the fp32 artifact on the same runtime (not the ×fast column's ort fp32)
MARK_CODES = {"slower than fp32": "slow", "over budget": "over"}  # over: int8_fallback.py
MARK_WORDS = {  # the legend's words: the table shows one batch size, a mark may be of another
    "slower than fp32": "slower than its fp32 on the same runtime at some batch size",
    "over budget": "int8 over its accuracy budget",
}
# how to make a target available (the pip extra of pyproject.toml, and what else it needs)
ENABLE = {
    "tensorrt": "pip install -e '.[tensorrt]' on a CUDA machine",
    "litert": "pip install -e '.[tflite]'",
    "onnxruntime": "pip install onnxruntime",
}
# the words Availability.require (targets/base.py) puts in a skipped record's reason
_UNAVAILABLE = "target {} is unavailable: "
_HINT = "; install it with: "


def unavailable_reason(r: Record) -> str | None:
    """Why ``r``'s target cannot run on this machine, or None if the record is not such a skip."""
    prefix = _UNAVAILABLE.format(r.target)
    if r.status != "skipped" or not r.reason.startswith(prefix):
        return None
    return r.reason[len(prefix) :].split(_HINT)[0]


def _how_to_enable(r: Record) -> str:
    hint = r.reason.split(_HINT)[1] if _HINT in r.reason else ""
    return ENABLE.get(r.target, hint)


def unavailable_lines(records: Sequence[Record]) -> list[str]:
    """One line per unavailable target: target, why, how many builds it hides, how to enable."""
    by_target: dict[str, list[Record]] = {}
    for r in records:
        if unavailable_reason(r) is not None:
            by_target.setdefault(r.target, []).append(r)
    lines = []
    for target, recs in by_target.items():
        whys = "; ".join(dict.fromkeys(unavailable_reason(r) or "" for r in recs))
        how = _how_to_enable(recs[0])
        lines.append(
            f"{target} ({len(recs)} build{'s' * (len(recs) != 1)} not run): {whys}"
            + (f" — {how}" if how else "")
        )
    return lines


def _baseline_record(rows: list[Record], label: str) -> Record | None:
    """The float baseline on ONNX Runtime fp32, else the model's first measured record."""
    from ..measure.speedup import baseline_record

    ok = [r for r in rows if r.model == label and r.status == "ok"]
    ort = baseline_record(ok, label, "onnxruntime", "fp32")
    return ort if ort is not None else ok[0] if ok else None


def summary_console() -> Console:
    """A console of width min(100, terminal width); without a terminal: width 100, plain text."""
    from rich.console import Console

    tty = sys.stdout.isatty()
    width = min(MAX_WIDTH, Console(force_terminal=True).width) if tty else MAX_WIDTH
    return Console(
        width=width,
        force_terminal=tty,
        no_color=None if tty else True,
        markup=False,
        highlight=False,
        emoji=False,
    )


def print_summary(
    title: str, models: Sequence[ModelRun], results: Results, console: Console | None = None
) -> None:
    """One table: every record, with size and p50 speed-up relative to its model's float
    baseline on ONNX Runtime fp32 (or the first ok baseline record), measured in this run;
    then a legend, one line per target unavailable here, and why each other row was not
    measured. ``console`` defaults to :func:`summary_console`."""
    from rich.text import Text

    console = console or summary_console()
    remote = [r for r in results.records if r.device is not None]
    if remote:  # rows of other devices: counted here, side by side in the report and compare
        results = results.model_copy(
            update={"records": [r for r in results.records if r.device is None]}
        )
    labels = list(  # the run's models in order, then any that failed before they had a run
        dict.fromkeys([m.label for m in models] + [r.model.split("+")[0] for r in results.records])
    )
    batch = max(results.settings.get("batch_sizes", [1]))
    rows = [
        _row(r, _baseline_record(mine, label), batch)
        for label in labels
        for mine in [[r for r in results.records if r.model.split("+")[0] == label]]
        for r in mine
        if unavailable_reason(r) is None
    ]
    heading = f"{title}: acc % on the runtime, p50ms at batch {batch}, ×sm/×fast vs float ort fp32"
    console.print(_fitted_table(console, heading, rows))
    console.print(Text(legend(rows)))
    console.print(_notes(results.records))
    for line in device_lines(remote):
        console.print(Text(line))


def device_lines(records: Sequence[Record]) -> list[str]:
    """One line per other device: how many of its rows are ok, and where to see them."""
    by: dict[str, list[Record]] = {}
    for r in records:
        by.setdefault(str(r.device), []).append(r)
    lines = []
    for device, mine in by.items():
        counts = {s: sum(r.status == s for r in mine) for s in ("ok", "failed", "skipped")}
        said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        why = next((r.reason for r in mine if r.status != "ok"), "")
        lines.append(
            f"device {device}: {said} (the report's rows @{device}; "
            f"`modelpress compare results.json` side by side){': ' + why if why else ''}"
        )
    return lines


def _fitted_table(console: Console, title: str, rows: list[list[str]]):
    """The table; model labels shortened in the middle when it would not fit the console."""
    from rich.measure import Measurement

    table = _table(title, rows)
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if natural > console.width and rows:
        longest = max(len(row[0]) for row in rows)
        keep = max(8, longest - (natural - console.width))
        table = _table(title, [[_shorten(row[0], keep), *row[1:]] for row in rows])
    return table


def _table(title: str, rows: list[list[str]]):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=Text(title),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in COLUMNS:
        table.add_column(col, no_wrap=True, justify="left" if col in COLUMNS[:4] else "right")
    for row in rows:
        table.add_row(*map(Text, row))
    return table


def _shorten(label: str, keep: int) -> str:
    """``label`` in at most ``keep`` characters: the model name cut, its ``+pass`` chain kept."""
    if len(label) <= keep:
        return label
    name, plus, chain = label.partition("+")
    if plus and len(chain) + 3 <= keep:
        return name[: keep - len(chain) - 2] + "…+" + chain
    return label[: keep - 1] + "…"


def _notes(records: Sequence[Record]):
    """One entry per target unavailable here, then the reasons of the other rows not measured;
    a grid, so that an entry wrapped at the console width stays indented under its label."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for line in unavailable_lines(records):
        grid.add_row("unavailable", Text(line))
    shown: dict[tuple[str, str, str], list[str]] = {}
    for r in records:
        if r.reason and unavailable_reason(r) is None:
            shown.setdefault((r.target, r.precision, r.reason), []).append(r.model)
    for (target, precision, why), models in sorted(shown.items()):
        which = ", ".join(models[:3]) + (f" and {len(models) - 3} more" if len(models) > 3 else "")
        grid.add_row("not measured", Text(f"{target} {precision}: {why} [{which}]"))
    return grid


def legend(rows: list[list[str]]) -> str:
    """Every abbreviation of the table, on one line (targets and precisions only if shown)."""
    used = {cell for row in rows for cell in row[1:3]}
    words = [f"{short}={TARGET_NAMES[t]}" for t, short in TARGETS.items() if short in used]
    words += [f"{PRECISIONS[p]}={PRECISION_NAMES[p]}" for p in PRECISIONS if PRECISIONS[p] in used]
    words += ["Δpt=drop in pts", "×sm/×fast=smaller/faster"]
    codes = {code for row in rows for code in row[3].split()[1:]}  # "ok slow" -> slow
    words += [
        f"{code}={MARK_WORDS.get(mark, mark)}" for mark, code in MARK_CODES.items() if code in codes
    ]
    return ", ".join(words)


def _ms(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def _row(r: Record, base: Record | None, batch: int) -> list[str]:
    from ..measure.report_table import human_bytes
    from ..measure.speedup import size_ratio, speedup

    head = [r.model, TARGETS.get(r.target, r.target), PRECISIONS.get(r.precision, r.precision)]
    if r.status != "ok":
        return [*head, r.status, *[""] * 6]
    acc = r.validation.accuracy if r.validation else None
    drop = r.validation.accuracy_drop if r.validation else None
    lat = r.latency_at(batch)
    smaller, faster = size_ratio(r, base), speedup(r, base, batch)
    return [
        *head,
        " ".join(["ok", *(MARK_CODES.get(m, m) for m in r.marks)]),
        f"{100 * acc:.2f}" if acc is not None else "",
        f"{drop:+.2f}" if drop is not None else "",
        human_bytes(r.size_bytes) if r.size_bytes else "",
        f"{smaller:.1f}×" if smaller else "",
        _ms(lat.p50_ms) if lat else "",
        f"{faster:.2f}×" if faster else "",
    ]
