"""The header every results file under benchmarks/results/ starts with: command, time, machine, load.

A benchmark script wraps its measuring part and puts the header lines under its title; the
results file is then exactly what the script writes (never edit one by hand). The machine's
load is reported as numbers (load averages, processes running), never as an adjective:

    from machine import measuring                    # benchmarks/ is sys.path[0] for a script

    with measuring(__file__, argv) as measured:      # argv None: sys.argv[1:]
        rows = measure_everything()
    text = "\\n".join(["# Title", "", *measured.header_lines(), "", *rows])
"""

from __future__ import annotations

import os
import shlex
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from modelpress.errors import ConfigError
from modelpress.measure.bench import collect_environment

# what the benchmarks measure with, read from package metadata (nothing is imported)
LIBRARIES = (
    "modelpress",
    "numpy",
    "torch",
    "torch-pruning",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "litert-torch",
    "tensorrt",
)


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def running_processes(proc: Path = Path("/proc")) -> list[str] | None:
    """Names of the other processes with a thread in state R (running or runnable), from /proc.

    This process is left out. None where /proc is not readable (not Linux)."""
    if not (proc / "self" / "stat").is_file():
        return None
    names = []
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        name, states = None, set()
        for stat in pid_dir.glob("task/*/stat"):
            try:
                text = stat.read_text(errors="replace")
            except OSError:  # the thread or process ended while we read
                continue
            name = text[text.find("(") + 1 : text.rfind(")")]
            states.add(text[text.rfind(")") + 2 : text.rfind(")") + 3])
        if "R" in states and name is not None:
            names.append(name)
    return sorted(names)


class LoadSampler:
    """Samples the 1-minute load average every ``interval_s`` seconds on a daemon thread.

    The first sample is taken at :meth:`start`; :meth:`stop` ends the thread and waits for it."""

    def __init__(self, interval_s: float = 2.0) -> None:
        if interval_s <= 0:
            raise ConfigError(f"load sampling interval {interval_s} s; expected > 0 s")
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5.0)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            value = load_average()
            if value is not None:
                self.samples.append(value)
            if self._stop.wait(self.interval_s):
                return


class Measurement:
    """Command, start/end time (UTC), machine and load of one benchmark run.

    Use it as a context manager around the measuring part, or call :meth:`start` and
    :meth:`finish`; then :meth:`header_lines` gives the markdown lines for the results file."""

    def __init__(
        self,
        script: str | os.PathLike[str] | None = None,
        argv: Sequence[str] | None = None,
        interval_s: float = 2.0,
    ) -> None:
        args = list(sys.argv[1:] if argv is None else argv)
        name = Path(script or sys.argv[0]).name
        self.command = " ".join(["python", f"benchmarks/{name}", *map(shlex.quote, args)])
        self.sampler = LoadSampler(interval_s)
        self.started: datetime | None = None
        self.finished: datetime | None = None
        self._t0 = self._t1 = 0.0
        self.load_start = self.load_end = None
        self.running_start = self.running_end = None

    def start(self) -> Measurement:
        self.running_start = running_processes()
        self.load_start = load_average()
        self.started, self._t0 = datetime.now(timezone.utc), time.perf_counter()
        self.sampler.start()
        return self

    def finish(self) -> None:
        self.sampler.stop()
        self._t1, self.finished = time.perf_counter(), datetime.now(timezone.utc)
        self.load_end = load_average()
        self.running_end = running_processes()

    def __enter__(self) -> Measurement:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.finish()

    @property
    def wall_s(self) -> float:
        return self._t1 - self._t0

    def header_lines(self) -> list[str]:
        """Markdown list lines: command, time, machine, libraries, load while measuring."""
        if self.started is None or self.finished is None:
            raise ConfigError("benchmark header asked before the run finished; call finish() first")
        env = collect_environment()
        fingerprint = getattr(env, "machine_id", None)
        versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
        return [
            f"- Command: `{self.command}`",
            f"- Run: {self.started:%Y-%m-%d %H:%M:%S} to {self.finished:%Y-%m-%d %H:%M:%S} UTC "
            f"({self.wall_s:.{0 if self.wall_s >= 10 else 1}f} s wall)",
            f"- Machine: {env.cpu_model}, {env.usable_cores} usable of {env.logical_cores} logical "
            f"cores, {env.platform}, Python {env.python}"
            + (f", fingerprint {fingerprint}" if fingerprint else "")
            + "".join(f", {k}={v}" for k, v in sorted(env.env.items())),
            f"- Libraries: {versions or 'none found'}",
            f"- Load while measuring (1-minute load average, this run's own threads included): "
            f"{self.load_text()}",
            "- Other processes running (a thread in state R in /proc): "
            f"{_running_text(self.running_start)} at start, {_running_text(self.running_end)} at end",
        ]

    def load_text(self) -> str:
        """The load average's numbers (no adjectives: the reader judges)."""
        samples = self.sampler.samples
        if self.load_start is None or self.load_end is None or not samples:
            return "unavailable on this platform"
        return (
            f"{self.load_start:.2f} at start, {self.load_end:.2f} at end; mean "
            f"{statistics.mean(samples):.2f} and max {max(samples):.2f} over {len(samples)} "
            f"samples taken every {self.sampler.interval_s:g} s"
        )


def measuring(
    script: str | os.PathLike[str] | None = None,
    argv: Sequence[str] | None = None,
    interval_s: float = 2.0,
) -> Measurement:
    """A :class:`Measurement` of ``script`` (default ``sys.argv[0]``) run with ``argv`` (default
    ``sys.argv[1:]``); use it as ``with measuring(__file__, argv) as measured: ...``."""
    return Measurement(script, argv, interval_s)


def model_names(parser, text: str, known) -> list[str]:
    """The comma list ``text`` of model names, or ``parser.error`` (one line, exit 2) naming the
    unknown ones and the choices."""
    names = [n for n in text.split(",") if n]
    unknown = sorted(set(names) - set(known))
    if unknown or not names:
        parser.error(f"unknown or no model(s) {unknown}; choose from {', '.join(known)}")
    return names


def write_results(out: Path, title: str, measured: Measurement, body: Sequence[str]) -> str:
    """``# title``, the header lines and ``body`` written atomically to ``out`` (its folder made
    if needed), printed, and returned."""
    from modelpress.fsutil import atomic_write_text

    text = "\n".join([f"# {title}", "", *measured.header_lines(), "", *body, ""])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    print(text)
    return text


def library_versions(libraries: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``libraries`` (package metadata); missing ones are left out."""
    versions = {}
    for lib in libraries:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _running_text(names: list[str] | None) -> str:
    if names is None:
        return "unknown (no /proc)"
    counts = Counter(names).most_common()
    shown = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in counts[:5])
    shown += ", ..." if len(counts) > 5 else ""
    return f"{len(names)}" + (f" ({shown})" if names else "")
