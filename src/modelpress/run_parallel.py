"""Prepare a recipe's models in parallel processes before the run walks them in order.

The models of a recipe are independent until their artifacts are measured, and the toolkit's
models are small: one training process uses one core far better than two threads do (on a busy
2-core machine, two intra-op threads made a 5-epoch training 30x slower than one, measured). So
``modelpress run`` first fills the stage cache with a pool of worker processes, one thread each:

1. every distinct training (float baselines and teachers), longest first (teachers are wider);
2. every model's pass chain (distill, prune, ...), which finds its trainings in the cache.

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
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

JOB_TIMEOUT_S = 3600.0


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


def training_jobs(recipe: Any) -> list[dict[str, Any]]:
    """Distinct trainings of the recipe's registry models and their teachers, teachers first."""
    found: dict[str, dict[str, Any]] = {}
    for label, m in recipe.models.items():
        if m.source != "registry":
            continue
        if m.teacher is not None and m.teacher.model:
            t = m.teacher
            job = [f"{label}-teacher", t.model, t.width, t.options, t.train, None]
            found.setdefault(json.dumps(job[1:], sort_keys=True, default=str), job)
    for label, m in recipe.models.items():
        if m.source == "registry":
            job = [label, m.model, m.width, m.options, m.train, m.view]
            found.setdefault(json.dumps(job[1:], sort_keys=True, default=str), job)
    return [{"kind": "train", "args": job} for job in found.values()]


def chain_jobs(recipe: Any) -> list[dict[str, Any]]:
    return [
        {"kind": "model", "label": label}
        for label, m in recipe.models.items()
        if m.source == "registry" and recipe.passes_for(label)
    ]


def prepare(pipe: Any) -> None:
    """Fill the stage cache for every model of ``pipe``'s recipe with a pool of processes."""
    n = jobs()
    if n < 2:
        return
    start, ran, log = time.perf_counter(), False, pipe.log
    recipe_path, out_dir = pipe.recipe_path, pipe.out
    for phase, jobs_ in (
        ("train", training_jobs(pipe.recipe)),
        ("passes", chain_jobs(pipe.recipe)),
    ):
        todo = [j for j in jobs_ if not _cached(pipe, j)]
        if len(todo) < 2:
            continue  # nothing to overlap: the in-order walk does it with the same result
        log(f"[parallel] {phase}: {len(todo)} job(s) in {min(n, len(todo))} processes")
        with ThreadPoolExecutor(max_workers=n) as pool:
            codes = list(pool.map(lambda j: _spawn(recipe_path, out_dir, j, pipe.progress), todo))
        failed = sum(1 for c in codes if c != 0)
        if failed:
            log(f"[parallel] {failed} job(s) failed; the run redoes them in order")
        ran = True
    if ran:
        log(f"[parallel] prepared in {time.perf_counter() - start:.1f} s")


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


def _spawn(recipe_path: Path, out_dir: Path, job: dict[str, Any], progress: bool) -> int:
    payload = {"recipe": str(recipe_path), "out": str(out_dir), "job": job, "progress": progress}
    payload = json.dumps(payload)
    # two processes cannot share one live bar: each child prints plain progress lines
    env = {
        **os.environ,
        "MODELPRESS_TRAIN_THREADS": str(train_threads()),
        "MODELPRESS_PROGRESS": os.environ.get("MODELPRESS_PROGRESS", "plain").replace(
            "live", "plain"
        ),
    }
    cmd = [sys.executable, "-u", "-m", "modelpress.run_parallel", payload]
    try:
        return subprocess.run(cmd, env=env, timeout=JOB_TIMEOUT_S, check=False).returncode
    except subprocess.TimeoutExpired:
        return 124


def _child(payload: dict[str, Any]) -> int:
    from .pipeline import Pipeline
    from .recipe import load_recipe

    set_train_threads()
    recipe, _ = load_recipe(payload["recipe"])
    out, progress = Path(payload["out"]), bool(payload.get("progress"))
    pipe = Pipeline(recipe, Path(payload["recipe"]), out, log=print, progress=progress)
    _run_job(pipe, payload["job"])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _child(json.loads(argv[0]))
    except Exception as exc:  # the parent redoes the job in order and reports its error there
        print(f"  [parallel] job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
