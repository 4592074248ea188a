"""The subprocess side of the benchmark harness: one fresh process per (artifact, target).

``python -m modelpress.measure.worker JOB.json OUT.json`` reads a job written by
:mod:`modelpress.measure.bench`, runs it and writes a JSON result; it never raises past ``main``. While
it runs, each job's start and end go to stderr as progress events (JSON after
``modelpress-progress: ``), read live by the parent (:func:`modelpress.measure.bench.run_worker`). Modes:

- ``bench``: load the artifact on its target (timed), validate it on the test split against the
  reference logits, then time ``predict`` at each batch size (warm-up excluded; at least
  ``min_calls`` calls AND at least ``min_seconds``), and report peak memory (VmHWM);
- ``build``: ``target.build`` in its own process, so the build's memory does not count.
- ``int8_check``: a quantized artifact's drop vs its float model, and the layers to keep in
  float when it is over budget (:mod:`modelpress.measure.int8_check`).
- ``interleave``: two artifacts timed in alternating blocks in this one process, their ratio
  with a confidence interval (:func:`modelpress.measure.interleave.interleaved_job`).

Only this process imports the runtime (onnxruntime, ai_edge_litert, tensorrt, torch), so one
runtime's threads, allocator and memory never pollute another's measurement.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..devices.runner import maxrss_bytes  # the same peak RSS on every device
from ..errors import TargetUnavailable, one_line
from ..fsutil import atomic_write_text
from .int8_check import run_int8_check
from .interleave import interleaved_job
from .stats import percentiles
from .timing import (  # noqa: F401 (re-exported: they lived here)
    Call,
    batch_of,
    fast_call,
    load_data,
    slowed,
    synthetic_inputs,
    time_calls,
)

PROGRESS_PREFIX = "modelpress-progress: "  # marks the progress lines on the worker's stderr


def latency_entry(samples_ns: np.ndarray, batch: int, seconds: float, keep: int) -> dict[str, Any]:
    us = samples_ns / 1e3
    pct = percentiles(us, (50, 90, 99))
    stride = max(1, -(-us.size // keep))  # ceil: keep at most `keep` samples, evenly in time
    return {
        "batch": batch,
        "calls": int(us.size),
        "seconds": seconds,
        "p50_ms": pct["p50"] / 1e3,
        "p90_ms": pct["p90"] / 1e3,
        "p99_ms": pct["p99"] / 1e3,
        "mean_ms": float(us.mean()) / 1e3,
        "min_ms": float(us.min()) / 1e3,
        "throughput_sps": float(batch * us.size / (us.sum() / 1e6)),
        "samples_us": [round(float(v), 3) for v in us[::stride]],
        "sample_stride": stride,
    }


def measure_batch(runner: Any, x: np.ndarray, settings: dict[str, Any], slowdown: float) -> dict:
    """Warm up, then time one batch size; ``slowdown`` > 0 injects a busy wait (gate self-test)."""
    call = fast_call(runner, x)
    warm = time_calls(call, settings["warmup_calls"], settings["warmup_seconds"])
    if slowdown > 0:  # calibrate on this run's own speed, so the slowdown is relative
        extra = int(slowdown * np.median(time_calls(call, 50, 0.05)))
        call = slowed(call, extra)
    t0 = time.perf_counter()
    samples = time_calls(call, settings["min_calls"], settings["min_seconds"])
    entry = latency_entry(samples, len(x), time.perf_counter() - t0, settings["keep_samples"])
    entry["warmup_calls"] = int(warm.size)
    if callable(getattr(runner, "prepare_compute", None)):  # a GPU runtime: device time alone
        entry.update(compute_entry(runner.prepare_compute(x), int(samples.size)))
    return entry


def compute_entry(call: Callable[[], float], calls: int) -> dict[str, float]:
    """Percentiles of ``calls`` device-only timings (each call returns its own milliseconds)."""
    ms = np.array([call() for _ in range(max(1, calls))])
    pct = percentiles(ms, (50, 90, 99))
    return {f"compute_{k}_ms": float(v) for k, v in pct.items()}


def run_bench(job: dict[str, Any]) -> dict[str, Any]:
    """Load, validate and time one artifact on one target; what was measured survives a failure."""
    from ..artifact import Artifact
    from ..targets import get_target
    from ..validate import validate

    settings, out = job["settings"], {"status": "ok", "latency": []}
    art = Artifact.from_dict(job["artifact"])
    phase = "data"
    try:
        data = load_data(dict(art.meta))
        pool = data.test.x if data is not None else synthetic_inputs(dict(art.meta))
        out["rss_before_load_bytes"] = maxrss_bytes()
        phase = "load"
        target = get_target(job["target"], **job.get("target_options", {}))
        target.availability().require(job["target"])
        t0 = time.perf_counter()
        runner = target.load(art)
        out["load_s"] = time.perf_counter() - t0
        info = target.describe().to_dict()
        out.update(runtime=info, threads=info.get("threads"))
        if settings.get("validate", True) and data is not None:
            phase = "validate"
            ref = job.get("reference_logits")
            ref_logits = np.load(ref, allow_pickle=False) if ref else None
            out["validation"] = validate(runner, data.test, ref_logits).to_dict()
        for batch in settings["batch_sizes"]:
            phase = f"latency at batch {batch}"
            x = batch_of(pool, batch)
            out["latency"].append(measure_batch(runner, x, settings, job.get("slowdown", 0.0)))
        runner.close()
    except TargetUnavailable as exc:
        out.update(status="skipped", reason=one_line(exc))
    except Exception as exc:  # one failing target is a row that says why, never a crash
        out.update(status="failed", reason=f"{phase}: {type(exc).__name__}: {one_line(exc)}")
    # a high-water mark never falls, but Linux reads VmHWM from per-CPU RSS counters that can
    # lag a few pages behind an earlier reading: keep the peak no lower than what was seen
    out["peak_rss_bytes"] = max(maxrss_bytes(), out.get("rss_before_load_bytes", 0))
    return out


def run_build(job: dict[str, Any]) -> dict[str, Any]:
    """``target.build`` in this process; returns the built artifact or the reason it failed."""
    from ..artifact import Artifact
    from ..targets import get_target

    art = Artifact.from_dict(job["artifact"])
    try:
        target = get_target(job["target"], **job.get("target_options", {}))
        target.availability().require(job["target"])
        if job.get("calibration_file"):  # inputs sent with the job: no data files read here
            calib = np.load(job["calibration_file"], allow_pickle=False)
        else:
            data = load_data(dict(art.meta))
            calib = data.calibration(job.get("calibration", 128)) if data is not None else None
        t0 = time.perf_counter()
        built = target.build(art, job["precision"], calib, Path(job["out_dir"]))
        return {"status": "ok", "artifact": built.to_dict(), "build_s": time.perf_counter() - t0}
    except TargetUnavailable as exc:
        return {"status": "skipped", "reason": one_line(exc)}
    except Exception as exc:
        return {"status": "failed", "reason": f"build: {type(exc).__name__}: {one_line(exc)}"}


def emit(event: str, index: int, total: int, **fields: Any) -> None:
    """One progress event for the parent: a JSON line on stderr after :data:`PROGRESS_PREFIX`
    (the parent reads them while this process runs; other stderr lines are its error tail)."""
    line = json.dumps({"event": event, "index": index, "total": total, **fields})
    print(PROGRESS_PREFIX + line, file=sys.stderr, flush=True)


def run_one(job: dict[str, Any], index: int = 0, total: int = 1) -> dict[str, Any]:
    """One build or bench job, between a ``start`` and a ``done`` progress event."""
    emit("start", index, total, mode=job["mode"])
    t0 = time.perf_counter()
    result = MODES[job["mode"]](job)
    emit("done", index, total, status=result.get("status"), seconds=time.perf_counter() - t0)
    return result


def run_many(job: dict[str, Any]) -> dict[str, Any]:
    """Several build or bench jobs of one target, one after the other, in this one process
    (a fresh process per target and model, not per job: imports are paid once)."""
    jobs = job["jobs"]
    return {"status": "ok", "results": [run_one(j, i, len(jobs)) for i, j in enumerate(jobs)]}


MODES = {
    "bench": run_bench,
    "build": run_build,
    "interleave": interleaved_job,
    "int8_check": run_int8_check,  # int8 accuracy budget: validate, localise (int8_check.py)
    "many": run_many,
}


def trust(job: dict[str, Any]) -> None:
    """Make a user's model importable here: the folders and factories the parent trusted.

    Without a factory nothing changes; with one, its folders are APPENDED to ``sys.path`` (a
    ``json.py`` or ``onnxruntime.py`` there never shadows the installed package)."""
    if not job.get("factories"):
        return
    from ..factory import add_factory_folder, allow_factory  # imports torch: only for a factory

    for folder in job.get("pythonpath", []):
        add_factory_folder(folder)
    for factory in job["factories"]:
        allow_factory(factory, check=False)  # imported only if a checkpoint here needs it


def main(argv: list[str] | None = None) -> int:
    job_path, out_path = argv or sys.argv[1:]
    try:
        job = json.loads(Path(job_path).read_text())
        trust(job)
        result = MODES[job["mode"]](job) if job["mode"] == "many" else run_one(job)
    except Exception as exc:
        traceback.print_exc()
        result = {"status": "failed", "reason": f"worker: {type(exc).__name__}: {one_line(exc)}"}
    atomic_write_text(out_path, json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
