"""Marks: short verdicts shown beside a record in the run's table and in the reports
(:attr:`Record.marks <modelpress.measure.results.Record.marks>`), their one-line legend, and the
rule behind ``slower than fp32``.

A run sets the marks once its records are final, before the report and the gate
(``run/steps.py``'s ``finish``); the search skips a trial so marked (``run/search.py``); a gate
rule can fail on them (``forbid_marks`` in a policy).

>>> from modelpress.measure.marks import SLOWER_THAN_FP32, mark_slower_than_fp32  # doctest: +SKIP
>>> results = mark_slower_than_fp32(results)
>>> [r.label for r in results.records if SLOWER_THAN_FP32 in r.marks]
['cnn+distill+prune/litert/int8']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .results import Record, Results

if TYPE_CHECKING:
    from .stats import RatioCI

SLOWER_THAN_FP32 = "slower than fp32"
FLOAT = "fp32"
# a slowdown must be statistically clear AND larger than this: measured A/A runs on a shared
# 2-core machine drift by up to +-15 % between runs (benchmarks/results/gates.md), so a mark on
# "clearly above 1.00" would flap; the regression gate's default tolerance is the same 10 %
MARGIN = 0.10
CONFIDENCE = 0.95
N_BOOT = 2000

# one line per mark, for the legends of the table and the reports
LEGEND = {
    SLOWER_THAN_FP32: (
        "p50 latency above its fp32 counterpart's on the same runtime and machine at some "
        f"measured batch size: the {100 * CONFIDENCE:g}% bootstrap CI of the ratio of medians "
        f"(per-call samples) lies entirely above {1 + MARGIN:.2f}; the counterpart is the fp32 "
        "artifact of the same chain, else the float baseline"
    ),
    # set by run/int8_fallback.py (its OVER_BUDGET), listed here for the legends and the gate
    "over budget": (
        "an int8 build still more than the recipe's quantize max_drop points below its float "
        "model after the allowed rebuilds with layers kept in float (see the int8 budget section)"
    ),
}


def legend_lines(records: Iterable[Record]) -> list[str]:
    """``"<mark>: <meaning>"`` for every mark that ``records`` carry, in order of first use."""
    used = dict.fromkeys(m for r in records for m in r.marks)
    return [f"{m}: {LEGEND.get(m, 'see the run notes')}" for m in used]


def comparable(record: Record, reference: Record) -> bool:
    """Whether the latencies of two records may be compared: both measured (``ok``), on the same
    target, machine (``machine_id``), device and thread count, the reference without an injected
    slowdown. A record of another machine (a copied cache) is never compared."""
    return (
        record.status == reference.status == "ok"
        and record.target == reference.target
        and record.machine_id == reference.machine_id
        and record.device == reference.device
        and record.threads == reference.threads
        and not reference.injected_slowdown
    )


def slower_batches(
    record: Record,
    reference: Record,
    *,
    margin: float = MARGIN,
    confidence: float = CONFIDENCE,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> list[tuple[int, RatioCI]]:
    """The batch sizes (with their CI of median(record) / median(reference)) at which
    ``record`` is clearly slower than ``reference``: the whole CI lies above ``1 + margin``.

    Only batch sizes measured in both count; records that are not :func:`comparable` give [].
    The CI is the regression gate's moving-block bootstrap (:func:`.stats.ratio_of_medians_ci`),
    seeded, so the same samples always give the same verdict. A point ratio at or below the
    limit cannot have its interval above it: no bootstrap is run then."""
    from .stats import ratio_of_medians_ci  # numpy: only when there is something to compare

    if not comparable(record, reference):
        return []
    limit = 1.0 + margin
    out = []
    for lat in record.latency:
        ref = reference.latency_at(lat.batch)
        if ref is None or lat.p50_ms <= limit * ref.p50_ms:
            continue
        ci = ratio_of_medians_ci(lat.samples_us, ref.samples_us, confidence, n_boot, seed)
        if ci.low > limit:
            out.append((lat.batch, ci))
    return out


def float_counterpart(record: Record, records: Sequence[Record]) -> Record | None:
    """The fp32 record ``record`` is compared with, or None (then it is never marked).

    It is on the same target and :func:`comparable`: first the fp32 artifact of the same label
    (``cnn+distill+prune`` int8 -> ``cnn+distill+prune`` fp32: the same chain, only the
    precision differs), else the float baseline of the model (``cnn`` fp32: a compressed int8
    slower than the uncompressed float model is slower than fp32 too). An fp32 record, a record
    not measured, or a target with no fp32 build (TensorRT fp16/int8 only) has none."""
    if record.precision == FLOAT or record.status != "ok":
        return None
    for label in dict.fromkeys([record.model, record.model.split("+")[0]]):
        found = next(
            (
                r
                for r in records
                if (r.model, r.target, r.precision) == (label, record.target, FLOAT)
                and comparable(record, r)
            ),
            None,
        )
        if found is not None:
            return found
    return None


def mark_slower_than_fp32(results: Results, **kwargs) -> Results:
    """A copy of ``results`` in which every record that is slower than its fp32 counterpart
    (:func:`float_counterpart`, :func:`slower_batches`) carries the mark ``slower than fp32``.

    Definition: a non-fp32 record (int8, dynamic_int8, qdq, fp16, ...) is slower than fp32 when,
    at any batch size measured in both, the ``CONFIDENCE`` bootstrap CI of the ratio of its
    median per-call latency to its counterpart's lies entirely above ``1 + MARGIN``. Records with
    no counterpart, failed or skipped records are never marked. The mark is recomputed: one the
    input carried is dropped when it no longer holds. ``kwargs`` go to :func:`slower_batches`."""
    records = results.records
    out = []
    for rec in records:
        base = float_counterpart(rec, records)
        slower = base is not None and bool(slower_batches(rec, base, **kwargs))
        marks = [m for m in rec.marks if m != SLOWER_THAN_FP32]
        marks += [SLOWER_THAN_FP32] if slower else []
        out.append(rec if marks == rec.marks else rec.model_copy(update={"marks": marks}))
    return results.model_copy(update={"records": out})
