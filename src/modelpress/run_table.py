"""The run's terminal table: one row per record, sizes and speed-ups relative to the model's
float baseline measured in the same run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pipeline import ModelRun
    from .results import Record, Results


COLUMNS = (
    "model",
    "target",
    "precision",
    "status",
    "acc",
    "drop pt",
    "size",
    "x smaller",
    "p50 ms",
    "x faster",
)


def _baseline_record(rows: list[Record], label: str) -> Record | None:
    """The float baseline on ONNX Runtime fp32, else the model's first measured record."""
    ok = [r for r in rows if r.model == label and r.status == "ok"]
    return next(
        (r for r in ok if (r.target, r.precision) == ("onnxruntime", "fp32")), ok[0] if ok else None
    )


def print_summary(title: str, models: list[ModelRun], results: Results) -> None:
    """One table: every record, with size and p50 speed-up relative to its model's float
    baseline on ONNX Runtime fp32 (or the first ok baseline record), measured in this run;
    then why each unmeasured row was not measured."""
    from rich.console import Console
    from rich.table import Table

    batch = max(results.settings.get("batch_sizes", [1]))
    table = Table(title=f"{title}: accuracy, size and latency (p50 at batch {batch})")
    for col in COLUMNS:
        table.add_column(col, no_wrap=True, justify="left" if col in COLUMNS[:4] else "right")
    for run in models:
        rows = [r for r in results.records if r.model.split("+")[0] == run.label]
        base = _baseline_record(rows, run.label)
        for r in rows:
            table.add_row(*_row(r, base, batch))
    console = Console(width=max(130, Console().width))
    console.print(table)
    for reason in sorted(
        {f"{r.target} {r.precision}: {r.reason}" for r in results.records if r.status != "ok"}
    ):
        console.print(f"  not measured: {reason}", highlight=False, markup=False)


def _row(r: Record, base: Record | None, batch: int) -> list[str]:
    from .report_table import human_bytes

    if r.status != "ok":
        return [r.model, r.target, r.precision, r.status, *[""] * 6]
    acc = r.validation.accuracy if r.validation else None
    drop = r.validation.accuracy_drop if r.validation else None
    lat, base_lat = r.latency_at(batch), base.latency_at(batch) if base else None
    smaller = base.size_bytes / r.size_bytes if base and base.size_bytes and r.size_bytes else None
    faster = base_lat.p50_ms / lat.p50_ms if base_lat and lat else None
    return [
        r.model,
        r.target,
        r.precision,
        "ok",
        f"{100 * acc:.2f} %" if acc is not None else "",
        f"{drop:+.2f}" if drop is not None else "",
        human_bytes(r.size_bytes) if r.size_bytes else "",
        f"{smaller:.1f}x" if smaller else "",
        f"{lat.p50_ms:.3f}" if lat else "",
        f"{faster:.2f}x" if faster else "",
    ]
