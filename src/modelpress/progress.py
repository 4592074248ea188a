"""Progress of long work (training epochs, artifacts built or measured), with an ETA.

One interface, two faces: on a terminal a live rich bar per task; elsewhere (CI logs, pipes,
files) plain lines, one per finished unit at most, no ANSI codes and no carriage returns. Plain
lines are rate-limited per task (``min_interval``: a 40-epoch training that takes 3 s prints a
handful of lines, not 40); the first and the last unit always print. Inside a unit that runs
long (a slow epoch, a slow build), :meth:`Task.partial` moves the live bar, and prints a plain
"still running" line at most every ``HEARTBEAT_S`` (30 s), so a log never goes silent for long.

>>> import io
>>> from modelpress.progress import reporter
>>> out = io.StringIO()                      # not a terminal: plain lines
>>> with reporter(True, out).task("train gru", total=2, unit="epoch") as task:
...     task.advance("val 0.91")
...     task.advance("val 0.95")
>>> print(out.getvalue().splitlines()[-1])  # doctest: +ELLIPSIS
  train gru: epoch 2/2: val 0.95; ... elapsed, done
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

HEARTBEAT_S = 30.0
ENV = "MODELPRESS_PROGRESS"  # plain | live | off: overrides the terminal check


def format_seconds(seconds: float) -> str:
    """``0.4 s``, ``12 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Task:
    """One piece of long work of ``total`` units; the null version does nothing."""

    def __init__(self, name: str, total: int, unit: str = "step"):
        self.name, self.total, self.unit = name, max(1, int(total)), unit
        self.done = 0
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self, fraction: float = 0.0) -> float | None:
        """Seconds left at the mean pace so far (``fraction`` of the current unit done)."""
        done = self.done + fraction
        if done <= 0:
            return None
        return self.elapsed() / done * max(0.0, self.total - done)

    def advance(self, message: str = "", final: bool = False) -> None:
        """One unit finished; ``final`` when the work stops here (before ``total``: early stop)."""
        self.done = min(self.total, self.done + 1)

    def partial(self, fraction: float, message: str = "") -> None:
        """Progress inside the current unit (0..1): batches of a slow epoch, a slow build."""

    def close(self) -> None:
        """End the task (also on error); prints the last unit if rate limiting held it back."""

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PlainTask(Task):
    """Plain lines: ``  <name>: <unit> i/n: <message>; <elapsed> elapsed, ETA <eta>``."""

    def __init__(self, stream: TextIO, name: str, total: int, unit: str, min_interval: float):
        super().__init__(name, total, unit)
        self.stream, self.min_interval = stream, min_interval
        self.last_line = self.start
        self.held: str | None = None  # the last unit's line, when rate limiting held it back

    def _write(self, line: str) -> None:
        clean = "".join(c if c.isprintable() else " " for c in line)  # no ANSI, no \r
        self.stream.write(clean + "\n")
        self.stream.flush()
        self.last_line = time.perf_counter()
        self.held = None

    def _line(self, message: str, fraction: float = 0.0, final: bool = False) -> str:
        where = f"{self.unit} {self.done}/{self.total}"
        if fraction:
            where = f"{self.unit} {self.done + 1}/{self.total}"
        head = f"  {self.name}: {where}" + (f": {message}" if message else "")
        if final:
            return f"{head}; {format_seconds(self.elapsed())} elapsed, done"
        eta = self.eta(fraction)
        left = format_seconds(eta) if eta is not None else "?"
        return f"{head}; {format_seconds(self.elapsed())} elapsed, ETA {left}"

    def advance(self, message: str = "", final: bool = False) -> None:
        super().advance(message, final)
        final = final or self.done >= self.total
        line = self._line(message, final=final)
        due = time.perf_counter() - self.last_line >= self.min_interval
        if final or due or self.done == 1:
            self._write(line)
        else:
            self.held = line

    def partial(self, fraction: float, message: str = "") -> None:
        if time.perf_counter() - self.last_line >= HEARTBEAT_S:
            self._write(self._line(message or "running", fraction=max(fraction, 1e-9)))

    def close(self) -> None:
        if self.held is not None:
            self._write(self.held)


# The live rich display and how many tasks use it: nested tasks share it (rich allows one live
# display per process; while it runs, sys.stdout is its proxy, so it cannot be keyed by stream).
_LIVE: list[Any] = [None, 0]
_LIVE_LOCK = threading.Lock()  # builds of several (model, target) pairs run in threads


def _live_display(stream: TextIO) -> Any:
    """The rich Progress that every live task of this process shows its bar in."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("  [bold]{task.fields[name]}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=False,
    )


class RichTask(Task):
    """A live bar with elapsed time and ETA on a terminal."""

    def __init__(self, stream: TextIO, name: str, total: int, unit: str):
        super().__init__(name, total, unit)
        with _LIVE_LOCK:
            slot = _LIVE
            if slot[0] is None:
                slot[0] = _live_display(stream)
                slot[0].start()
            slot[1] += 1
            self.slot, self.progress = slot, slot[0]
            self.id = self.progress.add_task("", total=self.total, name=name, unit=unit)
        self.closed = False

    def advance(self, message: str = "", final: bool = False) -> None:
        super().advance(message, final)
        total = self.done if final else self.total
        self.progress.update(self.id, completed=self.done, total=total, description=message)

    def partial(self, fraction: float, message: str = "") -> None:
        done = self.done + min(max(fraction, 0.0), 1.0)
        self.progress.update(self.id, completed=done, description=message)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with _LIVE_LOCK:
            self.slot[1] -= 1
            if self.slot[1] == 0:
                self.progress.stop()
                self.slot[0] = None


class Reporter:
    """Makes tasks: plain lines, live bars, or nothing (``kind`` = plain | tty | null)."""

    def __init__(self, kind: str = "null", stream: TextIO | None = None):
        self.kind, self.stream = kind, stream

    def task(self, name: str, total: int, unit: str = "step", min_interval: float = 0.0) -> Task:
        """A task of ``total`` units; plain lines at most every ``min_interval`` seconds."""
        if self.kind == "plain":
            return PlainTask(self.stream, name, total, unit, min_interval)
        if self.kind == "tty":
            return RichTask(self.stream, name, total, unit)
        return Task(name, total, unit)


def reporter(enabled: bool | Reporter = True, stream: TextIO | None = None) -> Reporter:
    """Live bars when ``stream`` (default: ``sys.stdout`` now) is a terminal, plain lines when
    it is not, nothing when ``enabled`` is False; a Reporter passed in is returned as it is.

    ``MODELPRESS_PROGRESS=plain|live|off`` overrides the terminal check (a CI that fakes a
    terminal, or worker processes that share their parent's terminal: ``plain``)."""
    if isinstance(enabled, Reporter):
        return enabled
    forced = os.environ.get(ENV, "").strip().lower()
    if not enabled or forced == "off":
        return Reporter("null")
    stream = stream if stream is not None else sys.stdout
    tty = getattr(stream, "isatty", None)
    live = forced == "live" or (forced != "plain" and callable(tty) and tty())
    return Reporter("tty" if live else "plain", stream)


class WorkerProgress:
    """Per-artifact progress of one worker process's jobs, fed by its events (see
    :func:`modelpress.measure.bench.run_worker`): ``artifact i/n: <name> <verb> (x s)`` with an ETA.

    A job is counted once, whether its ``done`` event came or (the worker died) only its result.
    """

    def __init__(self, rep: Reporter, title: str, names: list[str], verb: str):
        self.names, self.verb = names, verb
        self.task = rep.task(title, len(names), "artifact")
        self.counted: set[int] = set()

    def event(self, ev: dict[str, Any]) -> None:
        i = ev.get("index")
        if not isinstance(i, int) or not 0 <= i < len(self.names):
            return
        if ev.get("event") == "start":
            self.task.partial(0.0, f"{self.names[i]} ...")
        elif ev.get("event") == "done":
            self.finish(i, str(ev.get("status", "")), ev.get("seconds"))

    def finish(self, i: int, status: str, seconds: float | None = None) -> None:
        if i in self.counted:
            return
        self.counted.add(i)
        what = self.verb if status == "ok" else status or "failed"
        took = f" ({format_seconds(seconds)})" if isinstance(seconds, int | float) else ""
        self.task.advance(f"{self.names[i]} {what}{took}")

    def __enter__(self) -> WorkerProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.task.close()
