"""Benchmark harness: every (artifact, target) measured in a fresh subprocess.

For each :class:`BenchJob` the harness (optionally) builds the artifact with its target in one
worker process, then loads, validates and times it in another (:mod:`modelpress.measure.worker`):
load time; accuracy and parity on the real test split, on the runtime itself; per-call latency
at batch 1 and a larger batch (p50/p90/p99 over at least ``min_calls`` calls AND at least
``min_seconds``, MLPerf-style, warm-up excluded, raw samples kept); throughput; peak memory of the
worker; bytes on disk; thread settings. A target that fails is a ``failed`` row with its reason;
an unavailable runtime is a ``skipped`` row; neither stops the table.

>>> from modelpress.measure.bench import BenchJob, BenchSettings, benchmark       # doctest: +SKIP
>>> from modelpress.checkpoint import load_checkpoint
>>> art = load_checkpoint("runs/digits/resnet8.safetensors").artifact
>>> res = benchmark([BenchJob(art, "onnxruntime", "fp32", {"threads": 1}, build=True)],
...                 BenchSettings(min_seconds=1.0))
>>> res.records[0].latency[0].p50_ms
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..artifact import Artifact
from ..errors import ConfigError, one_line
from .machine import cpu_model, machine_fingerprint, usable_cores, versions
from .results import Environment, Record, Results, new_results

if TYPE_CHECKING:
    from ..devices.spec import Device

LIBRARIES = (
    "modelpress",
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "litert-torch",
    "tensorrt",
)
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)


@dataclass(frozen=True)
class BenchSettings:
    """How to measure. Defaults follow MLPerf's idea of a minimum count AND a minimum duration."""

    batch_sizes: tuple[int, ...] = (1, 32)
    warmup_calls: int = 10
    warmup_seconds: float = 0.2
    min_calls: int = 200
    min_seconds: float = 2.0
    keep_samples: int = 5000  # raw samples stored per batch size (evenly spaced in time)
    validate: bool = True
    timeout_s: float = 900.0  # per worker process

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch sizes must be positive integers, got {self.batch_sizes}")
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        if self.min_calls < 1 or self.warmup_calls < 0 or self.keep_samples < 1:
            raise ConfigError("min_calls and keep_samples must be >= 1 and warmup_calls >= 0")
        if self.min_seconds < 0 or self.warmup_seconds < 0 or self.timeout_s <= 0:
            raise ConfigError("min_seconds and warmup_seconds must be >= 0, timeout_s > 0")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "batch_sizes": list(self.batch_sizes)}


@dataclass(frozen=True)
class BenchJob:
    """One (artifact, target) to measure.

    ``artifact`` is already built for ``target`` unless ``build`` is True, in which case it is
    the torch checkpoint and the target builds ``precision`` from it first (in its own process,
    into ``build_dir``). ``reference_logits`` is a ``.npy`` of the float model's test logits
    (see :func:`reference_logits`) for agreement and accuracy drop. ``slowdown`` > 0 makes every
    timed call that fraction slower (busy wait): only to check that a gate catches a regression.
    """

    artifact: Artifact
    target: str
    precision: str = "fp32"
    target_options: Mapping[str, Any] = field(default_factory=dict)
    build: bool = False
    build_dir: Path | None = None
    reference_logits: Path | None = None
    model: str = ""  # default: the registry name in the artifact's metadata
    family: str = ""  # default: the registry's family of that model
    slowdown: float = 0.0

    def __post_init__(self) -> None:
        from ..targets import TARGETS

        if self.target not in TARGETS:
            raise ConfigError(f"unknown target {self.target!r}; known: {', '.join(TARGETS)}")
        if not 0.0 <= self.slowdown <= 10.0:
            raise ConfigError(f"slowdown is a fraction in [0, 10], got {self.slowdown}")
        if self.build and self.build_dir is None:
            raise ConfigError("a job with build=True needs build_dir, where the target writes")
        if not self.model:
            name = (self.artifact.meta.get("model") or {}).get("name", "")
            object.__setattr__(self, "model", name or self.artifact.path.stem)
        if not self.family:
            object.__setattr__(self, "family", _family(self.model))


def _family(model: str) -> str:
    from ..models import MODELS

    entry = MODELS.get(model)
    return entry.family if entry else ""


def collect_environment() -> Environment:
    """CPU model, cores, platform and library versions (from package metadata: no imports)."""
    return Environment(
        cpu_model=cpu_model(),
        logical_cores=os.cpu_count() or 1,
        usable_cores=usable_cores(),
        platform=platform.platform(),
        python=platform.python_version(),
        versions=versions(LIBRARIES),
        env={k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        machine_id=machine_fingerprint().id,
    )


def run_worker(
    payload: dict[str, Any],
    timeout_s: float,
    workdir: Path,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one worker process on ``payload``; a crash or timeout becomes a failed result.

    ``on_event`` receives the worker's progress events (``start``/``done`` of each job, see
    :func:`modelpress.measure.worker.emit`) in this thread, while the worker runs. ``env``: extra
    environment variables of the worker (thread counts). The worker runs with ``-P``: the current
    folder is not put on its import path, so a stray ``json.py`` there cannot shadow a package."""
    from .worker import PROGRESS_PREFIX

    job_file = workdir / f"job-{time.monotonic_ns()}.json"
    out_file = job_file.with_suffix(".out.json")
    job_file.write_text(json.dumps(payload, default=str))
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    cmd = [
        sys.executable,
        *safe_path,
        "-m",
        "modelpress.measure.worker",
        str(job_file),
        str(out_file),
    ]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **env} if env else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",
    )
    tail: deque[str] = deque(maxlen=20)
    try:
        for line in _lines_until(proc, time.monotonic() + timeout_s):
            event = _event(line, PROGRESS_PREFIX)
            if event is not None and on_event is not None:
                on_event(event)
            elif event is None and line.strip():
                tail.append(line)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"worker timed out after {timeout_s:g} s"}
    finally:
        if proc.poll() is None:  # timed out, or the parent is interrupted: never leave it running
            proc.kill()
        proc.wait()
    if not out_file.is_file():
        why = f": {one_line(tail[-1])}" if tail else ""
        return {"status": "failed", "reason": f"worker died (exit {proc.returncode}){why}"}
    return json.loads(out_file.read_text())


def _event(line: str, prefix: str) -> dict[str, Any] | None:
    if not line.startswith(prefix):
        return None
    try:
        event = json.loads(line[len(prefix) :])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _lines_until(proc: subprocess.Popen, deadline: float) -> Iterator[str]:
    """The lines of ``proc``'s stderr as they come (a reader thread feeds a queue), until it
    exits and its stream is drained; TimeoutExpired past ``deadline`` (monotonic)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        try:
            line = lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            if proc.poll() is not None and lines.empty():  # exited; a child may hold the pipe
                return
            continue
        if line is None:
            return
        yield line


def _record(job: BenchJob, art: Artifact, result: dict[str, Any], build_s: float | None) -> Record:
    """A results row; a job whose build did not happen has no size (not the source's size)."""
    data_cfg = (art.meta.get("preprocessing") or {}).get("data_config") or {}
    measured = {k: v for k, v in result.items() if k in Record.model_fields}
    unbuilt = job.build and build_s is None
    machine = machine_fingerprint()
    size = art.size_bytes if Path(art.path).exists() and not unbuilt else None
    notes = build_notes(art.meta)
    if notes and isinstance(measured.get("runtime"), dict):
        measured["runtime"] = {**measured["runtime"], "build_notes": notes}
    return Record(
        **{
            "model": job.model,
            "family": job.family,
            "target": job.target,
            "precision": job.precision,
            "artifact_id": art.id,
            "artifact_path": str(art.path),
            "format": art.format,
            "dataset": data_cfg.get("name", ""),
            "size_bytes": size,
            "build_s": build_s,
            "injected_slowdown": job.slowdown,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine_id": machine.id,
            "machine": machine.description,
            **measured,
        }
    )


def build_notes(meta: Mapping[str, Any]) -> list[str]:
    """What an artifact's build says about itself that explains its speed: the ops left in
    float or run in float on dequantized tensors, graphs not built (ONNX Runtime: ``notes``;
    LiteRT: ``quantization.notes`` and the ops its int8 graph computes in float)."""
    notes = [str(n) for n in meta.get("notes") or []]
    quant = meta.get("quantization") or {}
    notes += [str(n) for n in quant.get("notes") or []]
    float_ops = quant.get("float_ops") or {}
    if float_ops:
        ops = ", ".join(f"{op} x{k}" for op, k in sorted(float_ops.items(), key=lambda i: -i[1]))
        notes.append(f"computed in float in the int8 graph: {ops}")
    return notes


def unsupported_precision(job: BenchJob) -> str:
    """Why ``job.target`` cannot build ``job.precision`` ('' if it can or cannot tell)."""
    from ..targets import get_target

    try:
        precisions = getattr(get_target(job.target, **job.target_options), "precisions", ())
    except Exception:  # a backend that cannot even be created: its worker reports why in full
        return ""
    if precisions and job.precision not in precisions:
        return f"target {job.target} does not build precision {job.precision!r}; it builds {precisions}"
    return ""


def build_for(
    job: BenchJob, settings: BenchSettings, workdir: Path
) -> tuple[Artifact, float | None, dict[str, Any] | None]:
    """``job``'s artifact built for its target in a fresh process, when it asks to be built:
    (artifact, build seconds, None), or (its source, None, the failed/skipped result)."""
    art = job.artifact
    if not job.build:
        return art, None, None
    why = unsupported_precision(job)
    if why:
        return art, None, {"status": "skipped", "reason": why}
    built = run_worker(
        {
            "mode": "build",
            "artifact": art.to_dict(),
            "target": job.target,
            "target_options": dict(job.target_options),
            "precision": job.precision,
            "out_dir": str(job.build_dir),
        },
        settings.timeout_s,
        workdir,
    )
    if built["status"] != "ok":
        return art, None, built
    return Artifact.from_dict(built["artifact"]), built["build_s"], None


def measure_local(
    job: BenchJob, art: Artifact, settings: BenchSettings, workdir: Path
) -> dict[str, Any]:
    """Load, validate and time the built ``art`` in a fresh worker process on this machine."""
    payload = {
        "mode": "bench",
        "artifact": art.to_dict(),
        "target": job.target,
        "target_options": dict(job.target_options),
        "reference_logits": str(job.reference_logits) if job.reference_logits else None,
        "slowdown": job.slowdown,
        "settings": settings.to_dict(),
    }
    return run_worker(payload, settings.timeout_s, workdir)


def run_job(job: BenchJob, settings: BenchSettings, workdir: Path) -> Record:
    """Build (if asked) and measure one job on this machine, each step in a fresh process."""
    art, build_s, failed = build_for(job, settings, workdir)
    if failed is not None:
        return _record(job, art, failed, None)
    return _record(job, art, measure_local(job, art, settings, workdir), build_s)


def benchmark(
    jobs: Sequence[BenchJob],
    settings: BenchSettings | None = None,
    log: Callable[[str], None] | None = None,
    devices: Sequence[Device] = (),
) -> Results:
    """Measure every job on every device (default: this machine), one after the other (never two
    at once: they would share the CPU). Each artifact is built once, here; a remote device
    (:mod:`modelpress.devices`) gets the built files, and its rows carry its name."""
    from ..devices.spec import LOCAL_DEVICE

    settings = settings or BenchSettings()
    devices = list(devices) or [LOCAL_DEVICE]
    progress = _Progress(len(jobs) * len(devices), log)
    records: list[Record] = []
    with tempfile.TemporaryDirectory(prefix="modelpress-bench-") as tmp:
        built = [build_for(job, settings, Path(tmp)) for job in jobs]
        for device in devices:
            if device.kind == "local":
                results = [
                    failed or measure_local(job, art, settings, Path(tmp))
                    for job, (art, _, failed) in zip(jobs, built)
                ]
            else:
                results = _measure_remote(device, jobs, built, settings, log)
            for job, (art, build_s, failed), res in zip(jobs, built, results):
                records.append(progress(_record(job, art, res, None if failed else build_s)))
    return new_results(collect_environment(), records, settings.to_dict())


def _measure_remote(
    device: Device,
    jobs: Sequence[BenchJob],
    built: list[tuple[Artifact, float | None, dict[str, Any] | None]],
    settings: BenchSettings,
    log: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
    """One result per job on a remote ``device``: the built ones measured there, in one session."""
    from ..devices.remote import measure_on

    todo = [
        (art, job.target, dict(job.target_options), job.reference_logits)
        for job, (art, _, failed) in zip(jobs, built)
        if failed is None
    ]
    measured = iter(measure_on(device, todo, settings.to_dict(), log))
    return [
        {**failed, "device": device.name} if failed else next(measured) for _, _, failed in built
    ]


class _Progress:
    """Logs each finished record with an ETA (``[i/n] label: summary``)."""

    def __init__(self, total: int, log: Callable[[str], None] | None):
        self.total, self.log, self.done, self.start = total, log, 0, time.perf_counter()

    def __call__(self, rec: Record) -> Record:
        from ..progress import format_seconds

        self.done += 1
        if self.log:
            eta = (time.perf_counter() - self.start) / self.done * (self.total - self.done)
            when = f", ETA {format_seconds(eta)}" if self.done < self.total else ""
            self.log(f"[{self.done}/{self.total}] {rec.label}: {summary_line(rec)}{when}")
        return rec


def summary_line(rec: Record) -> str:
    if rec.status != "ok":
        return f"{rec.status}: {rec.reason}"
    lat = ", ".join(f"p50 {x.p50_ms:.3f} ms at batch {x.batch}" for x in rec.latency)
    acc = f", accuracy {rec.validation.accuracy:.4f}" if rec.validation else ""
    return f"ok: {lat}{acc}"


def reference_logits(checkpoint: Artifact, out: str | Path) -> Path:
    """Save the float model's logits on its test split to ``out`` (``.npy``, atomic): a torch
    checkpoint run by torch, or a float ONNX file (a user's own) run by ONNX Runtime.

    Runs in this process (it is not measured): the reference for agreement and accuracy drop.
    """
    import io

    from ..data import DataConfig, load_dataset
    from ..fsutil import atomic_write_bytes
    from ..targets import get_target
    from ..validate import predict_all

    cfg = (checkpoint.meta.get("preprocessing") or {}).get("data_config")
    if not cfg:
        raise ConfigError(f"{checkpoint.path} does not record its data set; pass --no-validate")
    data = load_dataset(DataConfig(**cfg))
    runtime = "onnxruntime" if checkpoint.format == "onnx" else "torch"
    logits = predict_all(get_target(runtime).load(checkpoint), data.test.x)
    buf = io.BytesIO()
    np.save(buf, logits, allow_pickle=False)
    return atomic_write_bytes(out, buf.getvalue())


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``modelpress bench`` (for cli.py's subparser)."""
    p.add_argument("checkpoints", nargs="+", type=Path, help="trained .safetensors checkpoints")
    p.add_argument("--targets", default="torch,onnxruntime", help="comma-separated target names")
    p.add_argument("--precisions", default="fp32", help="comma-separated, e.g. fp32,dynamic_int8")
    p.add_argument("--batch", type=int, default=32, help="batch size measured besides 1")
    p.add_argument("--min-calls", type=int, default=200, help="timed calls per batch, at least")
    p.add_argument(
        "--min-seconds", type=float, default=2.0, help="timed seconds per batch, at least"
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing")
    p.add_argument("--threads", type=int, help="intra-op threads for every target")
    p.add_argument("--out", type=Path, default=Path("results.json"), help="results file")
    p.add_argument("--build-dir", type=Path, help="where targets write (default: beside --out)")
    p.add_argument("--report", type=Path, help="also write report.md and report.html here")
    p.add_argument("--no-validate", action="store_true", help="skip accuracy and parity")
    p.add_argument(
        "--device",
        default="local",
        metavar="NAME[,NAME...]",
        help="where to measure: local (this machine) and/or devices of the devices file",
    )
    p.add_argument(
        "--devices-file",
        type=Path,
        default=Path("devices.yaml"),
        help="the devices file that names them (default: ./devices.yaml)",
    )
    p.add_argument(
        "--inject-slowdown",
        type=parse_slowdown,
        default={},
        metavar="FRACTION|PRECISION=FRACTION,...",
        help="make timed calls this much slower (0.25 = 25 %%), every one or those of the named "
        "precisions (int8=3): checks that a gate, or the 'slower than fp32' mark, fires",
    )


def parse_slowdown(text: str) -> dict[str, float]:
    """``--inject-slowdown``: ``"0.25"`` -> every precision (key ``"*"``); ``"int8=3,fp16=0.5"``
    -> those precisions only. Each fraction is in [0, 10]; a bad one is an argparse error."""
    out: dict[str, float] = {}
    for item in _csv(text) or [""]:
        name, _, value = item.rpartition("=")
        name = name.strip() or "*"
        try:
            fraction = float(value)
        except ValueError:
            fraction = float("nan")
        if not 0.0 <= fraction <= 10.0:  # also false for nan
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected a fraction in [0, 10] (0.25 = 25 % slower), alone or as "
                "precision=fraction, e.g. 0.25 or int8=3,fp16=0.5"
            )
        if name in out:
            raise argparse.ArgumentTypeError(f"{name!r} is given twice in {text!r}")
        out[name] = fraction
    return out


def jobs_from_args(
    a: argparse.Namespace, build_dir: Path, batches: tuple[int, ...] = (1,)
) -> list[BenchJob]:
    from ..checkpoint import read_meta
    from ..targets import with_bench_batches
    from ..targets.base import safe_stem  # names from a checkpoint: never paths

    jobs = []
    options = {"threads": a.threads} if a.threads else {}
    for path in a.checkpoints:
        meta, _ = read_meta(path)
        art = Artifact(path=path, format="torch", id=meta.id, meta=meta.model_dump(), files=(path,))
        ref = None
        if not a.no_validate:
            ref = reference_logits(art, build_dir / f"{safe_stem(art.id)}.reference.npy")
        for target in _csv(a.targets):
            for precision in _csv(a.precisions):
                folder = f"{safe_stem(meta.model.name)}-{safe_stem(art.id)}"
                out = build_dir / folder / target / precision
                jobs.append(
                    BenchJob(
                        art,
                        target,
                        precision,
                        with_bench_batches(target, options, batches),
                        build=True,
                        build_dir=out,
                        reference_logits=ref,
                        slowdown=a.inject_slowdown.get(precision, a.inject_slowdown.get("*", 0.0)),
                    )
                )
    return jobs


def devices_from_args(a: argparse.Namespace) -> list[Device]:
    """The devices ``--device`` names (the devices file is read only when one is not local)."""
    from ..devices.spec import LOCAL, LOCAL_DEVICE, load_devices, pick

    names = _csv(a.device) or [LOCAL]
    if names == [LOCAL]:
        return [LOCAL_DEVICE]
    return pick(load_devices(a.devices_file), names, "--device")


def cmd_bench(a: argparse.Namespace) -> int:
    """Run ``modelpress bench``: 0 when at least one record is ok, 1 when none is."""
    from .marks import mark_slower_than_fp32
    from .report import markdown_table, write_report
    from .results import save_results

    batches = (1,) if a.batch == 1 else (1, a.batch)
    settings = BenchSettings(
        batch_sizes=batches,
        warmup_calls=a.warmup,
        min_calls=a.min_calls,
        min_seconds=a.min_seconds,
        validate=not a.no_validate,
    )
    build_dir = a.build_dir or a.out.parent / "build"
    devices = devices_from_args(a)
    jobs = jobs_from_args(a, build_dir, batches)
    res = benchmark(jobs, settings, log=lambda s: print(s, file=sys.stderr), devices=devices)
    res = mark_slower_than_fp32(res)  # as a run does: a gate's forbid_marks applies here too
    save_results(res, a.out)
    print(markdown_table(res))
    print(f"results -> {a.out}")
    if a.report:
        md, page = write_report(res, a.report)
        print(f"report -> {md}, {page}")
    return 0 if any(r.status == "ok" for r in res.records) else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m modelpress.measure.bench CHECKPOINT... [--targets ...]``."""
    from ..exits import standalone

    return standalone("modelpress bench", __doc__, configure_parser, cmd_bench, argv)


if __name__ == "__main__":
    sys.exit(main())
