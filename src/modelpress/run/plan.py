"""Which artifacts a run builds and measures, and in which worker processes.

Per (model, target): the jobs (variant x precision), or skipped rows when the target cannot run
on this machine (checked once per target, before any worker starts). Builds run in parallel
workers, each taking one target's jobs of several models (a runtime's imports and warm-up are
paid once per worker); measurements run one worker per target, one after another, since they
need the machine to themselves. The primitives (build_all, bench_groups) are in run_steps.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..targets import with_bench_batches
from .steps import (
    Group,
    Job,
    bench_groups,
    bench_settings,
    build_all,
    failed_record,
    measured_when,
    reference,
)

if TYPE_CHECKING:
    from ..measure.results import Record, Results
    from .pipeline import Pipeline
    from .state import ModelRun


def jobs_for(
    pipe: Pipeline,
    run: ModelRun,
    target: str,
    precisions: list[str],
    variants: list[str] | None = None,
) -> tuple[list[Job], list[Record]]:
    """The (variant x precision) builds of ``run`` on ``target``; ``variants``: which of its
    artifacts the target builds (default both: the float baseline and the compressed chain)."""
    jobs, skipped = [], []
    for precision in precisions:
        for variant, label in pipe.variants(run):
            if variants is not None and variant not in variants:
                continue
            src = pipe.source_for(run, variant, target, precision)
            if src is None:  # the chain's only output is qat's QDQ graph
                why = "the chain ends in qat's QDQ ONNX graph: onnxruntime qdq, tensorrt int8 build it"
                info = {"status": "skipped", "reason": why}
                skipped.append(failed_record(run, label, target, precision, info))
                continue
            if src.format == "onnx" and target in ("torch", "litert"):
                why = f"{target} builds from a torch checkpoint; this model is an ONNX file"
                skipped.append(
                    failed_record(
                        run, label, target, precision, {"status": "skipped", "reason": why}
                    )
                )
                continue
            jobs.append(Job(label=label, precision=precision, source=src))
    return jobs, skipped


@dataclass
class Plan:
    """What one (model, target) pair builds and measures."""

    run: ModelRun
    target: str
    options: dict
    jobs: list[Job]
    skipped: list[Record]
    ref: Path | None


def unavailable(target: str, options: dict) -> str | None:
    """Why ``target`` cannot run on this machine (checked here, before any worker starts)."""
    from ..errors import ModelPressError
    from ..targets import get_target

    try:
        get_target(target, **options).availability().require(target)
    except ModelPressError as exc:
        return str(exc)
    return None


def plan_all(pipe: Pipeline, models: list[ModelRun]) -> list[Plan]:
    """Jobs per (model, target); a target this machine cannot run gets skipped rows, no worker."""
    plans, absent = [], {}
    batch_sizes = bench_settings(pipe).batch_sizes
    for run in models:
        ref = reference(pipe, run)
        for target, section in pipe.recipe.targets_for(run.label).items():
            jobs, skipped = jobs_for(pipe, run, target, section.precisions, section.variants)
            options = with_bench_batches(target, section.options, batch_sizes)
            for job in jobs:
                job.options = options
            if target not in absent:
                absent[target] = unavailable(target, options)
                if absent[target]:
                    pipe.log(f"  [skip]   {absent[target]}")
            if absent[target]:
                info = {"status": "skipped", "reason": absent[target]}
                skipped += [failed_record(run, j.label, target, j.precision, info) for j in jobs]
                jobs = []
            plans.append(Plan(run, target, options, jobs, skipped, ref))
    return plans


# slowest first: a LiteRT conversion takes a few times an ONNX export (measured on digits)
BUILD_ORDER = ("litert", "tensorrt", "onnxruntime", "torch")


def build_chunks(plans: list[Plan], n: int) -> list[tuple[str, list[Job], str]]:
    """(target, jobs, part) per build worker: every model's jobs of one target split in ``n``
    parts (a worker pays a runtime's imports and warm-up once for its part), slowest first."""
    chunks = []
    targets = sorted(
        {p.target for p in plans},
        key=lambda t: (t not in BUILD_ORDER, BUILD_ORDER.index(t) if t in BUILD_ORDER else 0),
    )
    for target in targets:
        jobs = [j for p in plans if p.target == target for j in p.jobs]
        k = min(n, len(jobs))
        for i in range(k):  # every k-th job: each part gets a mix of models and precisions
            chunks.append((target, jobs[i::k], f" ({i + 1}/{k})" if k > 1 else ""))
    return chunks


def benchmark_all(
    pipe: Pipeline, models: list[ModelRun], failed: list[Record] | None = None
) -> Results:
    """Build every artifact (a worker per (model, target), several at once: builds do not need
    the machine to themselves), then measure them one worker at a time (measurements do).
    ``failed``: rows of models that failed before any artifact, reported with the rest."""
    from concurrent.futures import ThreadPoolExecutor

    from ..measure.bench import collect_environment
    from ..measure.results import new_results
    from .int8_fallback import annotate, apply_budget
    from .parallel import jobs as parallel_jobs
    from .parallel import train_threads

    plans = plan_all(pipe, models)
    env = {"OMP_NUM_THREADS": str(train_threads())}
    n = parallel_jobs()
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(lambda c: build_all(pipe, c[0], c[1], env, c[2]), build_chunks(plans, n)))
    tracks = apply_budget(pipe, plans, env)  # int8 over its accuracy budget: layers kept float
    measured, cached = {}, []
    for target in dict.fromkeys(p.target for p in plans):  # one worker per target, in order
        mine = [p for p in plans if p.target == target]
        groups = [Group(p.run, p.options, p.ref, p.jobs) for p in mine]
        for p, recs in zip(mine, bench_groups(pipe, target, groups, from_cache=cached)):
            measured[id(p)] = recs
            annotate(recs, p, tracks)
    records = [r for p in plans for r in (*p.skipped, *measured[id(p)])] + list(failed or [])
    if pipe.devices:  # the recipe's other devices: the same artifacts, measured there
        from .remote_steps import measure_on_devices

        records += measure_on_devices(pipe, pipe.devices, plans)
    if cached:
        measured = sum(1 for r in records if r.measured_at)
        pipe.log(
            f"[measure] {len(cached)} of {measured} measured record(s) come from the cache, "
            f"{measured_when(cached)}; `modelpress run --remeasure` measures them again"
        )
    return new_results(collect_environment(), records, bench_settings(pipe).to_dict())
