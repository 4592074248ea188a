"""The report's plots: per model family, accuracy drop vs p50 latency and vs bytes on disk.

A plot that mixes families compares nothing (a GRU and a CNN solve the task differently), so
every family gets its own pair of panels. Each record is a dot coloured by target, shaped by
precision, with a number placed where it overlaps no other number and no dot (a thin line leads
to it when it had to move away); the HTML report lists the numbers in a key under the plot.
The Pareto front of each panel is drawn in red: lower drop and lower latency / size are better.
Plots use matplotlib's Agg canvas directly (no pyplot, no global state).

>>> from modelpress.measure.report_plots import family_points, plot_family   # doctest: +SKIP
>>> for fam in family_points(load_results("results.json")):
...     png_base64 = plot_family(fam)
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

from .results import Record, Results
from .stats import pareto_front

PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "int8": "^", "dynamic_int8": "v", "qdq": "D"}
TARGET_ORDER = ("onnxruntime", "litert", "tensorrt", "torch")


@dataclass(frozen=True)
class Point:
    """One measured record of a family, numbered for the plot and its key."""

    number: int
    record: Record
    drop: float  # accuracy drop vs the float model, percentage points (lower is better)
    latency_ms: float | None  # p50 at the family's batch; None if not measured at that batch
    size_bytes: int | None


@dataclass(frozen=True)
class FamilyPoints:
    family: str
    batch: int | None  # the batch size whose p50 latency is plotted
    points: list[Point]
    latency_front: list[int]  # numbers of the points on the drop-vs-latency front
    size_front: list[int]  # numbers of the points on the drop-vs-size front

    def on_front(self, number: int) -> str:
        """'latency, size', 'latency', 'size' or '': the fronts point ``number`` is on."""
        fronts = [("latency", self.latency_front), ("size", self.size_front)]
        return ", ".join(name for name, front in fronts if number in front)


def accuracy_drop(r: Record, records: Sequence[Record]) -> float | None:
    """Points below the float model: the record's own drop (vs the float reference logits),
    else vs its base model's fp32 record on the same target."""
    v = r.validation
    if v is None:
        return None
    if v.accuracy_drop is not None:
        return v.accuracy_drop
    base = r.model.split("+")[0]
    ref = next(
        (
            o.validation.accuracy
            for o in records
            if o.validation and (o.model, o.target, o.precision) == (base, r.target, "fp32")
        ),
        None,
    )
    return None if ref is None else 100.0 * (ref - v.accuracy)


def _plot_batch(recs: Sequence[Record]) -> int | None:
    """The largest batch every record was measured at, else the smallest batch measured."""
    sets = [{lat.batch for lat in r.latency} for r in recs if r.latency]
    if not sets:
        return None
    common = set.intersection(*sets)
    return max(common) if common else min(set.union(*sets))


def family_points(results: Results) -> list[FamilyPoints]:
    """Every family of the results (sorted), its measured records numbered 1.. and its fronts."""
    out = []
    for family in sorted({r.family or "?" for r in results.records}):
        recs = [
            r
            for r in results.records
            if (r.family or "?") == family and r.status == "ok" and r.validation
        ]
        recs.sort(key=lambda r: (r.model, _order(r.target, TARGET_ORDER), _precision_order(r)))
        batch = _plot_batch(recs)
        points = []
        for r in recs:
            drop = accuracy_drop(r, results.records)
            if drop is None:
                continue
            lat = r.latency_at(batch) if batch else None
            points.append(
                Point(len(points) + 1, r, drop, lat.p50_ms if lat else None, r.size_bytes)
            )
        out.append(
            FamilyPoints(
                family,
                batch,
                points,
                _front(points, lambda p: p.latency_ms),
                _front(points, lambda p: p.size_bytes),
            )
        )
    return out


def _precision_order(r: Record) -> tuple[int, str]:
    return _order(r.precision, list(PRECISION_MARKERS)), r.precision


def _order(name: str, known: Sequence[str]) -> int:
    return known.index(name) if name in known else len(known)


def _front(points: list[Point], x) -> list[int]:
    mine = [p for p in points if x(p) is not None]
    return [mine[i].number for i in pareto_front([(x(p), p.drop) for p in mine])]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_family(fam: FamilyPoints) -> str:
    """Base64 PNG: drop vs p50 latency (left) and drop vs size (right), fronts in red."""
    return _png(family_figure(fam))


def family_figure(fam: FamilyPoints):
    """The matplotlib Figure of :func:`plot_family` (Agg canvas attached)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.9), dpi=96)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.24, top=0.89, wspace=0.06)
    ax_lat = fig.add_subplot(1, 2, 1)
    ax_size = fig.add_subplot(1, 2, 2, sharey=ax_lat)
    ax_size.tick_params(labelleft=False)
    _drop_limits(ax_lat, [p.drop for p in fam.points])  # shared: set before any label is placed
    batch = f" (batch {fam.batch})" if fam.batch else ""
    _panel(ax_lat, fam, "latency", f"p50 latency, ms{batch}")
    _panel(ax_size, fam, "size", "size on disk")  # in KiB or MiB, see _panel
    ax_lat.set_ylabel("accuracy drop vs float, points")
    fig.suptitle(f"{fam.family}: accuracy drop vs latency and size (lower left is better)")
    _legend(fig, fam)
    return fig


def _panel(ax, fam: FamilyPoints, what: str, xlabel: str) -> None:
    from .plot_labels import place_numbers

    value = (lambda p: p.latency_ms) if what == "latency" else (lambda p: p.size_bytes)
    mine = [p for p in fam.points if value(p) is not None]
    ax.set_xlabel(xlabel)
    if not mine:
        ax.text(0.5, 0.5, f"no {what} measured", ha="center", va="center", transform=ax.transAxes)
        return
    xs, ys = [float(value(p)) for p in mine], [p.drop for p in mine]
    if what == "size":
        unit, scale = ("MiB", 2.0**20) if max(xs) >= 10 * 2**20 else ("KiB", 1024.0)
        xs = [x / scale for x in xs]
        ax.set_xlabel(f"{xlabel}, {unit}")
    _x_limits(ax, xs)
    ax.axhline(0.0, color="#666", lw=1.0, ls=(0, (4, 3)), zorder=1)
    front = set(fam.latency_front if what == "latency" else fam.size_front)
    fx, fy = zip(*sorted((x, y) for x, y, p in zip(xs, ys, mine) if p.number in front))
    ax.step(fx, fy, where="post", color="#d62728", lw=1.2, zorder=2)
    for x, y, p in zip(xs, ys, mine):
        ax.scatter(
            [x],
            [y],
            s=42,
            marker=PRECISION_MARKERS.get(p.record.precision, "X"),
            color=_target_color(p.record.target),
            edgecolors="#d62728" if p.number in front else "white",
            linewidths=1.6 if p.number in front else 0.6,
            zorder=3,
        )
    ax.grid(True, color="#eee", zorder=0)
    place_numbers(ax, xs, ys, [str(p.number) for p in mine])


def _x_limits(ax, xs: list[float]) -> None:
    lo, hi = min(xs), max(xs)
    if lo > 0 and hi / lo > 8:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.set_xlim(lo / 1.4, hi * 1.4)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        pad = (hi - lo) * 0.12 or abs(hi) * 0.2 or 1.0
        ax.set_xlim(max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad)


def _drop_limits(ax, drops: list[float]) -> None:
    """y from the lowest to the highest drop, the float model's 0 always in view."""
    lo, hi = min([*drops, 0.0]), max([*drops, 0.0])
    pad = max((hi - lo) * 0.15, 0.25)
    ax.set_ylim(lo - pad, hi + pad)


def _target_color(target: str) -> str:
    return f"C{_order(target, TARGET_ORDER) % 10}" if target in TARGET_ORDER else "C7"


def _legend(fig, fam: FamilyPoints) -> None:
    from matplotlib.lines import Line2D

    targets = sorted({p.record.target for p in fam.points}, key=lambda t: _order(t, TARGET_ORDER))
    precisions = sorted(
        {p.record.precision for p in fam.points}, key=lambda p: _order(p, list(PRECISION_MARKERS))
    )
    handles = [Line2D([], [], ls="", marker="o", color=_target_color(t), label=t) for t in targets]
    handles += [
        Line2D([], [], ls="", marker=PRECISION_MARKERS.get(p, "X"), color="#555", label=p)
        for p in precisions
    ]
    handles.append(Line2D([], [], color="#d62728", label="Pareto front"))
    handles.append(Line2D([], [], color="#666", ls=(0, (4, 3)), label="float model"))
    ncol = len(handles) if len(handles) <= 8 else (len(handles) + 1) // 2
    # below the axes, growing downwards (the PNG is cropped to what is drawn)
    fig.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.1), ncol=ncol, frameon=False
    )
