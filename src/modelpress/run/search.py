"""Accuracy-aware search over compression configurations (the recipe's ``search:`` section).

For each searched model: pruning ratios x precisions x "keep the k most quantization-sensitive
layers in float" are tried on one target. Preparing a trial (prune + recover, build, validate on
the runtime) runs in parallel worker processes, or as Ray tasks on a cluster (``--ray ADDRESS``;
Ray is the optional ``ray`` extra). Latency is then measured one artifact at a time in fresh
processes, never two at once, so trials compete on equal terms. The result is the Pareto front
of (accuracy drop, objective) and the best configuration within the accuracy-drop budget, in
the spirit of Intel Neural Compressor's tolerable loss, NNCF's max_drop and Olive's Pareto
frontier, but across pruning, quantization and target together.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifact import Artifact
from ..measure.marks import FLOAT, SLOWER_THAN_FP32, slower_batches
from ..measure.stats import pareto_front
from .search_trials import prepare_locally, prepare_on_ray

if TYPE_CHECKING:
    from ..measure.results import Record
    from .pipeline import Pipeline
    from .state import ModelRun


@dataclass
class Trial:
    model: str
    prune_ratio: float
    precision: str
    keep_float: int
    status: str = "ok"
    reason: str = ""
    accuracy: float | None = None
    accuracy_drop: float | None = None  # points below the float baseline, on the runtime
    latency_ms: float | None = None  # p50 at the search batch
    size_bytes: int | None = None
    kept_float: list[str] = field(default_factory=list)
    artifact: str = ""
    marks: list[str] = field(default_factory=list)  # e.g. "slower than fp32" (never chosen)

    def objective(self, kind: str) -> float | None:
        return self.latency_ms if kind == "latency" else self.size_bytes


@dataclass
class SearchResult:
    objective: str
    max_drop: float
    target: str
    trials: list[Trial]
    front: dict[str, list[int]]  # model -> indices into trials (Pareto-optimal)
    chosen: dict[str, int | None]  # model -> index of the best trial within budget

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "max_drop": self.max_drop,
            "target": self.target,
            "trials": [asdict(t) for t in self.trials],
            "front": self.front,
            "chosen": self.chosen,
        }

    def print(self, log: Callable[[str], None] = print) -> None:
        unit = "ms" if self.objective == "latency" else "bytes"
        for model, idx in self.chosen.items():
            front = ", ".join(_describe(self.trials[i], self.objective) for i in self.front[model])
            log(f"[search] {model}: Pareto front ({unit}): {front}")
            if idx is None:
                log(
                    f"[search] {model}: no configuration within {self.max_drop} points of the float model"
                )
            else:
                log(f"[search] {model}: chosen {_describe(self.trials[idx], self.objective)}")


def _describe(t: Trial, objective: str) -> str:
    value = t.objective(objective)
    shown = f"{value:.3f} ms" if objective == "latency" else f"{value} B"
    marks = f" [{', '.join(t.marks)}]" if t.marks else ""
    return f"prune {t.prune_ratio:g} {t.precision} keep_float {t.keep_float}: drop {t.accuracy_drop:+.2f} pt, {shown}{marks}"


def choose(trials: list[Trial], indices: list[int], max_drop: float, objective: str) -> int | None:
    """The trial of ``indices`` with the lowest objective within ``max_drop`` points (ties: the
    lower drop); never one marked ``slower than fp32`` (:func:`mark_slower_trials`)."""
    ok = [
        i
        for i in indices
        if trials[i].status == "ok"
        and SLOWER_THAN_FP32 not in trials[i].marks
        and trials[i].accuracy_drop is not None
        and trials[i].accuracy_drop <= max_drop
        and trials[i].objective(objective) is not None
    ]
    return (
        min(ok, key=lambda i: (trials[i].objective(objective), trials[i].accuracy_drop))
        if ok
        else None
    )


# -- the search -----------------------------------------------------------------------------------


def _start(run: ModelRun) -> Artifact:
    """Search from the distilled model when the chain distils (KD helps every trial), else the
    float baseline."""
    if "distill" in run.chain and run.pass_records:
        return run.compressed if run.chain[-1] == "distill" else run.baseline
    return run.baseline


def _sensitive_layers(pipe: Pipeline, run: ModelRun, start: Artifact, k: int) -> list[str]:
    if k <= 0:
        return []
    from ..compress.sensitivity import SensitivityConfig, sensitivity

    def build(tmp: Path) -> dict[str, Any]:
        report = sensitivity(start, run.data, SensitivityConfig(top_k=k))
        return {"layers": [r.name for r in report.layers], "report": report.to_dict()}

    _, man = pipe.cache.run(
        "sensitivity", pipe.cache.key("sensitivity", start.id, {"k": k}), build, run.label
    )
    return man["layers"][:k]


def run_search(pipe: Pipeline, models: list[ModelRun], ray: str | None = None) -> SearchResult:
    from ..targets import with_bench_batches
    from .steps import reference

    s = pipe.recipe.search
    options = pipe.recipe.targets[s.target].options if s.target in pipe.recipe.targets else {}
    options = with_bench_batches(s.target, options, (s.batch,))
    chosen_models = [
        m
        for m in models
        if (s.models is None or m.label in s.models) and m.baseline.format == "torch"
    ]
    trials: list[Trial] = []
    front: dict[str, list[int]] = {}
    chosen: dict[str, int | None] = {}
    for run in chosen_models:
        pipe.log(
            f"[search] {run.label}: ratios {s.prune_ratios} x {s.precisions} x keep_float {s.keep_float}"
        )
        start = _start(run)
        sensitive = _sensitive_layers(pipe, run, start, max(s.keep_float))
        combos = [
            (p, k)
            for p, k in itertools.product(s.precisions, s.keep_float)
            if k == 0 or "int8" in p
        ]
        tasks = [
            {
                "cache": str(pipe.cache.root),
                "start": start.to_dict(),
                "ratio": r,
                "combos": combos,
                "sensitive": sensitive,
                "target": s.target,
                "options": options,
                "calibration": pipe.calibration,
                "seed": pipe.recipe.seed,
                "device": pipe.device,
                "recovery_epochs": s.recovery_epochs,
                "data_config": run.data.preprocessing["data_config"],
                "trust": pipe.trust,
            }
            for r in s.prune_ratios
        ]
        if ray:
            prepared = prepare_on_ray(pipe, run, start, tasks, ray)
        else:
            prepared = prepare_locally(tasks, s.workers)
        first = len(trials)
        trials += _measure(pipe, run, s, options, reference(pipe, run), prepared)
        idx = list(range(first, len(trials)))
        ok = [
            i
            for i in idx
            if trials[i].status == "ok" and trials[i].objective(s.objective) is not None
        ]
        pts = [(trials[i].accuracy_drop, trials[i].objective(s.objective)) for i in ok]
        front[run.label] = [ok[j] for j in pareto_front(pts)]
        chosen[run.label] = choose(trials, front[run.label], s.max_drop, s.objective)
    return SearchResult(s.objective, s.max_drop, s.target, trials, front, chosen)


def _measure(pipe: Pipeline, run: ModelRun, s, options: dict, ref, prepared) -> list[Trial]:
    """Validate and time every prepared trial, one at a time, in one fresh worker process."""
    from .steps import Job, bench_all, bench_settings

    trials, jobs = [], []
    for ratio, entries in zip(s.prune_ratios, prepared):
        for e in entries:
            t = Trial(
                model=run.label,
                prune_ratio=ratio,
                precision=e["precision"],
                keep_float=e["keep_float"],
                kept_float=e["kept_float"],
            )
            job = Job(
                label=f"{run.label}~p{ratio:g}~k{e['keep_float']}",
                precision=e["precision"],
                source=run.baseline,
            )
            if e["status"] == "ok":
                job.built = Artifact.from_dict(e["artifact"])
            else:
                job.failure = {"status": "failed", "reason": e["reason"]}
            trials.append(t)
            jobs.append(job)
    settings = replace(bench_settings(pipe), batch_sizes=(s.batch,))
    records = bench_all(pipe, run, s.target, options, jobs, ref, settings)
    for t, job, rec in zip(trials, jobs, records):
        if rec.status != "ok":
            t.status, t.reason = rec.status, rec.reason
            continue
        lat = rec.latency_at(s.batch)
        t.accuracy = rec.validation.accuracy if rec.validation else None
        t.accuracy_drop = rec.validation.accuracy_drop if rec.validation else None
        t.latency_ms = lat.p50_ms if lat else None
        t.size_bytes = rec.size_bytes
        t.artifact = str(job.built.path)
    mark_slower_trials(trials, records)
    return trials


def mark_slower_trials(trials: list[Trial], records: list[Record]) -> None:
    """Mark a trial ``slower than fp32`` when its record (``records[i]`` measures
    ``trials[i]``, all in this search) is clearly slower than its fp32 counterpart's by the rule
    of :func:`modelpress.measure.marks.slower_batches`. The counterpart is the fp32 trial of the
    same pruning ratio, else the unpruned (ratio 0) fp32 trial; a search without fp32 among its
    precisions has none and marks nothing."""

    def fp32_at(ratio: float) -> int | None:
        return next(
            (
                j
                for j, t in enumerate(trials)
                if (t.precision, t.prune_ratio, t.status) == (FLOAT, ratio, "ok")
            ),
            None,
        )

    for t, rec in zip(trials, records):
        if t.precision == FLOAT or t.status != "ok" or SLOWER_THAN_FP32 in t.marks:
            continue
        j = fp32_at(t.prune_ratio)
        j = fp32_at(0.0) if j is None else j
        if j is not None and slower_batches(rec, records[j]):
            t.marks.append(SLOWER_THAN_FP32)
