"""Prepare a recipe's models in parallel processes before the run walks them in order.

The models of a recipe are independent until their artifacts are measured, and the toolkit's
models are small: one training process uses one core far better than two threads do (on a busy
2-core machine, two intra-op threads made a 5-epoch training 30x slower than one, measured). So
``modelpress run`` first fills the stage cache with a pool of worker processes (each imports
torch once and takes jobs until none is left), one torch thread each:

- every distinct training (float baselines and teachers) starts at once, teachers first (they
  are wider, so longer);
- a model's pass chain (distill, prune, ...) starts as soon as the trainings it needs are done,
  and finds them in the cache.

The run then walks the models in order as before and finds every stage cached. A worker that
fails is not fatal here: the in-order walk redoes that stage in the main process, where its error
is reported as usual. Results do not depend on the number of workers, only on the thread count
of each training process (see :func:`train_threads`).

``MODELPRESS_JOBS`` sets the number of worker processes (default: 2 on a machine with at least
2 usable cores, else 1; 1 turns the pool off). ``MODELPRESS_TRAIN_THREADS`` sets the torch
threads of each training process (default: usable cores / jobs, at least 1).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def jobs() -> int:
    """How many preparation processes run at once."""
    raw = os.environ.get("MODELPRESS_JOBS", "")
    if raw.strip().isdigit() and int(raw) >= 1:
        return int(raw)
    return 2 if usable_cores() >= 2 else 1


def train_threads() -> int:
    """torch intra-op threads of one training process."""
    raw = os.environ.get("MODELPRESS_TRAIN_THREADS", "")
    if raw.strip().isdigit() and int(raw) >= 1:
        return int(raw)
    return max(1, usable_cores() // jobs())


def set_train_threads() -> int:
    import torch

    n = train_threads()
    torch.set_num_threads(n)
    return n


def _train_key(args: list[Any]) -> str:
    return json.dumps(args[1:], sort_keys=True, default=str)  # the label does not count


def _trainings_of(label: str, m: Any) -> list[list[Any]]:
    """The trainings a registry model's chain needs: its teacher (if trained here), itself."""
    out = []
    if m.teacher is not None and m.teacher.model:
        t = m.teacher
        out.append([f"{label}-teacher", t.model, t.width, t.options, t.train, None])
    out.append([label, m.model, m.width, m.options, m.train, m.view])
    return out


def training_jobs(recipe: Any) -> list[dict[str, Any]]:
    """Distinct trainings of the recipe's registry models and their teachers, teachers first
    (they are wider, so longer: the pool starts the long jobs first)."""
    found: dict[str, dict[str, Any]] = {}
    registry = [(label, m) for label, m in recipe.models.items() if m.source == "registry"]
    for first in (True, False):
        for label, m in registry:
            for args in _trainings_of(label, m):
                if args[0].endswith("-teacher") == first:
                    found.setdefault(_train_key(args), {"kind": "train", "args": args})
    return list(found.values())


def chain_jobs(recipe: Any) -> list[dict[str, Any]]:
    """One job per registry model with passes; ``needs``: the trainings it waits for."""
    return [
        {
            "kind": "model",
            "label": label,
            "needs": [_train_key(a) for a in _trainings_of(label, m)],
        }
        for label, m in recipe.models.items()
        if m.source == "registry" and recipe.passes_for(label)
    ]


def prepare(pipe: Any) -> None:
    """Fill the stage cache for every model of ``pipe``'s recipe with a pool of processes.

    Trainings start at once (longest first); a model's pass chain starts as soon as the
    trainings it needs are done, so the pool never waits for a whole phase."""
    n = jobs()
    if n < 2:
        return
    trains = [j for j in training_jobs(pipe.recipe) if not _cached(pipe, j)]
    chains = [j for j in chain_jobs(pipe.recipe) if not _cached(pipe, j)]
    if len(trains) + len(chains) < 2:
        return  # nothing to overlap: the in-order walk does it with the same result
    start = time.perf_counter()
    pipe.log(f"[parallel] {len(trains)} training(s), {len(chains)} pass chain(s) in {n} processes")
    failed = _run_pool(pipe, n, trains, chains)
    if failed:
        pipe.log(f"[parallel] {failed} job(s) failed; the run redoes them in order")
    pipe.log(f"[parallel] prepared in {time.perf_counter() - start:.1f} s")


def _run_pool(pipe: Any, n: int, trains: list[dict], chains: list[dict]) -> int:
    """Run the jobs in ``n`` worker processes (each imports torch once); the number that failed."""
    import multiprocessing

    waiting = {_train_key(j["args"]) for j in trains}
    mode = os.environ.get("MODELPRESS_PROGRESS", "plain").replace("live", "plain")
    failed = 0
    with ProcessPoolExecutor(
        max_workers=n,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(train_threads(), mode),
    ) as pool:

        def submit(job: dict[str, Any]) -> Future:
            payload = {
                "recipe": str(pipe.recipe_path),
                "out": str(pipe.out),
                "job": job,
                "progress": pipe.progress,
                "device": pipe.device,
            }
            return pool.submit(_child, payload)

        running = {submit(j): j for j in trains}
        while running or chains:
            ready = [c for c in chains if not waiting.intersection(c["needs"])]
            for c in ready:
                chains.remove(c)
                running[submit(c)] = c
            if not running:  # a chain waits for a training that is not running: cannot happen
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                job = running.pop(fut)
                failed += fut.exception() is not None or fut.result() != 0
                if job["kind"] == "train":
                    waiting.discard(_train_key(job["args"]))
    return failed + len(chains)


def _init_worker(threads: int, progress_mode: str) -> None:
    """A pool process: its torch threads, and plain progress lines (two processes cannot share
    one live bar)."""
    os.environ["MODELPRESS_TRAIN_THREADS"] = str(threads)
    os.environ["MODELPRESS_PROGRESS"] = progress_mode


def _run_job(pipe: Any, job: dict[str, Any]) -> None:
    if job["kind"] == "train":
        pipe.train(*job["args"])
    else:
        pipe.model(job["label"])


def _cached(pipe: Any, job: dict[str, Any]) -> bool:
    """Whether every stage of ``job`` is in the cache already (then no process is started)."""
    from .stages import StageMissing

    log, pipe.log = pipe.log, lambda _: None
    try:
        with pipe.cache.only_lookups():
            _run_job(pipe, job)
    except StageMissing:
        return False
    except Exception:  # let the job (and then the in-order walk) report it
        return False
    finally:
        pipe.log = log
    return True


def _child(payload: dict[str, Any]) -> int:
    """One job in a pool process; a failure is reported here and redone by the in-order walk."""
    try:
        return _child_job(payload)
    except Exception as exc:
        print(f"  [parallel] {payload['job']}: {type(exc).__name__}: {exc}", flush=True)
        return 1


def _child_job(payload: dict[str, Any]) -> int:
    from .pipeline import Pipeline
    from .recipe_checks import load_recipe

    set_train_threads()
    recipe, _ = load_recipe(payload["recipe"])
    out, progress = Path(payload["out"]), bool(payload.get("progress"))
    pipe = Pipeline(
        recipe,
        Path(payload["recipe"]),
        out,
        log=lambda s: print(s, flush=True),
        progress=progress,
        device=payload.get("device"),
    )
    _run_job(pipe, payload["job"])
    return 0
