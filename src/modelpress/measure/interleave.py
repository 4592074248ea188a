"""Interleaved A/B latency: a baseline and a candidate timed in alternating blocks, one process.

A regression gate that compares today's run with a baseline file measured at another time
compares two machines states as much as two artifacts: on a shared 2-core VM the ratio of an
artifact to itself drifted from 0.66 to 0.99 between runs. Here both artifacts are loaded in the
same worker, warmed up alike, then timed in blocks of ``calls_per_block`` calls, alternating
A B | B A | A B | B A ... (ABBA: the order flips every pair, so a linear drift of the machine
adds to one pair what it takes from the next). Each pair gives the log of the ratio of its two
block medians; the result is their Hodges-Lehmann estimate and its Wilcoxon interval
(:func:`hodges_lehmann_ci`: a pair hit by the machine counts by its rank, not its size), as a
ratio B/A.

>>> from modelpress.measure.interleave import measure_interleaved, interleaved_verdict
>>> res = measure_interleaved(runner, runner, x, blocks=20, calls_per_block=50,  # doctest: +SKIP
...                           warmup=50)
>>> interleaved_verdict(res, tolerance=0.03)                                     # doctest: +SKIP
('pass', 'B/A 1.002 (95% CI 0.996-1.008, 20 block pairs): within 1.03')
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import ConfigError, TargetUnavailable, one_line
from .timing import Call, batch_of, fast_call, load_data, slowed, synthetic_inputs, time_calls

# the interleaved gate's default tolerance: see benchmarks/results/gates_interleaved.md
DEFAULT_TOLERANCE = 0.02  # A/A 0 / 50 and +5 % caught 50 / 50 at 0.5-2 % on a 2-core VM
MIN_BLOCKS = 5  # pairs (4 degrees of freedom): where t_quantile is accurate from


@dataclass(frozen=True)
class InterleavedResult:
    """Block medians (ns) of A and B in time order of their pairs, and the ratio B/A.

    ``ratio`` is the ``estimator``'s center of ``log_ratios``, exponentiated (Hodges-Lehmann;
    ``t``: their mean, the geometric mean of the per-pair ratios); ``ci_low``/``ci_high`` its
    two-sided ``confidence`` interval; ``extra_ns`` the busy wait
    added to each B call when ``slowdown_b`` > 0 (gate self-tests only)."""

    blocks: int
    calls_per_block: int
    warmup: int
    slowdown_b: float
    extra_ns: int
    medians_a_ns: list[float]
    medians_b_ns: list[float]
    log_ratios: list[float]
    ratio: float
    ci_low: float
    ci_high: float
    confidence: float
    reloads: int = 0  # fresh pairs of sessions made during the measurement (see reload)
    estimator: str = "t"  # how ratio and interval came from log_ratios (see ESTIMATORS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InterleavedResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal quantile, four terms;
    no scipy): for ``df`` >= 4 within 1e-3 of the exact value up to p=0.975 (2.7756 for 2.7764
    at df=4) and within 0.3 % at p=0.995; exact to 4 digits from df=9."""
    z = NormalDist().inv_cdf(p)
    v = float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def paired_ratio_ci(log_ratios: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Ratio ``exp(mean)`` and its t-interval from the per-pair log ratios.

    A t-interval, not a bootstrap: there are few pairs (10-40), and a percentile bootstrap of a
    mean over n < 30 points is too narrow (it misses the t distribution's wider tails and the
    n/(n-1) variance factor), which is exactly the A/A false failure this mode exists to avoid.
    Each pair's value is a log ratio of two block medians, each of many calls, so it is close to
    normal; and the ABBA order makes drift alternate in sign across pairs, which widens the
    interval (conservative) rather than shifting it. The answer is deterministic: no seed.
    """
    d = np.asarray(log_ratios, dtype=np.float64)
    n = d.size
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2, n - 1) * se
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def signed_rank_cdf(n: int) -> np.ndarray:
    """P(W+ <= w) for w = 0 .. n(n+1)/2: the exact null distribution of Wilcoxon's signed-rank
    statistic for ``n`` pairs (each rank counted or not with probability 1/2; counted by
    dynamic programming, exact in float64 for the n of a measurement: up to a few hundred)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    return np.cumsum(counts) / 2.0**n


def hodges_lehmann_ci(log_ratios: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Ratio ``exp(HL)`` and its distribution-free interval from the per-pair log ratios.

    HL is the median of the Walsh averages (every (d_i + d_j) / 2, i <= j); the interval runs
    from the k-th smallest to the k-th largest Walsh average, k from the exact signed-rank
    distribution (the Wilcoxon interval). Why not the t-interval (:func:`paired_ratio_ci`): a
    few block pairs hit by the machine (a preempted block, a cold pair after a reload) have log
    ratios far from the rest; they inflate the standard deviation, so one run's t-interval was
    0.79-1.13 for a 5 % slowdown that its other pairs showed clearly. The Wilcoxon interval
    gives such pairs a rank, not a weight: it is ~95 % as efficient as the t-interval on normal
    data and far better on heavy tails, and needs only symmetry of the pairs' differences,
    which the ABBA order (drift alternating in sign) supports. Deterministic: no seed."""
    d = np.sort(np.asarray(log_ratios, dtype=np.float64))
    n = d.size
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2.0)
    cdf = signed_rank_cdf(n)
    alpha = 1.0 - confidence
    k = max(1, int(np.searchsorted(cdf, alpha / 2, side="right")))  # cdf[k-1] <= alpha/2
    low, high = walsh[k - 1], walsh[walsh.size - k]
    return math.exp(float(np.median(walsh))), math.exp(float(low)), math.exp(float(high))


ESTIMATORS = {"hodges-lehmann": hodges_lehmann_ci, "t": paired_ratio_ci}


def _block_median(call: Call, calls: int) -> float:
    return float(np.median(time_calls(call, calls, 0.0)))


Loader = Callable[[bool], "tuple[Any, Any]"]  # (A first?) -> fresh (runner A, runner B)


def measure_interleaved(
    runner_a: Any,
    runner_b: Any,
    x: np.ndarray,
    blocks: int,
    calls_per_block: int,
    warmup: int,
    slowdown_b: float = 0.0,
    confidence: float = 0.95,
    reload: Loader | None = None,
    estimator: str = "hodges-lehmann",
) -> InterleavedResult:
    """Time ``runner_a`` and ``runner_b`` on the batch ``x`` in ``blocks`` ABBA-ordered pairs.

    Both get ``warmup`` untimed calls, in alternating halves (A B B A), so neither starts colder.
    ``reload``, when given, makes fresh runners before every pair after the first (loaded in
    alternating order, then warmed up again): two loaded copies of one model can differ steadily
    by a few percent (where their memory landed), which pairing cannot cancel; a fresh pair of
    sessions per block pair turns that into noise between pairs, which the interval counts and
    the mean averages away. ``slowdown_b`` > 0 makes every B call that fraction slower (a busy
    wait calibrated once on B's own median after warm-up, as
    :func:`modelpress.measure.worker.measure_batch` does): only to check that a gate catches a
    regression.
    """
    if blocks < MIN_BLOCKS or calls_per_block < 1 or warmup < 0:
        raise ConfigError(
            f"interleaving needs blocks >= {MIN_BLOCKS}, calls_per_block >= 1 and warmup >= 0, "
            f"got {blocks}, {calls_per_block}, {warmup}"
        )
    if not 0.5 <= confidence < 1.0 or not 0.0 <= slowdown_b <= 10.0:
        raise ConfigError(f"confidence is in [0.5, 1), slowdown_b in [0, 10]; got {confidence}")
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator {estimator!r} is unknown; choose one of {list(ESTIMATORS)}")
    call_a, call_b = _warm(runner_a, runner_b, x, warmup)
    extra = int(slowdown_b * np.median(time_calls(call_b, 50, 0.05))) if slowdown_b > 0 else 0
    med_a, med_b = [], []
    for i in range(blocks):
        if reload is not None and i > 0:
            runner_a, runner_b = _fresh(reload, (runner_a, runner_b), a_first=i % 2 == 0)
            call_a, call_b = _warm(runner_a, runner_b, x, warmup)
        slow_b = slowed(call_b, extra) if extra else call_b
        order = ((call_a, med_a), (slow_b, med_b))
        for call, out in order if i % 2 == 0 else order[::-1]:
            out.append(_block_median(call, calls_per_block))
    if reload is not None:
        for r in (runner_a, runner_b):
            getattr(r, "close", lambda: None)()
    logs = np.log(med_b) - np.log(med_a)
    ratio, low, high = ESTIMATORS[estimator](logs, confidence)
    return InterleavedResult(
        blocks=blocks,
        calls_per_block=calls_per_block,
        warmup=warmup,
        slowdown_b=slowdown_b,
        extra_ns=extra,
        medians_a_ns=med_a,
        medians_b_ns=med_b,
        log_ratios=[float(v) for v in logs],
        ratio=ratio,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        reloads=blocks - 1 if reload is not None else 0,
        estimator=estimator,
    )


def _warm(runner_a: Any, runner_b: Any, x: np.ndarray, warmup: int) -> tuple[Call, Call]:
    """The two prepared calls, each warmed up with ``warmup`` calls in A B B A halves."""
    call_a, call_b = fast_call(runner_a, x), fast_call(runner_b, x)
    half = (warmup + 1) // 2
    for call in (call_a, call_b, call_b, call_a):
        time_calls(call, half, 0.0)
    return call_a, call_b


def _fresh(reload: Loader, old: tuple[Any, Any], a_first: bool) -> tuple[Any, Any]:
    for r in old:
        getattr(r, "close", lambda: None)()
    return reload(a_first)


def interleaved_verdict(result: InterleavedResult, tolerance: float) -> tuple[str, str]:
    """``("fail", why)`` when B is slower than A beyond ``tolerance`` with the result's
    confidence (the CI's lower bound of B/A is above ``1 + tolerance``), else ``("pass", why)``.

    The tolerance absorbs what pairing cannot: a steady difference between two loaded copies of
    the same model (memory placement); ``benchmarks/gate_aa_ab.py --interleaved`` measures it."""
    if not 0.0 <= tolerance < 10.0:
        raise ConfigError(f"tolerance is a fraction >= 0 (0.03 = 3 %), got {tolerance}")
    line = 1.0 + tolerance
    status = "fail" if result.ci_low > line else "pass"
    where = "above" if status == "fail" else "within"
    return status, (
        f"B/A {result.ratio:.3f} ({result.confidence:.0%} CI {result.ci_low:.3f}-"
        f"{result.ci_high:.3f}, {result.blocks} block pairs): {where} {line:.3f}"
    )


def interleaved_job(job: dict[str, Any]) -> dict[str, Any]:
    """The worker's ``interleave`` mode: load ``artifact_a`` and ``artifact_b`` on one target and
    time them interleaved at each batch size; a failure is a ``failed`` row with its reason.

    Job keys: ``artifact_a``, ``artifact_b`` (artifact dicts), ``target``, ``target_options``,
    ``slowdown_b``, ``settings`` (``batch_sizes``, ``blocks``, ``calls_per_block``, ``warmup``,
    ``confidence``, ``reload``: fresh sessions for every block pair, default true; ``estimator``:
    ``hodges-lehmann``, the default, or ``t``). Inputs: A's test split, or synthetic ones from A's input spec."""
    from ..artifact import Artifact
    from ..targets import get_target

    settings, out = job["settings"], {"status": "ok", "batches": []}
    phase = "load"
    try:
        art_a, art_b = (Artifact.from_dict(job[k]) for k in ("artifact_a", "artifact_b"))
        spec_a, spec_b = (a.meta.get("input_spec") for a in (art_a, art_b))
        if spec_a != spec_b:
            raise ConfigError(
                f"A and B take different inputs ({spec_a} vs {spec_b}); compare "
                "two builds of the same model"
            )
        data = load_data(dict(art_a.meta))
        pool = data.test.x if data is not None else synthetic_inputs(dict(art_a.meta))
        target = get_target(job["target"], **job.get("target_options", {}))
        target.availability().require(job["target"])

        def reload(a_first: bool) -> tuple[Any, Any]:
            if a_first:
                first = target.load(art_a)
                return first, target.load(art_b)
            second = target.load(art_b)
            return target.load(art_a), second

        fresh = bool(settings.get("reload", True))
        pair = reload(True)
        info = target.describe().to_dict()
        out.update(runtime=info, threads=info.get("threads"))
        for k, batch in enumerate(settings["batch_sizes"]):
            phase = f"interleaved timing at batch {batch}"
            if fresh and k > 0:  # the last batch's sessions were closed with its measurement
                pair = reload(True)
            t0 = time.perf_counter()
            res = measure_interleaved(
                *pair,
                batch_of(pool, batch),
                settings["blocks"],
                settings["calls_per_block"],
                settings["warmup"],
                job.get("slowdown_b", 0.0),
                settings.get("confidence", 0.95),
                reload if fresh else None,
                settings.get("estimator", "hodges-lehmann"),
            )
            entry = {"batch": batch, "seconds": time.perf_counter() - t0, **res.to_dict()}
            out["batches"].append(entry)
        if not fresh:
            for r in pair:
                r.close()
    except TargetUnavailable as exc:
        out.update(status="skipped", reason=one_line(exc))
    except Exception as exc:  # a row that says why, never a crash of the worker
        out.update(status="failed", reason=f"{phase}: {type(exc).__name__}: {one_line(exc)}")
    return out
