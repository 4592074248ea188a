"""Preparing the search's trials: prune at one ratio, then build every precision / keep-float.

One task per pruning ratio. Locally the tasks run in this process or a pool of processes that
share this machine's files: a task names the run's stage cache, the start artifact and the data
config by path. On a Ray cluster (``--ray ADDRESS``) a node may share no filesystem with the
driver, so a task gets its inputs by value (:mod:`modelpress.run.trial_transport`): the start
artifact's files, the data set's arrays, the user's factory sources. It runs in a temporary
folder of its node (removed at the end) and sends the finished stages back by value; they land
in the run's stage cache, where a second run finds them. Both run the same core,
:func:`prepare_trials`.

Each Ray task asks for one CPU; ``MODELPRESS_RAY_OPTIONS`` (a JSON object of ``ray.remote``
options) changes that, e.g. ``{"resources": {"trial": 1}}`` to use only the nodes offering it.
Workers import modelpress (and torch, the targets' runtimes) from their own environment.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifact import Artifact
from ..errors import ConfigError, one_line
from .stages import StageCache, StageMissing, artifact_from_manifest, artifact_to_manifest

if TYPE_CHECKING:
    from ..data import DataBundle
    from .pipeline import Pipeline
    from .state import ModelRun


def prepare_trials(
    task: dict[str, Any],
    start: Artifact,
    data: DataBundle,
    cache: StageCache,
    build_job: dict[str, Any],
) -> list[dict[str, Any]]:
    """Prune ``start`` to ``task["ratio"]`` (stages in ``cache``) and build the target for every
    precision and keep-float count; built artifacts (dict form) or the reasons they failed.

    ``build_job``: extra fields of each build worker's job (the trust record, and where the
    data files are not here, the calibration inputs as ``calibration_file``)."""
    art = _pruned(task, start, data, cache) if task["ratio"] > 0 else start
    return [
        _built(task, art, precision, keep, cache, build_job) for precision, keep in task["combos"]
    ]


def _pruned(task: dict[str, Any], start: Artifact, data: DataBundle, cache: StageCache) -> Artifact:
    """``start`` pruned to the task's ratio with a fine-tune recovery (a cached stage)."""
    from ..compress.base import PassContext
    from ..compress.prune import PruneConfig, prune

    cfg = {
        "ratio": task["ratio"],
        "recovery": "finetune",
        "recovery_epochs": task["recovery_epochs"],
    }

    def do_prune(tmp: Path) -> dict[str, Any]:
        ctx = PassContext(
            data=data,
            out_dir=tmp,
            seed=task["seed"],
            device=task.get("device") or "auto",  # run --device; not in the cache key
        )
        res = prune(start, PruneConfig(**cfg), ctx)
        return {"artifact": artifact_to_manifest(res.artifact, tmp)}

    key = cache.key("prune", start.id, {"options": cfg, "seed": task["seed"]})
    folder, man = cache.run("prune", key, do_prune)
    return artifact_from_manifest(man["artifact"], folder)


def _built(
    task: dict[str, Any],
    art: Artifact,
    precision: str,
    keep: int,
    cache: StageCache,
    build_job: dict[str, Any],
) -> dict[str, Any]:
    """One trial's build in a worker process (a cached stage): its artifact, or why it failed."""
    from ..measure.bench import run_worker
    from ..targets import build_identity

    exclude = task["sensitive"][:keep] if keep else []
    options = {**task["options"], **({"exclude": exclude} if exclude else {})}
    ident = build_identity(task["target"], options)  # TensorRT: its version and the GPU
    config = {
        "target": task["target"],
        "precision": precision,
        "options": options,
        "calibration": task["calibration"],
        **({"built_for": ident} if ident else {}),
    }
    entry: dict[str, Any] = {"precision": precision, "keep_float": keep, "kept_float": exclude}

    def do_build(tmp: Path) -> dict[str, Any]:
        job = {
            "mode": "build",
            "artifact": art.to_dict(),
            "target": task["target"],
            "target_options": options,
            "precision": precision,
            "out_dir": str(tmp),
            "calibration": task["calibration"],
            **build_job,
        }
        res = run_worker(job, 900.0, tmp)
        for leftover in tmp.glob("job-*.json"):
            leftover.unlink()
        if res["status"] != "ok":
            raise RuntimeError(res["reason"])
        return {"artifact": artifact_to_manifest(Artifact.from_dict(res["artifact"]), tmp)}

    try:
        folder, man = cache.run("build", cache.key("build", art.id, config), do_build)
        built = artifact_from_manifest(man["artifact"], folder).to_dict()
        entry.update(status="ok", artifact=built, options=options)
    except StageMissing:  # only looking up (see StageCache.only_lookups): not a failure
        raise
    except Exception as exc:
        entry.update(status="failed", reason=one_line(exc))
    return entry


def prepare_ratio(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Worker side of the local pool: one ratio's trials on this machine, its inputs named by
    path (the run's stage cache, the start artifact, the data config)."""
    from ..data import DataConfig, load_dataset
    from ..measure.worker import trust

    trust(task["trust"])
    cache = StageCache(Path(task["cache"]), log=lambda s: None)
    start = Artifact.from_dict(task["start"])
    data = load_dataset(DataConfig(**task["data_config"]))
    return prepare_trials(task, start, data, cache, task["trust"])


def prepare_ratio_by_value(
    task: dict[str, Any], start: dict[str, Any], data: dict[str, Any], code: dict[str, Any]
) -> dict[str, Any]:
    """Worker side of a Ray task: one ratio's trials on a node that may share no filesystem with
    the driver. Inputs come by value (:mod:`modelpress.run.trial_transport`) and are written into a
    temporary folder of this node, removed at the end; the finished stages go back by value."""
    import numpy as np

    from ..measure.worker import trust
    from .trial_transport import (
        pack_stages,
        relative_artifact,
        unpack_artifact,
        unpack_code,
        unpack_data,
    )

    folder = Path(tempfile.mkdtemp(prefix="modelpress-trial-"))
    local_trust: dict[str, list[str]] = {"pythonpath": []}
    try:
        local_trust = unpack_code(code, folder / "code")
        trust(local_trust)
        bundle = unpack_data(data)
        calibration = folder / "calibration.npy"
        np.save(calibration, bundle.calibration(task["calibration"]), allow_pickle=False)
        cache = StageCache(folder / "cache", log=lambda s: None)
        job = {**local_trust, "calibration_file": str(calibration)}
        entries = prepare_trials(task, unpack_artifact(start, folder / "start"), bundle, cache, job)
        for e in entries:
            if e["status"] == "ok":
                e["artifact"] = relative_artifact(e["artifact"], cache.root)
        return {"entries": entries, "stages": pack_stages(cache.root)}
    finally:
        for path in local_trust["pythonpath"]:  # a Ray worker process runs further tasks
            while path in sys.path:
                sys.path.remove(path)
        shutil.rmtree(folder, ignore_errors=True)


def prepare_locally(tasks: list[dict[str, Any]], workers: int) -> list[list[dict[str, Any]]]:
    """Each task's trials, in this process or a pool of ``workers`` processes."""
    if workers <= 1 or len(tasks) <= 1:
        return [prepare_ratio(t) for t in tasks]
    import multiprocessing

    with ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        return list(pool.map(prepare_ratio, tasks))


# the task fields that name paths of the driver: a Ray task gets their contents by value instead
_DRIVER_PATHS = ("cache", "start", "data_config", "trust")


def ray_task_options() -> dict[str, Any]:
    """Options of each Ray task: one CPU, updated by ``MODELPRESS_RAY_OPTIONS`` (a JSON object
    of ``ray.remote`` options, e.g. ``{"resources": {"trial": 1}}`` to use only the nodes that
    offer that resource)."""
    raw = os.environ.get("MODELPRESS_RAY_OPTIONS", "").strip()
    try:
        extra = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        extra = None
    if not isinstance(extra, dict):
        raise ConfigError(
            f"MODELPRESS_RAY_OPTIONS={raw!r} is not a JSON object of ray.remote options; "
            'expected e.g. {"num_cpus": 2, "resources": {"trial": 1}}'
        )
    return {"num_cpus": 1, **extra}


def _connect_ray(address: str) -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--ray needs Ray: pip install 'modelpress[ray]'") from exc
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    return ray


def _cached_trials(
    task: dict[str, Any], start: Artifact, data: DataBundle, cache: StageCache
) -> list[dict[str, Any]] | None:
    """One ratio's trials when every stage of it is in ``cache`` already, else None."""
    try:
        with cache.only_lookups():
            prepare_trials(task, start, data, cache, task["trust"])
    except StageMissing:
        return None
    return prepare_trials(task, start, data, cache, task["trust"])  # every stage a hit


def prepare_on_ray(
    pipe: Pipeline, run: ModelRun, start: Artifact, tasks: list[dict[str, Any]], address: str
) -> list[list[dict[str, Any]]]:
    """One model's trials as Ray tasks at ``address``; inputs and outputs travel by value, the
    built stages land in this run's stage cache (tasks it holds already are not sent)."""
    from .trial_transport import adopt_stages, local_artifact, pack_artifact, pack_code, pack_data

    ray = _connect_ray(address)
    cache = StageCache(pipe.cache.root, log=lambda s: None, enabled=pipe.cache.enabled)
    out = [_cached_trials(t, start, run.data, cache) for t in tasks]
    todo = [i for i, entries in enumerate(out) if entries is None]
    pipe.log(f"[search] {run.label}: {len(todo)} ratio(s) on Ray, {len(tasks) - len(todo)} cached")
    if not todo:
        return out
    shared = [ray.put(pack_artifact(start)), ray.put(pack_data(run.data))]
    shared.append(ray.put(pack_code(pipe.trust)))
    remote = ray.remote(**ray_task_options())(prepare_ratio_by_value)
    pending = [
        remote.remote({k: v for k, v in tasks[i].items() if k not in _DRIVER_PATHS}, *shared)
        for i in todo
    ]
    for i, ref in zip(todo, pending):
        result = ray.get(ref)
        adopt_stages(cache, result["stages"])
        for e in result["entries"]:
            if e["status"] == "ok":
                e["artifact"] = local_artifact(e["artifact"], cache)
        out[i] = result["entries"]
    return out
