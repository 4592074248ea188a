"""Measure built artifacts on a remote device: ship the runner, the files and the inputs, run,
bring back timings and logits, and make the same records a local measurement makes.

Per device and run: connect; make ``<workdir>/run-<id>/``; copy :mod:`modelpress.devices.runner`
there and ``probe`` the device (Python, numpy, runtimes, the machine's facts); then per artifact
copy its files, the inputs (once per distinct array) and a ``job.json``, run the runner, copy back
``result.json``, ``logits.npy`` and the per-call samples. Accuracy and agreement are computed
here from the device's logits, against the labels and the float reference — on the logits the
device produced, so accuracy is checked on the system that is timed. The run's folder there is
removed at the end (``keep: true`` leaves it). One unreachable device, or one failing job, is a
row that says why; the others go on.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..errors import ConfigError, DeviceError, one_line
from . import runner as runner_module
from .spec import Device
from .transport import Transport

REMOTE_TARGETS = {"onnxruntime": "onnxruntime", "litert": "litert"}  # target -> runner runtime
RUNTIME_MODULE = {"onnxruntime": ("onnxruntime",), "litert": ("ai_edge_litert", "tflite_runtime")}


def open_transport(device: Device) -> Transport:
    """A connected transport to ``device`` (DeviceError, one line, when it cannot be reached)."""
    if device.kind == "ssh":
        from .ssh import SshTransport

        return SshTransport(device)
    if device.kind == "adb":
        from .adb import AdbTransport

        return AdbTransport(device)
    raise ConfigError(f"device {device.name} ({device.url}) is measured locally, not remotely")


@dataclass
class Probe:
    """What the device said it has (the runner's ``probe``)."""

    python: str
    numpy: str | None
    runtimes: dict[str, str | None]
    facts: dict[str, Any]

    def missing(self, target: str, device: str) -> str:
        """Why ``target`` cannot run there ('' when it can)."""
        if self.numpy is None:
            return f"{device}: numpy is not installed there: pip install numpy"
        modules = RUNTIME_MODULE[target]
        if any(self.runtimes.get(m) for m in modules):
            return ""
        dist = runner_module.DISTRIBUTIONS[modules[0]]
        return f"{device}: {modules[0]} is not installed there: pip install {dist}"


@dataclass
class Session:
    """An open device with the runner in place, and where this run's files go there."""

    device: Device
    transport: Transport
    folder: str  # <workdir>/run-<id>
    probe: Probe
    shipped: set[str] = field(default_factory=set)  # input digests already there
    overhead: dict[str, float] = field(default_factory=dict)  # connect, probe seconds

    @property
    def python(self) -> str:
        return self.device.python


def start(device: Device) -> Session:
    """Connect, copy the runner and probe the device: DeviceError says what is missing there."""
    t0 = time.perf_counter()
    transport = open_transport(device)
    try:
        t1 = time.perf_counter()
        run_id = f"run-{time.time_ns():x}"
        folder = f"{device.remote_workdir()}/{run_id}"
        transport.makedirs(folder)
        transport.put(Path(runner_module.__file__), f"{folder}/runner.py")
        done = transport.run([device.python, f"{folder}/runner.py", "probe"], 120.0)
        probe = _probe(device, done)
        t2 = time.perf_counter()
        return Session(
            device, transport, folder, probe, overhead={"connect_s": t1 - t0, "probe_s": t2 - t1}
        )
    except BaseException:
        transport.close()
        raise


def _probe(device: Device, done: Any) -> Probe:
    if done.code == 127 or "not found" in done.stderr.lower() and done.code != 0:
        raise DeviceError(
            f"{device.name}: {device.python} is not found there: install Python 3.9+ or set "
            "python: for this device in the devices file"
        )
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise DeviceError(f"{device.name}: the runner did not start: {done.last_line()}") from exc
    if data.get("protocol") != runner_module.PROTOCOL:
        raise DeviceError(
            f"{device.name}: the runner there speaks protocol {data.get('protocol')!r}, this "
            f"modelpress {runner_module.PROTOCOL}: remove {device.remote_workdir()} there"
        )
    return Probe(data["python"], data.get("numpy"), data.get("runtimes", {}), data["facts"])


def runner_options(target: str, options: dict[str, Any]) -> dict[str, Any]:
    """The runtime settings the runner applies, from the target's own config (its defaults
    included), so that the device's session is made as a local one would be."""
    from ..targets import get_target

    tgt = get_target(target, **options)
    if target == "onnxruntime":
        cfg = tgt.cfg
        if tuple(cfg.providers) != ("CPUExecutionProvider",):
            raise ConfigError(
                f"providers {list(cfg.providers)} do not run on remote devices: the runner uses "
                "onnxruntime's CPU provider"
            )
        return {
            "threads": cfg.threads,
            "optimization": cfg.optimization,
            "disabled_optimizers": list(cfg.disabled_optimizers),
        }
    cfg = tgt.config
    return {"threads": cfg.threads, "xnnpack": cfg.xnnpack, "module": cfg.runtime}


def inputs_of(art: Artifact) -> tuple[np.ndarray, np.ndarray | None]:
    """The batch pool sent to the device (the test split in the model's dtype, or synthetic
    inputs when the artifact names no data set) and the labels (None when synthetic)."""
    from ..data.base import InputSpec
    from ..measure.timing import load_data, synthetic_inputs

    spec = InputSpec.from_dict(art.meta["input_spec"])
    data = load_data(dict(art.meta))
    if data is None:
        return synthetic_inputs(dict(art.meta)), None
    return np.ascontiguousarray(data.test.x.astype(spec.dtype, copy=False)), data.test.y


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()


@dataclass
class Measured:
    """A job's outcome on the device: the worker-shaped result, and the device's logits."""

    result: dict[str, Any]
    logits: np.ndarray | None


def job_for(
    art: Artifact, target: str, options: dict[str, Any], settings: dict[str, Any], inputs: str
) -> dict[str, Any]:
    """The runner's ``job.json`` for ``art`` (its files lie next to it in the job's folder)."""
    return {
        "protocol": runner_module.PROTOCOL,
        "runtime": REMOTE_TARGETS[target],
        "model": Path(art.path).name,
        # LiteRT: the graphs converted for other batches, shipped with the artifact's files
        "graphs": dict((art.meta or {}).get("batch_graphs") or {}),
        "options": runner_options(target, options),
        "input_names": list(art.meta["input_spec"].get("names") or []),
        "inputs": inputs,
        "validate": bool(settings.get("validate", True)),
        "predict_batch": 256,
        **{k: settings[k] for k in ("batch_sizes", "warmup_calls", "warmup_seconds")},
        **{k: settings[k] for k in ("min_calls", "min_seconds")},
    }


def run_remote(
    session: Session,
    art: Artifact,
    target: str,
    options: dict[str, Any],
    settings: dict[str, Any],
    pool: np.ndarray,
    local_tmp: Path,
    index: int,
) -> Measured:
    """Ship and run one job; returns the runner's result (transport times added) and logits."""
    tr, folder = session.transport, session.folder
    job_dir = f"{folder}/j{index}"
    t0 = time.perf_counter()
    tr.makedirs(job_dir)
    blob = _npy_bytes(pool)
    digest = hashlib.sha256(blob).hexdigest()[:16]
    if digest not in session.shipped:
        local = local_tmp / f"inputs-{digest}.npy"
        local.write_bytes(blob)
        tr.makedirs(f"{folder}/inputs")
        tr.put(local, f"{folder}/inputs/{digest}.npy")
        session.shipped.add(digest)
    files = art.files or (art.path,)
    for f in files:
        tr.put(Path(f), f"{job_dir}/{Path(f).name}")
    job = job_for(art, target, options, settings, f"../inputs/{digest}.npy")
    job_file = local_tmp / f"job{index}.json"
    job_file.write_text(json.dumps(job))
    tr.put(job_file, f"{job_dir}/job.json")
    t1 = time.perf_counter()
    done = tr.run([session.python, f"{folder}/runner.py", "run", job_dir], session.device.timeout_s)
    t2 = time.perf_counter()
    if done.code != 0:
        raise DeviceError(f"{session.device.name}: the runner failed: {done.last_line()}")
    back = local_tmp / f"j{index}"
    back.mkdir()
    tr.get(f"{job_dir}/result.json", back / "result.json")
    result = json.loads((back / "result.json").read_text())
    logits = None
    if result["status"] == "ok" and job["validate"]:
        tr.get(f"{job_dir}/logits.npy", back / "logits.npy")
        logits = np.load(back / "logits.npy", allow_pickle=False)
    result["latency"] = []
    for entry in result.pop("batches", []):
        tr.get(f"{job_dir}/{entry['samples']}", back / entry["samples"])
        samples = np.load(back / entry["samples"], allow_pickle=False)
        result["latency"].append((entry, samples))
    t3 = time.perf_counter()
    result["transport"] = {
        "copy_s": t1 - t0,
        "start_s": max(0.0, (t2 - t1) - float(result.get("seconds", 0.0))),
        "fetch_s": t3 - t2,
    }
    return Measured(result, logits)


def to_record_fields(
    measured: Measured,
    target: str,
    labels: np.ndarray | None,
    reference: np.ndarray | None,
    keep_samples: int,
    session: Session,
) -> dict[str, Any]:
    """The Record fields of a remote measurement, shaped as the local worker shapes them."""
    from ..measure.machine import fingerprint
    from ..measure.worker import latency_entry
    from ..validate import compare

    res = dict(measured.result)
    if res["status"] != "ok":  # the runner's reason, said of this device
        res["reason"] = f"{session.device.name}: {res.get('reason', '')}"
    latency = []
    for entry, samples in res.pop("latency", []):
        lat = latency_entry(
            samples.astype(np.float64), entry["batch"], entry["seconds"], keep_samples
        )
        latency.append({**lat, "warmup_calls": entry["warmup_calls"]})
    machine = fingerprint(session.probe.facts)
    runtime = res.get("runtime") or {}
    fields: dict[str, Any] = {
        "status": res["status"],
        "reason": res.get("reason", ""),
        "load_s": res.get("load_s"),
        "peak_rss_bytes": res.get("peak_rss_bytes"),
        "rss_before_load_bytes": res.get("rss_before_load_bytes"),
        "threads": runtime.get("threads"),
        "latency": latency,
        "machine_id": machine.id,
        "machine": machine.description,
        "device": session.device.name,
    }
    if runtime:
        fields["runtime"] = {
            "name": target,
            "runtime": runtime.get("runtime", ""),
            "version": runtime.get("version", ""),
            "device": f"{session.device.name} ({runtime.get('device', 'cpu')})",
            "threads": runtime.get("threads"),
            "details": {
                "python": session.probe.python,
                "transport": {**session.overhead, **res.get("transport", {})},
                "facts": session.probe.facts,
            },
        }
    if measured.logits is not None and labels is not None:
        fields["validation"] = compare(measured.logits, labels, reference).to_dict()
    return fields


def measure_on(
    device: Device,
    jobs: Sequence[tuple[Artifact, str, dict[str, Any], Path | None]],
    settings: dict[str, Any],
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Measure ``jobs`` (built artifact, target, target options, reference logits .npy) on
    ``device``; one dict of Record fields per job, in order. Never raises for a device or a job:
    an unreachable device makes every row ``failed`` with the reason."""
    try:
        session = start(device)
    except (DeviceError, ConfigError) as exc:
        return [{"status": "failed", "reason": one_line(exc), "device": device.name} for _ in jobs]
    out = []
    tmp = Path(tempfile.mkdtemp(prefix=f"modelpress-{device.name}-"))
    try:
        for i, (art, target, options, ref) in enumerate(jobs):
            out.append(_one(session, art, target, options, ref, settings, tmp, i))
            if log:
                log(f"[{device.name}] {Path(art.path).name} {target}: {out[-1]['status']}")
    finally:
        try:
            if not device.keep:
                session.transport.remove_tree(session.folder)
        except DeviceError:
            pass
        session.transport.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _one(session, art, target, options, ref, settings, tmp, i) -> dict[str, Any]:
    name = session.device.name
    if target not in REMOTE_TARGETS:
        why = f"{name}: target {target} does not run on remote devices (the runner carries {sorted(REMOTE_TARGETS)})"
        return {"status": "skipped", "reason": why, "device": name}
    missing = session.probe.missing(target, name)
    if missing:
        return {"status": "skipped", "reason": missing, "device": name}
    try:
        pool, labels = inputs_of(art)
        measured = run_remote(session, art, target, options, settings, pool, tmp, i)
        reference = np.load(ref, allow_pickle=False) if ref else None
        return to_record_fields(
            measured, target, labels, reference, settings["keep_samples"], session
        )
    except (DeviceError, ConfigError, OSError) as exc:
        return {"status": "failed", "reason": one_line(exc), "device": name}
