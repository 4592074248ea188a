"""The versioned results file written by ``modelpress bench`` and read by ``report`` and ``gate``.

One :class:`Record` per (artifact, target): status ``ok``, ``failed`` (with the reason) or
``skipped`` (the runtime is unavailable here, with the reason). Latency keeps the raw per-call
samples (microseconds, in call order), because regressions are judged on distributions.

Schema history: version 1 is the first. A file of another version, or one that does not match
the schema, is refused with a one-line :class:`~modelpress.errors.ConfigError` (CLI exit 2).

>>> from modelpress.measure.results import load_results                 # doctest: +SKIP
>>> res = load_results("results.json")
>>> [(r.model, r.target, r.status) for r in res.records]
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, one_line
from ..fsutil import atomic_write_text
from ..userinput import key_path, walk

KIND = "modelpress.results"
SCHEMA_VERSION = 1
Status = Literal["ok", "failed", "skipped"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latency(_Strict):
    """Per-call latency at one batch size, warm-up excluded."""

    batch: int = Field(ge=1)
    calls: int = Field(ge=1)  # timed calls (all of them count in the percentiles)
    seconds: float = Field(ge=0)  # wall time of the timed loop
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput_sps: float  # samples per second: batch * calls / time spent in the calls
    samples_us: list[float]  # per-call latency in call order (every `sample_stride`-th call)
    sample_stride: int = Field(default=1, ge=1)
    warmup_calls: int = 0  # untimed calls made before the timed loop
    # GPU runtimes (TensorRT): the engine's device time alone (CUDA events), copies excluded;
    # the fields above are end to end, host to host, comparable across runtimes
    compute_p50_ms: float | None = None
    compute_p90_ms: float | None = None
    compute_p99_ms: float | None = None


class Validation(_Strict):
    """Accuracy and parity on the test split, measured on the runtime itself."""

    n: int
    accuracy: float
    agreement: float | None = None  # top-1 agreement with the float reference model
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None
    reference_accuracy: float | None = None
    accuracy_drop: float | None = None  # percentage points below the reference


class Record(_Strict):
    model: str  # registry name (resnet8, gru, ...)
    family: str = ""  # cnn | rnn | attention
    target: str
    precision: str
    status: Status
    reason: str = ""  # why failed or skipped; empty when ok
    artifact_id: str = ""
    artifact_path: str = ""
    format: str = ""
    dataset: str = ""
    size_bytes: int | None = None
    build_s: float | None = None
    load_s: float | None = None
    peak_rss_bytes: int | None = None  # high-water RSS of the worker process (VmHWM)
    rss_before_load_bytes: int | None = None  # the same, before the runtime was loaded
    threads: int | None = None
    runtime: dict[str, Any] = {}  # TargetInfo: runtime, version, device, threads, details
    latency: list[Latency] = []
    validation: Validation | None = None
    injected_slowdown: float = 0.0  # > 0 only in gate self-tests (see bench.BenchJob)
    # when and where this row was measured (kept as is when a run takes it from its cache)
    measured_at: str | None = None  # ISO 8601, UTC
    machine_id: str | None = None  # machine.machine_fingerprint().id of the measuring machine
    machine: str | None = None  # that machine in words: CPU, cores, OS, GPU
    # the device that measured it (a name from devices.yaml); None: this machine, in a worker
    device: str | None = None
    # short verdicts shown beside the row in tables and reports, e.g. "slower than fp32",
    # "over budget"; each is explained where it is set (passes.json, the report's sections)
    marks: list[str] = []

    @property
    def key(self) -> tuple[str, str, str, str | None]:
        return (self.model, self.target, self.precision, self.device)

    @property
    def label(self) -> str:
        where = f"@{self.device}" if self.device else ""
        return f"{self.model}/{self.target}/{self.precision}{where}"

    def latency_at(self, batch: int) -> Latency | None:
        return next((lat for lat in self.latency if lat.batch == batch), None)


class Environment(_Strict):
    cpu_model: str
    logical_cores: int
    usable_cores: int  # CPUs this process may run on (affinity / cgroup cpuset)
    platform: str
    python: str
    versions: dict[str, str]  # installed library versions (read from metadata, not imported)
    env: dict[str, str] = {}  # thread-related environment variables that were set
    machine_id: str | None = None  # fingerprint of this machine (compare Record.machine_id)


class Results(_Strict):
    kind: Literal["modelpress.results"] = KIND
    schema_version: int
    created: str  # ISO 8601, UTC
    environment: Environment
    settings: dict[str, Any] = {}
    records: list[Record]

    def find(
        self, model: str, target: str, precision: str, device: str | None = None
    ) -> Record | None:
        """The record of (model, target, precision) measured on ``device`` (None: locally)."""
        key = (model, target, precision, device)
        return next((r for r in self.records if r.key == key), None)


def new_results(
    environment: Environment, records: list[Record], settings: dict[str, Any]
) -> Results:
    """A results object of the current schema version, stamped now (UTC)."""
    return Results(
        schema_version=SCHEMA_VERSION,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        environment=environment,
        settings=settings,
        records=records,
    )


def save_results(results: Results, path: str | Path) -> Path:
    """Write ``results`` as JSON, atomically."""
    return atomic_write_text(path, results.model_dump_json(indent=1))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} is given twice in one object")
        out[key] = value
    return out


def load_results(path: str | Path, what: str = "results") -> Results:
    """Read and validate a results file; any problem is one ConfigError line naming the file and
    the key, line or byte offset (CLI exit 2)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist; write one with `modelpress bench`")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
        data = json.loads(text, object_pairs_hook=_no_duplicates)  # NaN: see _check_finite
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} file {path} is not valid JSON: byte offset {exc.start} is not UTF-8; "
            "re-run the bench"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{what} file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}, "
            f"character offset {exc.pos}: {exc.msg}); re-run the bench"
        ) from exc
    except (ValueError, RecursionError) as exc:  # a duplicate key, a huge or deep value
        raise ConfigError(f"{what} file {path} is not valid JSON: {exc}; re-run the bench") from exc
    return parse_results(data, f"{what} file {path}")


def parse_results(data: Any, where: str = "results") -> Results:
    """Validate a decoded results document (see :func:`load_results`)."""
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ConfigError(f"{where} is not a modelpress results file (no kind: {KIND!r})")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise ConfigError(
            f"{where} has schema_version {one_line(repr(version))[:40]}; this modelpress reads "
            f"version {SCHEMA_VERSION}: re-run `modelpress bench` with this version to regenerate it"
        )
    _check_finite(data, where)
    try:
        results = Results.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(
            f"{where} does not match results schema v{SCHEMA_VERSION} at {key_path(err['loc'])}: "
            f"{one_line(err['msg'])} ({exc.error_count()} problem(s)); regenerate it with "
            "`modelpress bench`"
        ) from exc
    _check_latency(results, where)
    return results


def _check_finite(data: Any, where: str) -> None:
    """Every number is finite (JSON's NaN and Infinity, and 1e999, which reads as infinity)."""
    for loc, value in walk(data):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(
                f"{where} has {value} at {key_path(loc)}: results hold finite numbers; "
                "regenerate it with `modelpress bench`"
            )


def _check_latency(results: Results, where: str) -> None:
    """What the gate and the report compute on: per-call samples, non-negative times."""
    for i, rec in enumerate(results.records):
        for j, lat in enumerate(rec.latency):
            loc = f"records.{i}.latency.{j}"
            if not lat.samples_us:
                raise ConfigError(
                    f"{where} has no per-call samples at {loc}.samples_us: a measured latency "
                    "keeps them; regenerate it with `modelpress bench`"
                )
            if min(lat.samples_us) <= 0:
                raise ConfigError(
                    f"{where} has a per-call time <= 0 at {loc}.samples_us: every call takes "
                    "time; regenerate it with `modelpress bench`"
                )
            times = {"p50_ms": lat.p50_ms, "p90_ms": lat.p90_ms, "p99_ms": lat.p99_ms}
            negative = next((k for k, v in times.items() if v < 0), None)
            if negative is not None:
                raise ConfigError(
                    f"{where} has a negative time at {loc}.{negative}: "
                    "regenerate it with `modelpress bench`"
                )
