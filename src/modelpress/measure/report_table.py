"""Terminal tables (rich) for what the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_baselines(rows: Sequence[Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("model", "family", "test acc", "params", "MACs", "on disk", "train s"):
        table.add_column(
            col, justify="left" if col in ("model", "family") else "right", no_wrap=True
        )
    for r in rows:
        table.add_row(
            r.model,
            r.family,
            f"{100 * r.test_accuracy:.2f} %",
            f"{r.params:,}",
            f"{r.macs:,}",
            human_bytes(r.bytes),
            f"{r.train_seconds:.1f}",
        )
    Console().print(table)
