"""The measuring half of a run: build every (model, variant, target, precision), validate and
benchmark each, then write results, report, gates and a summary table.

Builds and measurements of one (model, target) run together in one fresh worker process
(imports are paid once; one runtime never shares a process with another). If that worker dies,
each of its jobs is retried alone so that one crashing job cannot hide the others. Every job's
output is its own cached stage.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifact import Artifact
from .fsutil import atomic_write_text
from .stages import artifact_from_manifest, artifact_to_manifest

if TYPE_CHECKING:
    from .pipeline import ModelRun, Pipeline, RunOutcome
    from .results import Record, Results

WORKER_TIMEOUT_S = 1800.0


@dataclass
class Job:
    """One build + measurement of a model variant on a target at one precision."""

    label: str  # results name: "cnn" or "cnn+distill+prune"
    precision: str
    source: Artifact
    build_key: str = ""
    built: Artifact | None = None
    build_s: float | None = None
    failure: dict[str, Any] | None = None


def bench_settings(pipe: Pipeline):
    from .bench import BenchSettings

    return BenchSettings(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in pipe.recipe.benchmark.items()}
    )


def reference(pipe: Pipeline, run: ModelRun) -> Path | None:
    """The float baseline's test logits (.npy): the reference every artifact is compared to."""
    from .bench import reference_logits

    if run.baseline.format != "torch":
        return None

    def build(tmp: Path) -> dict[str, Any]:
        reference_logits(run.baseline, tmp / "reference.npy")
        return {"path": "reference.npy"}

    folder, manifest = pipe.cache.run(
        "reference", pipe.cache.key("reference", run.baseline.id, {}), build, run.label
    )
    return folder / manifest["path"]


def _in_worker(
    pipe: Pipeline, payloads: list[dict[str, Any]], workdir: Path
) -> list[dict[str, Any]]:
    """Run payloads in one fresh process; if it dies, retry each alone to isolate the culprit."""
    from .bench import run_worker

    if not payloads:
        return []
    trust = pipe.trust
    payloads = [{**p, **trust} for p in payloads]
    many = run_worker({"mode": "many", "jobs": payloads, **trust}, WORKER_TIMEOUT_S, workdir)
    if many.get("status") == "ok":
        return many["results"]
    pipe.log(
        f"  [retry]  worker died ({many.get('reason', '')}); running its {len(payloads)} jobs one by one"
    )
    return [run_worker(p, WORKER_TIMEOUT_S, workdir) for p in payloads]


def build_all(pipe: Pipeline, run: ModelRun, target: str, options: dict, jobs: list[Job]) -> None:
    """Fill ``job.built`` (cached, or built now in one worker) or ``job.failure``."""
    todo: list[tuple[Job, Path]] = []
    for job in jobs:
        job.build_key = pipe.cache.key(
            "build",
            job.source.id,
            {
                "target": target,
                "precision": job.precision,
                "options": options,
                "calibration": pipe.calibration,
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
    pipe.log(
        f"  [run]    build {run.label} on {target}: {', '.join(f'{j.label} {j.precision}' for j, _ in todo)} ..."
    )
    payloads = [
        {
            "mode": "build",
            "artifact": j.source.to_dict(),
            "target": target,
            "target_options": options,
            "precision": j.precision,
            "out_dir": str(tmp),
            "calibration": pipe.calibration,
        }
        for j, tmp in todo
    ]
    workdir = pipe.cache.begin("worker", f"build-{run.label}-{target}")
    try:
        results = _in_worker(pipe, payloads, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
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
    pipe.log(f"  [done]   build {run.label} on {target} ({time.perf_counter() - start:.1f} s)")


def bench_all(
    pipe: Pipeline,
    run: ModelRun,
    target: str,
    options: dict,
    jobs: list[Job],
    ref: Path | None,
    settings: Any = None,
) -> list[Record]:
    """A record per job: cached, measured now (one worker for all), or failed with its reason."""
    from .bench import BenchJob, _record
    from .results import Record

    settings = settings or bench_settings(pipe)
    records: dict[int, Record] = {}
    todo = []
    for i, job in enumerate(jobs):
        if job.built is None:
            records[i] = failed_record(run, job.label, target, job.precision, job.failure or {})
            continue
        key = pipe.cache.key(
            "bench",
            job.built.id,
            {
                "target": target,
                "options": options,
                "label": job.label,
                "settings": settings.to_dict(),
                "reference": _ref_id(ref),
            },
        )
        done = pipe.cache.lookup("bench", key)
        if done is not None:
            pipe.cache.hits += 1
            records[i] = Record.model_validate(done[1]["record"])
        else:
            todo.append((i, job, key))
    if todo:
        start = time.perf_counter()
        pipe.log(f"  [run]    measure {run.label} on {target}: {len(todo)} artifact(s) ...")
        payloads = [
            {
                "mode": "bench",
                "artifact": j.built.to_dict(),
                "target": target,
                "target_options": options,
                "reference_logits": str(ref) if ref else None,
                "slowdown": 0.0,
                "settings": settings.to_dict(),
            }
            for _, j, _ in todo
        ]
        workdir = pipe.cache.begin("worker", f"bench-{run.label}-{target}")
        try:
            results = _in_worker(pipe, payloads, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        for (i, job, key), res in zip(todo, results):
            bjob = BenchJob(
                job.built, target, job.precision, options, model=job.label, family=run.family
            )
            rec = _record(bjob, job.built, res, job.build_s)
            records[i] = rec
            tmp = pipe.cache.begin("bench", key)
            pipe.cache.commit("bench", key, tmp, {"record": rec.model_dump(mode="json")})
            pipe.cache.misses += 1
        pipe.log(
            f"  [done]   measure {run.label} on {target} ({time.perf_counter() - start:.1f} s)"
        )
    return [records[i] for i in range(len(jobs))]


def _ref_id(ref: Path | None) -> str | None:
    return ref.parent.name if ref else None


def failed_record(
    run: ModelRun, label: str, target: str, precision: str, info: dict[str, Any]
) -> Record:
    from .results import Record

    return Record(
        model=label,
        family=run.family,
        target=target,
        precision=precision,
        status=info.get("status", "failed"),
        reason=info.get("reason", "unknown"),
    )


def jobs_for(
    pipe: Pipeline, run: ModelRun, target: str, precisions: list[str]
) -> tuple[list[Job], list[Record]]:
    jobs, skipped = [], []
    for precision in precisions:
        for variant, label in pipe.variants(run):
            src = pipe.source_for(run, variant, target, precision)
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


def benchmark_all(pipe: Pipeline, models: list[ModelRun]) -> Results:
    from .bench import collect_environment
    from .results import new_results

    records = []
    for run in models:
        pipe.log(f"[targets] {run.label}")
        ref = reference(pipe, run)
        for target, section in pipe.recipe.targets_for(run.label).items():
            jobs, skipped = jobs_for(pipe, run, target, section.precisions)
            records += skipped
            build_all(pipe, run, target, section.options, jobs)
            records += bench_all(pipe, run, target, section.options, jobs, ref)
    return new_results(collect_environment(), records, bench_settings(pipe).to_dict())


def _policy(pipe: Pipeline):
    from .gate import Policy, load_policy

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
    from .gate import run_gates
    from .pipeline import RunOutcome
    from .report import gate_junit_xml, print_gate, write_report
    from .results import save_results

    out = pipe.out
    results_path = save_results(results, out / "results.json")
    md, html = write_report(results, out, stem="report")
    passes = {
        run.label: {"chain": run.chain, "records": run.pass_records, "notes": run.notes}
        for run in models
    }
    atomic_write_text(out / "passes.json", json.dumps(passes, indent=2, default=str))
    from .run_table import print_summary

    print_summary(pipe.recipe.name, models, results)
    if search is not None:
        atomic_write_text(out / "search.json", json.dumps(search.to_dict(), indent=2, default=str))
        search.print(pipe.log)
    outcome = RunOutcome(
        results_path=results_path, report_md=md, report_html=html, exit_code=0, models=models
    )
    policy = _policy(pipe)
    if policy is not None:
        report = run_gates(results, policy)
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
