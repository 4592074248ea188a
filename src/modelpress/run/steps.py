"""The measuring half of a run, its primitives: build a list of jobs in one fresh worker
process, validate and benchmark a list of built artifacts in another, then write results,
report, gates and the summary table (:func:`finish`). Which jobs go to which worker is decided
in run_targets.py.

A worker runs one runtime only (imports are paid once; one runtime never shares a process with
another). If it dies, each of its jobs is retried alone so that one crashing job cannot hide the
others. Every job's output is its own cached stage.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifact import Artifact
from ..fsutil import atomic_write_text
from ..targets import build_identity
from .stages import artifact_from_manifest, artifact_to_manifest
from .state import RunOutcome

if TYPE_CHECKING:
    from ..measure.results import Record, Results
    from ..progress import WorkerProgress
    from .pipeline import Pipeline
    from .state import ModelRun

WORKER_TIMEOUT_S = 1800.0


@dataclass
class Job:
    """One build + measurement of a model variant on a target at one precision."""

    label: str  # results name: "cnn" or "cnn+distill+prune"
    precision: str
    source: Artifact
    options: dict = field(default_factory=dict)  # the target's options for this model
    build_key: str = ""
    built: Artifact | None = None
    build_s: float | None = None
    failure: dict[str, Any] | None = None


def bench_settings(pipe: Pipeline):
    from ..measure.bench import BenchSettings

    return BenchSettings(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in pipe.recipe.benchmark.items()}
    )


def reference(pipe: Pipeline, run: ModelRun) -> Path | None:
    """The float baseline's test logits (.npy): the reference every artifact is compared to
    (a torch checkpoint's own run, or an imported .onnx file's fp32 run on ONNX Runtime)."""
    from ..measure.bench import reference_logits

    if run.baseline.format not in ("torch", "onnx"):
        return None

    def build(tmp: Path) -> dict[str, Any]:
        reference_logits(run.baseline, tmp / "reference.npy")
        return {"path": "reference.npy"}

    folder, manifest = pipe.cache.run(
        "reference", pipe.cache.key("reference", run.baseline.id, {}), build, run.label
    )
    return folder / manifest["path"]


def _in_worker(
    pipe: Pipeline,
    payloads: list[dict[str, Any]],
    workdir: Path,
    progress: WorkerProgress,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run payloads in one fresh process; if it dies, retry each alone to isolate the culprit.
    ``progress`` counts each job as the worker reports it done (or as its result comes back)."""
    from ..measure.bench import run_worker

    if not payloads:
        return []
    trust = pipe.trust
    payloads = [{**p, **trust} for p in payloads]
    job = {"mode": "many", "jobs": payloads, **trust}
    many = run_worker(job, WORKER_TIMEOUT_S, workdir, progress.event, env)
    if many.get("status") == "ok":
        results = many["results"]
    else:
        pipe.log(
            f"  [retry]  worker died ({many.get('reason', '')}); running its {len(payloads)} jobs one by one"
        )
        results = [
            run_worker(
                p,
                WORKER_TIMEOUT_S,
                workdir,
                lambda ev, i=i: progress.event({**ev, "index": i}),
                env,
            )
            for i, p in enumerate(payloads)
        ]
    for i, res in enumerate(results):
        progress.finish(i, str(res.get("status", "failed")))
    return results


def worker_batch(
    pipe: Pipeline,
    tag: str,
    title: str,
    names: list[str],
    verb: str,
    payloads: list[dict[str, Any]],
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """``payloads`` run in one worker process (its job files in a ``worker`` stage folder named
    ``tag``, removed after), with one progress line per artifact (``names``, ``verb``)."""
    workdir = pipe.cache.begin("worker", tag)
    try:
        with _progress(pipe, title, names, verb) as progress:
            return _in_worker(pipe, payloads, workdir, progress, env)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _progress(pipe: Pipeline, title: str, names: list[str], verb: str) -> WorkerProgress:
    from ..progress import WorkerProgress, reporter

    return WorkerProgress(reporter(pipe.progress), title, names, verb)


def build_all(
    pipe: Pipeline, target: str, jobs: list[Job], env: dict[str, str] | None = None, part: str = ""
) -> None:
    """Fill ``job.built`` (cached, or built now in one worker) or ``job.failure``; the jobs may
    come from several models (each job carries its model's target options)."""
    todo: list[tuple[Job, Path]] = []
    for job in jobs:
        ident = build_identity(target, job.options)  # TensorRT: its version and the GPU
        job.build_key = pipe.cache.key(
            "build",
            job.source.id,
            {
                "target": target,
                "precision": job.precision,
                "options": job.options,
                "calibration": pipe.calibration,
                **({"built_for": ident} if ident else {}),
            },
        )
        done = pipe.cache.lookup("build", job.build_key)
        if done is not None:
            pipe.cache.hits += 1
            pipe.log(f"  [cached] build {job.label} {target} {job.precision}")
            job.built, job.build_s = (
                artifact_from_manifest(done[1]["artifact"], done[0]),
                done[1]["build_s"],
            )
        else:
            todo.append((job, pipe.cache.begin("build", job.build_key)))
    if not todo:
        return
    start = time.perf_counter()
    what = f"build on {target}{part}"
    pipe.log(f"  [run]    {what}: {', '.join(f'{j.label} {j.precision}' for j, _ in todo)} ...")
    payloads = [
        {
            "mode": "build",
            "artifact": j.source.to_dict(),
            "target": target,
            "target_options": j.options,
            "precision": j.precision,
            "out_dir": str(tmp),
            "calibration": pipe.calibration,
        }
        for j, tmp in todo
    ]
    names = [f"{j.label} {target} {j.precision}" for j, _ in todo]
    tag = f"build-{target}{part.replace(' ', '')}"
    results = worker_batch(pipe, tag, what, names, "built", payloads, env)
    for (job, tmp), res in zip(todo, results):
        if res.get("status") != "ok":
            shutil.rmtree(tmp, ignore_errors=True)
            job.failure = res
            pipe.log(
                f"  [{res.get('status')}] {job.label} {target} {job.precision}: {res.get('reason')}"
            )
            continue
        built = Artifact.from_dict(res["artifact"])
        folder, man = pipe.cache.commit(
            "build",
            job.build_key,
            tmp,
            {"artifact": artifact_to_manifest(built, tmp), "build_s": res["build_s"]},
        )
        pipe.cache.misses += 1
        job.built, job.build_s = artifact_from_manifest(man["artifact"], folder), man["build_s"]
    pipe.log(f"  [done]   {what} ({time.perf_counter() - start:.1f} s)")


def bench_key(pipe: Pipeline, job: Job, target: str, options: dict, ref, settings) -> str:
    """The benchmark stage's cache key: the artifact, how it is measured, and on which machine
    (a copied cache never passes another machine's latencies off as this one's)."""
    from ..measure.machine import machine_fingerprint

    config = {
        "target": target,
        "options": options,
        "label": job.label,
        "settings": settings.to_dict(),
        "reference": _ref_id(ref),
        "machine": machine_fingerprint().id,
    }
    return pipe.cache.key("bench", job.built.id, config)


@dataclass
class Group:
    """Jobs of one model on one target: what their measurement needs to know."""

    run: ModelRun
    options: dict
    ref: Path | None
    jobs: list[Job]


def bench_all(
    pipe: Pipeline,
    run: ModelRun,
    target: str,
    options: dict,
    jobs: list[Job],
    ref: Path | None,
    settings: Any = None,
    from_cache: list[Record] | None = None,
) -> list[Record]:
    """A record per job of one model: see :func:`bench_groups`."""
    return bench_groups(pipe, target, [Group(run, options, ref, jobs)], settings, from_cache)[0]


def bench_groups(
    pipe: Pipeline,
    target: str,
    groups: list[Group],
    settings: Any = None,
    from_cache: list[Record] | None = None,
) -> list[list[Record]]:
    """A record per job of every group: cached, measured now (one worker for all the groups of
    this target: its runtime's imports are paid once), or failed with its reason.

    A cached record keeps when and where it was measured; ``from_cache`` collects those records.
    With ``pipe.fresh_measurements`` the cache is not read: every artifact is measured now."""
    from ..measure.results import Record

    settings = settings or bench_settings(pipe)
    records: dict[tuple[int, int], Record] = {}
    todo, cached = [], []
    for g, group in enumerate(groups):
        for i, job in enumerate(group.jobs):
            if job.built is None:
                info = job.failure or {}
                records[g, i] = failed_record(group.run, job.label, target, job.precision, info)
                continue
            key = bench_key(pipe, job, target, group.options, group.ref, settings)
            done = None if pipe.fresh_measurements else pipe.cache.lookup("bench", key)
            if done is None:
                todo.append(((g, i), group, job, key))
                continue
            pipe.cache.hits += 1
            records[g, i] = Record.model_validate(done[1]["record"])
            cached.append(records[g, i])
    if cached:
        pipe.log(
            f"  [cached] measure on {target}: {len(cached)} record(s), {measured_when(cached)}"
        )
        if from_cache is not None:
            from_cache += cached
    if todo:
        records.update(_measure(pipe, target, todo, settings))
    return [[records[g, i] for i in range(len(grp.jobs))] for g, grp in enumerate(groups)]


def _measure(pipe: Pipeline, target: str, todo: list, settings) -> dict[tuple, Record]:
    """Measure the ``todo`` jobs (index, group, job, cache key) in one worker; cache each record."""
    from ..measure.bench import BenchJob, _record

    start = time.perf_counter()
    pipe.log(f"  [run]    measure on {target}: {len(todo)} artifact(s) ...")
    payloads = [
        {
            "mode": "bench",
            "artifact": job.built.to_dict(),
            "target": target,
            "target_options": group.options,
            "reference_logits": str(group.ref) if group.ref else None,
            "slowdown": 0.0,
            "settings": settings.to_dict(),
        }
        for _, group, job, _ in todo
    ]
    names = [f"{job.label} {target} {job.precision}" for _, _, job, _ in todo]
    results = worker_batch(
        pipe, f"bench-{target}", f"measure on {target}", names, "measured", payloads
    )
    records = {}
    for (index, group, job, key), res in zip(todo, results):
        bjob = BenchJob(
            job.built,
            target,
            job.precision,
            group.options,
            model=job.label,
            family=group.run.family,
        )
        records[index] = rec = _record(bjob, job.built, res, job.build_s)
        tmp = pipe.cache.begin("bench", key)
        pipe.cache.commit("bench", key, tmp, {"record": rec.model_dump(mode="json")}, replace=True)
        pipe.cache.misses += 1
    pipe.log(f"  [done]   measure on {target} ({time.perf_counter() - start:.1f} s)")
    return records


def measured_when(records: list[Record]) -> str:
    """When (UTC) and where cached records were measured, e.g. 'measured 2025-01-02 10:04 UTC
    on this machine (3f2a9c0d11e2)'."""
    from ..measure.machine import machine_fingerprint

    stamps = sorted(r.measured_at for r in records if r.measured_at)
    if not stamps:
        return "measured at an unknown time (`modelpress run --remeasure` measures them now)"
    first, last = (s[:16].replace("T", " ") for s in (stamps[0], stamps[-1]))
    span = first if first == last else f"between {first} and {last}"
    here = machine_fingerprint().id
    machines = {r.machine_id for r in records}
    where = (
        f"on this machine ({here})" if machines == {here} else f"on {sorted(map(str, machines))}"
    )
    return f"measured {span} UTC {where}"


def _ref_id(ref: Path | None) -> str | None:
    return ref.parent.name if ref else None


def failed_record(
    run: ModelRun, label: str, target: str, precision: str, info: dict[str, Any]
) -> Record:
    from ..measure.results import Record

    return Record(
        model=label,
        family=run.family,
        target=target,
        precision=precision,
        status=info.get("status", "failed"),
        reason=info.get("reason", "unknown"),
    )


def _policy(pipe: Pipeline):
    from ..measure.gate import Policy, load_policy

    gates = pipe.recipe.gates
    if gates is None:
        return None
    if isinstance(gates, dict):
        return Policy.model_validate(gates)
    path = Path(gates)
    if not path.is_absolute() and not path.is_file():
        path = pipe.recipe_path.parent / gates
    return load_policy(path)


def finish(
    pipe: Pipeline, models: list[ModelRun], results: Results, search: Any = None
) -> RunOutcome:
    """The run's records are final here: mark them (``slower than fp32``, measure/marks.py),
    then write results.json, the report and passes.json, print the table, gate."""
    from ..measure.gate import run_gates
    from ..measure.gate_format import gate_junit_xml, print_gate
    from ..measure.marks import mark_slower_than_fp32
    from ..measure.report import write_report
    from ..measure.results import save_results

    out = pipe.out
    results = mark_slower_than_fp32(results)  # the records are final here: mark them once
    results_path = save_results(results, out / "results.json")
    md, html = write_report(results, out, stem="report")
    passes = {
        run.label: {
            "chain": run.chain,
            "records": run.pass_records,
            "notes": run.notes,
            "train": run.baseline.meta.get("train", {}),  # the float baseline's: device, epochs
        }
        for run in models
    }
    atomic_write_text(out / "passes.json", json.dumps(passes, indent=2, default=str))
    from .table import print_summary

    print_summary(pipe.recipe.name, models, results)
    if search is not None:
        atomic_write_text(out / "search.json", json.dumps(search.to_dict(), indent=2, default=str))
        search.print(pipe.log)
    outcome = RunOutcome(
        results_path=results_path, report_md=md, report_html=html, exit_code=0, models=models
    )
    policy = _policy(pipe)
    if policy is not None:
        report = run_gates(results, policy, where=pipe.recipe_path.parent)
        outcome.junit = atomic_write_text(out / "gates.junit.xml", gate_junit_xml(report))
        for check in report.checks:  # the run's own table already shows every value
            if check.status in ("fail", "error"):
                pipe.log(f"  [gate {check.status}] {check.record} {check.name}: {check.message}")
        print_gate(report, quiet=True)
        outcome.exit_code = report.exit_code
        outcome.gate_summary = f"{report.count('pass')} passed, {report.count('fail')} failed"
    elif not any(r.status == "ok" for r in results.records):
        outcome.exit_code = 1
    return outcome
