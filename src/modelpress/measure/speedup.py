"""How many times smaller and faster an artifact is than its float baseline, both measured in the
same run: the numbers behind the run's terminal table (``run/table.py``) and the headline
benchmark (``benchmarks/run.py``), computed here once.

A ratio is ``baseline / artifact`` (above 1: smaller or faster), and None where either side is
missing or zero (not measured at that batch size, no baseline record): a table shows a blank.

>>> from modelpress.measure.speedup import baseline_record, size_ratio, speedup  # doctest: +SKIP
>>> base = baseline_record(results.records, "cnn", "onnxruntime", "fp32")
>>> speedup(record, base, batch=32), size_ratio(record, base)
(2.41, 3.9)
"""

from __future__ import annotations

from collections.abc import Iterable

from .results import Record


def ratio(baseline: float | None, current: float | None) -> float | None:
    """``baseline / current``, or None when either is missing or zero."""
    return baseline / current if baseline and current else None


def baseline_record(
    records: Iterable[Record], model: str, target: str, precision: str
) -> Record | None:
    """The first measured (``ok``) record of ``model`` itself (not one of its compressed
    ``model+...`` variants) on ``target`` at ``precision``, or None."""
    return next(
        (
            r
            for r in records
            if r.status == "ok"
            and r.model == model
            and (r.target, r.precision) == (target, precision)
        ),
        None,
    )


def size_ratio(record: Record, baseline: Record | None) -> float | None:
    """How many times fewer bytes on disk ``record`` takes than ``baseline``."""
    return ratio(baseline.size_bytes if baseline else None, record.size_bytes)


def speedup(record: Record, baseline: Record | None, batch: int) -> float | None:
    """How many times lower ``record``'s p50 latency at ``batch`` is than ``baseline``'s."""
    mine = record.latency_at(batch)
    theirs = baseline.latency_at(batch) if baseline else None
    return ratio(theirs.p50_ms if theirs else None, mine.p50_ms if mine else None)
