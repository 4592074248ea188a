"""The int8 accuracy budget of a run (the recipe's ``quantize:``): every int8 build is validated
on its own runtime; when it loses more than ``max_drop`` points against the float model it was
built from, the diverging layers are kept in float and it is rebuilt, until a build is within
budget or ``max_tries`` rebuilds are spent. No mix within budget: the record is marked
``over budget`` with the numbers, never shipped silently.

- which builds: ONNX Runtime ``int8`` (static QDQ) and ``dynamic_int8`` and LiteRT ``int8`` go
  through the loop; ONNX Runtime ``qdq`` (a QAT file passed through) and LiteRT ``dynamic_int8``
  are validated and marked only (their layers cannot be kept float here); TensorRT is not
  checked.
- the drop: accuracy on the test split, in points, against the float model's test logits (the
  same number the table, the report and the gates show for a float baseline's artifacts; for a
  compressed chain it is the quantization's own drop, against the chain's float checkpoint).
  The layers are chosen by localisation on calibration inputs (train split), not on test labels.
- strategies: ``one_at_a_time`` keeps the worst layer of the latest localisation in float (it is
  localised again after every rebuild); ``bisect`` searches the smallest number of the first
  localisation's worst layers that meets the budget (fewer tries on deep models).
- each check and each rebuild is a cached stage (the rebuild's key holds its ``exclude`` list);
  checks run in a worker process per target, like builds (no runtime import here).

What happened is in every record's ``runtime["int8_budget"]`` (tries, layers kept float, drops
before and after, the localisation table) and in passes.json's notes; the report shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifact import Artifact
from .steps import Job, build_all

if TYPE_CHECKING:
    from ..measure.results import Record
    from .pipeline import Pipeline
    from .plan import Plan
    from .recipe import QuantizeSection, Recipe
    from .state import ModelRun

# layers can be kept float
REBUILT = {("onnxruntime", "int8"), ("onnxruntime", "dynamic_int8"), ("litert", "int8")}
CHECKED = REBUILT | {("onnxruntime", "qdq"), ("litert", "dynamic_int8")}
OVER_BUDGET = "over budget"


@dataclass
class Try:
    kept_float: list[str]  # torch module paths kept in float (the target option ``exclude``)
    artifact: Artifact | None = None
    build_s: float | None = None
    result: dict[str, Any] | None = None  # the worker's check (int8_check.py), or a failure
    count: int = 0  # bisect: how many of the first localisation's layers it keeps float

    @property
    def drop(self) -> float | None:
        if not self.result or self.result.get("status") != "ok":
            return None
        return self.result["validation"].get("accuracy_drop")


@dataclass
class Track:
    """One int8 artifact through the budget loop."""

    run: ModelRun
    target: str
    job: Job
    budget: QuantizeSection
    ref: Path
    tries: list[Try] = field(default_factory=list)
    lo: int = 0  # bisect: most of the first localisation's layers known to miss the budget
    hi: int | None = None  # bisect: fewest known to meet it (None: not yet found)
    stopped: str = ""  # why the loop ended without meeting the budget

    @property
    def rebuilds(self) -> bool:
        return (self.target, self.job.precision) in REBUILT and self.budget.max_tries > 0

    def within(self, t: Try) -> bool:
        return t.drop is not None and t.drop <= self.budget.max_drop

    def chosen(self) -> Try:
        """The first try within budget, else the one that lost least (fewest layers on a tie)."""
        ok = [t for t in self.tries if self.within(t)]
        if ok:
            return min(ok, key=lambda t: len(t.kept_float))
        measured = [t for t in self.tries if t.drop is not None]
        return (
            min(measured, key=lambda t: (t.drop, len(t.kept_float))) if measured else self.tries[0]
        )


def apply_budget(pipe: Pipeline, plans: list[Plan], env: dict[str, str] | None) -> list[Track]:
    """Check every built int8 artifact of ``plans``, rebuild those over budget, and point each
    job at the artifact that ships (``job.built``); the tracks say what happened."""
    tracks = []
    for p in plans:
        budget = pipe.recipe.quantize_for(p.run.label)
        for job in p.jobs:
            if not budget.enabled or job.built is None or (p.target, job.precision) not in CHECKED:
                continue
            ref = float_logits(pipe, job.source)
            if ref is None:
                continue
            t = Track(p.run, p.target, job, budget, ref)
            t.tries.append(Try(list(job.options.get("exclude", ())), job.built, job.build_s))
            tracks.append(t)
    pending = tracks
    while pending:
        _check(pipe, pending)
        pending = [t for t in pending if _plan_next(t)]
        _rebuild(pipe, pending, env)
    for t in tracks:
        best = t.chosen()
        t.job.built, t.job.build_s = best.artifact, best.build_s
        _log(pipe, t)
    return tracks


def float_logits(pipe: Pipeline, source: Artifact) -> Path | None:
    """The float model's test logits (.npy), a cached stage shared with steps.reference."""
    from ..measure.bench import reference_logits

    if source.format not in ("torch", "onnx"):
        return None

    def build(tmp: Path) -> dict[str, Any]:
        reference_logits(source, tmp / "reference.npy")
        return {"path": "reference.npy"}

    key = pipe.cache.key("reference", source.id, {})
    folder, manifest = pipe.cache.run("reference", key, build, source.path.stem)
    return folder / manifest["path"]


def _check(pipe: Pipeline, tracks: list[Track]) -> None:
    """Fill the last try's ``result`` of every track: cached, or checked now (a worker per
    target)."""
    from .steps import worker_batch

    by_target: dict[str, list[tuple[Track, str]]] = {}
    for t in tracks:
        last = t.tries[-1]
        if last.artifact is None:
            continue
        config = {
            "reference": t.ref.parent.name,
            "max_drop": t.budget.max_drop,
            "localise": t.rebuilds,
        }
        key = pipe.cache.key("int8check", last.artifact.id, config)
        done = pipe.cache.lookup("int8check", key)
        if done is not None:
            pipe.cache.hits += 1
            last.result = done[1]["result"]
        else:
            by_target.setdefault(t.target, []).append((t, key))
    for target, todo in by_target.items():
        payloads = [_payload(t, target) for t, _ in todo]
        names = [f"{t.job.label} {target} {t.job.precision}" for t, _ in todo]
        what = f"int8 check on {target}"
        results = worker_batch(pipe, f"int8check-{target}", what, names, "checked", payloads)
        for (t, key), res in zip(todo, results):
            t.tries[-1].result = res
            if res.get("status") == "ok":
                pipe.cache.commit(
                    "int8check", key, pipe.cache.begin("int8check", key), {"result": res}
                )
                pipe.cache.misses += 1


def _payload(t: Track, target: str) -> dict[str, Any]:
    last = t.tries[-1]
    return {
        "mode": "int8_check",
        "artifact": last.artifact.to_dict(),
        "source": t.job.source.to_dict(),
        "target": target,
        "target_options": {**t.job.options, "exclude": last.kept_float},
        "reference_logits": str(t.ref),
        "max_drop": t.budget.max_drop,
        "localise": t.rebuilds,
    }


def _plan_next(t: Track) -> bool:
    """Append the next try to ``t`` (its layers kept float); False when the loop ends."""
    last = t.tries[-1]
    if last.result is None or last.drop is None:
        t.stopped = "the check failed: " + str((last.result or {}).get("reason", "no artifact"))
        return False
    if t.budget.strategy == "bisect":
        return _bisect_next(t)
    if t.within(last):
        return False
    if not t.rebuilds:
        t.stopped = _why_not(t)
        return False
    if len(t.tries) > t.budget.max_tries:
        t.stopped = f"{t.budget.max_tries} rebuild(s) spent"
        return False
    new = next(
        (
            c
            for c in last.result.get("candidates", [])
            if set(c["keep_float"]) - set(last.kept_float)
        ),
        None,
    )
    if new is None:
        t.stopped = "the localisation blames no further layer"
        return False
    kept = list(dict.fromkeys([*last.kept_float, *new["keep_float"]]))
    t.tries.append(Try(kept))
    return True


def _bisect_next(t: Track) -> bool:
    """Smallest k such that the first localisation's k worst layers in float meet the budget."""
    base, last = t.tries[0], t.tries[-1]
    if len(t.tries) == 1:
        if t.within(base):
            return False
        if not t.rebuilds:
            t.stopped = _why_not(t)
            return False
    else:
        if t.within(last):
            t.hi = last.count
        else:
            t.lo = last.count
    candidates = base.result.get("candidates", [])
    top = len(candidates) + 1 if t.hi is None else t.hi
    if top - t.lo <= 1:
        if t.hi is None:
            t.stopped = f"keeping all {len(candidates)} blamed layer(s) float misses the budget"
        return False
    if len(t.tries) > t.budget.max_tries:
        t.stopped = f"{t.budget.max_tries} rebuild(s) spent"
        return False
    k = (t.lo + top) // 2
    kept = list(base.kept_float)
    for c in candidates[:k]:
        kept += c["keep_float"]
    t.tries.append(Try(list(dict.fromkeys(kept)), count=k))
    return True


def _why_not(t: Track) -> str:
    if (t.target, t.job.precision) not in REBUILT:
        return f"{t.target} {t.job.precision} cannot keep layers in float"
    return "max_tries is 0: validated and marked only"


def _rebuild(pipe: Pipeline, tracks: list[Track], env: dict[str, str] | None) -> None:
    """Build every track's new try (cached stages: ``exclude`` is in the build key)."""
    from concurrent.futures import ThreadPoolExecutor

    jobs: dict[str, list[tuple[Track, Job]]] = {}
    for t in tracks:
        opts = {**t.job.options, "exclude": t.tries[-1].kept_float}
        job = Job(label=t.job.label, precision=t.job.precision, source=t.job.source, options=opts)
        jobs.setdefault(t.target, []).append((t, job))

    def build(target: str) -> None:
        build_all(pipe, target, [j for _, j in jobs[target]], env, " (int8 budget)")

    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        list(pool.map(build, jobs))
    for pairs in jobs.values():
        for t, job in pairs:
            last = t.tries[-1]
            last.artifact, last.build_s = job.built, job.build_s
            if job.built is None:
                last.result = {"status": "failed", "reason": (job.failure or {}).get("reason", "")}


def _log(pipe: Pipeline, t: Track) -> None:
    """A note in passes.json and a log line for every artifact that was not within budget at
    once (one within budget at once costs no line)."""
    if len(t.tries) == 1 and t.within(t.tries[0]):
        return
    what = f"{t.job.label} {t.target} {t.job.precision}"
    line = summary(t)
    t.run.notes.append(f"{what}: {line}")
    pipe.log(f"  [int8]   {what}: {line}")


def summary(t: Track) -> str:
    """One line: the drops before and after, the layers kept float, or why it is over budget."""
    first, best = t.tries[0], t.chosen()
    budget = t.budget.max_drop
    before = _pts(first.drop)
    if t.within(best):
        kept = ", ".join(best.kept_float) or "none"
        return (
            f"drop {before} -> {_pts(best.drop)} points (budget {budget}) with {kept} in float, "
            f"{len(t.tries) - 1} rebuild(s)"
        )
    return (
        f"{OVER_BUDGET}: drop {before} points (budget {budget}); best {_pts(best.drop)} with "
        f"{', '.join(best.kept_float) or 'no layer'} in float; {t.stopped}"
    )


def _pts(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"


def details(t: Track) -> dict[str, Any]:
    """What a record says about its budget loop (``Record.runtime["int8_budget"]``)."""
    best = t.chosen()
    localised = next(
        (
            x.result.get("localisation")
            for x in t.tries
            if x.result and x.result.get("localisation")
        ),
        None,
    )
    return {
        "max_drop": t.budget.max_drop,
        "split": "test",
        "within_budget": t.within(best),
        "drop_before": t.tries[0].drop,
        "drop_after": best.drop,
        "kept_float": best.kept_float,
        "strategy": t.budget.strategy,
        "summary": summary(t),
        "tries": [
            {
                "kept_float": x.kept_float,
                "drop": x.drop,
                "status": (x.result or {}).get("status", "failed"),
                **({"reason": x.result["reason"]} if x.result and x.result.get("reason") else {}),
            }
            for x in t.tries
        ],
        **({"localisation": localised} if localised else {}),
    }


def annotate(records: list[Record], plan: Plan, tracks: list[Track]) -> None:
    """Put each track's outcome on its record (same order as ``plan.jobs``); mark those over
    budget."""
    mine = {id(t.job): t for t in tracks}
    ok = [r for r in records if r.status == "ok"]
    for job in plan.jobs:
        t = mine.get(id(job))
        rec = next((r for r in ok if r.model == job.label and r.precision == job.precision), None)
        if t is None or rec is None:
            continue
        rec.runtime = {**rec.runtime, "int8_budget": details(t)}
        best = t.chosen()  # a check that failed is in the details, not a verdict
        if best.drop is not None and not t.within(best) and OVER_BUDGET not in rec.marks:
            rec.marks = [*rec.marks, OVER_BUDGET]


def fails_run(recipe: Recipe, records: list[Record]) -> bool:
    """Whether a record over budget fails the run (its model's ``quantize: {over_budget: fail}``;
    a record's label is its recipe model's, or that label + its passes)."""
    return any(
        OVER_BUDGET in r.marks and recipe.quantize_for(r.model.split("+")[0]).over_budget == "fail"
        for r in records
        if r.model.split("+")[0] in recipe.models
    )
