"""Statistics for latency samples: percentiles, a block-bootstrap CI of a ratio of medians, and
the Mann-Whitney rank test; and the Pareto front of (cost, cost) points.

Latency samples from one run are not independent: a noisy neighbour or a frequency change slows
a whole stretch of consecutive calls. :func:`ratio_of_medians_ci` therefore resamples contiguous
*blocks* of calls (a moving-block bootstrap) instead of single calls, so a burst of slow calls
widens the interval instead of looking like a clear regression. Everything is seeded.

>>> import numpy as np
>>> from modelpress.measure.stats import percentile, ratio_of_medians_ci
>>> percentile([1, 2, 3, 4], 50)
2.0
>>> rng = np.random.default_rng(0)
>>> base = rng.lognormal(0.0, 0.1, 2000)
>>> ci = ratio_of_medians_ci(1.25 * rng.lognormal(0.0, 0.1, 2000), base)
>>> bool(1.2 < ci.low < 1.25 < ci.high < 1.3)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _as_samples(x: ArrayLike, name: str = "samples") -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty; a statistic needs at least one sample")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def percentile(samples: ArrayLike, q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least ``q`` % of samples <= it.

    This is the usual definition for latency (every reported value was actually observed):
    p50 of [1, 2, 3, 4] is 2, p90 of 1..10 is 9, p99 of 1..100 is 99, p100 is the maximum.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    a = np.sort(_as_samples(samples))
    rank = max(1, math.ceil(q / 100.0 * a.size - 1e-9))  # 1-based; q=0 -> the minimum
    return float(a[rank - 1])


def percentiles(samples: ArrayLike, qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` by :func:`percentile` (one sort for all)."""
    a = np.sort(_as_samples(samples))
    out = {}
    for q in qs:
        if not 0.0 <= q <= 100.0:
            raise ValueError(f"percentile q must be in [0, 100], got {q}")
        rank = max(1, math.ceil(q / 100.0 * a.size - 1e-9))
        out[f"p{q:g}"] = float(a[rank - 1])
    return out


def default_block(n: int) -> int:
    """Block length of the moving-block bootstrap: about sqrt(n) consecutive calls."""
    return max(1, round(math.sqrt(n)))


def block_bootstrap_medians(
    samples: ArrayLike,
    n_boot: int,
    rng: np.random.Generator,
    block: int | None = None,
    chunk: int = 200,
) -> np.ndarray:
    """Medians of ``n_boot`` moving-block bootstrap resamples of ``samples`` (time order kept).

    Each resample concatenates ``ceil(n / block)`` blocks of ``block`` consecutive samples
    starting at random offsets, cut to ``n`` samples. ``block=1`` is the ordinary bootstrap.
    """
    a = _as_samples(samples)
    n = a.size
    block = min(n, block or default_block(n))
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    n_blocks = math.ceil(n / block)
    offsets = np.arange(block)
    out = np.empty(n_boot)
    for lo in range(0, n_boot, chunk):  # chunks bound memory: (chunk, n) indices at a time
        k = min(chunk, n_boot - lo)
        starts = rng.integers(0, n - block + 1, size=(k, n_blocks))
        idx = (starts[:, :, None] + offsets).reshape(k, -1)[:, :n]  # (k, n)
        out[lo : lo + k] = np.median(a[idx], axis=1)
    return out


@dataclass(frozen=True)
class RatioCI:
    """Ratio of medians (current / baseline) with a two-sided bootstrap confidence interval."""

    ratio: float
    low: float
    high: float
    confidence: float
    n_current: int
    n_baseline: int
    block_current: int
    block_baseline: int


def ratio_of_medians_ci(
    current: ArrayLike,
    baseline: ArrayLike,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    block: int | None = None,
) -> RatioCI:
    """Point estimate and percentile CI of median(current) / median(baseline).

    The two series are resampled independently with a moving-block bootstrap (block length
    :func:`default_block` of each series unless ``block`` is given); seeded, so the same inputs
    always give the same interval.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100 for a usable interval, got {n_boot}")
    cur = _as_samples(current, "current samples")
    base = _as_samples(baseline, "baseline samples")
    if np.median(base) <= 0:
        raise ValueError("baseline median is not positive; latency samples must be > 0")
    rng = np.random.default_rng(seed)
    bc = min(cur.size, block or default_block(cur.size))
    bb = min(base.size, block or default_block(base.size))
    ratios = block_bootstrap_medians(cur, n_boot, rng, bc) / block_bootstrap_medians(
        base, n_boot, rng, bb
    )
    alpha = 1.0 - confidence
    low, high = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return RatioCI(
        ratio=float(np.median(cur) / np.median(base)),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_current=int(cur.size),
        n_baseline=int(base.size),
        block_current=int(bc),
        block_baseline=int(bb),
    )


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U statistic of ``x`` (number of pairs with x > y, ties count one half)
    z: float  # normal approximation, tie-corrected, with continuity correction
    p_greater: float  # one-sided p-value of H1: x tends to be larger than y


def _rankdata(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of ``a`` and the sizes of its groups of ties."""
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    new_group = np.r_[True, sorted_a[1:] != sorted_a[:-1]]
    group_id = np.cumsum(new_group) - 1
    counts = np.bincount(group_id)
    first = np.r_[0, np.cumsum(counts)[:-1]]
    avg = first + (counts + 1) / 2.0  # average of 1-based ranks first+1 .. first+count
    ranks = np.empty(a.size)
    ranks[order] = avg[group_id]
    return ranks, counts


def mann_whitney_greater(x: ArrayLike, y: ArrayLike) -> MannWhitney:
    """One-sided Mann-Whitney U test that ``x`` is stochastically larger than ``y``.

    Uses the normal approximation with tie and continuity corrections (the samples here are
    hundreds to thousands of calls). Calls within a run are not independent, so treat a small
    p-value as a strong hint, not a proof; the gate decides on :func:`ratio_of_medians_ci`.
    """
    xs, ys = _as_samples(x, "x"), _as_samples(y, "y")
    n1, n2 = xs.size, ys.size
    ranks, ties = _rankdata(np.concatenate([xs, ys]))
    u = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    tie_term = float((ties**3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every value equal: no evidence either way
        return MannWhitney(u=u, z=0.0, p_greater=1.0)
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return MannWhitney(u=u, z=float(z), p_greater=float(0.5 * math.erfc(z / math.sqrt(2.0))))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point dominates, sorted by (x, y), then index.

    Convention: **both coordinates are minimised** (a caller that maximises one negates it).
    A point dominates another when it is at least as low on both coordinates and strictly lower
    on one; so exact duplicates do not dominate each other and are all on the front.
    The search uses (accuracy drop, latency or bytes), the report (latency or bytes, drop).

    >>> pareto_front([(1.0, 2.0), (2.0, 1.0), (2.0, 3.0), (1.0, 2.0)])
    [0, 3, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front: list[int] = []
    for i in order:  # increasing x: on the front iff y beats every earlier y, or a duplicate
        last = tuple(points[front[-1]]) if front else None
        if last is None or points[i][1] < last[1] or tuple(points[i]) == last:
            front.append(i)
    return front
