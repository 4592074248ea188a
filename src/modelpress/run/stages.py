"""Resumable stages: each stage's output lives in a folder named by its cache key.

The key hashes (input artifact id, stage name, stage config, toolkit version). A stage writes
into a temporary folder; only when everything is written does its manifest (``stage.json``) go
in and the folder get renamed to its final name — one atomic rename. A run killed at any point
(SIGKILL included) leaves at most a temporary folder, which the next run removes and redoes; a
finished stage is never redone.

Paths in a manifest are relative to the stage folder, so the rename does not invalidate them.

``MODELPRESS_FAULT=kill:<stage>`` kills the process with SIGKILL inside that stage, after its
files are written and before its manifest: the fault the resume tests inject.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifact import Artifact, stage_id
from ..fsutil import atomic_write_text

MANIFEST = "stage.json"


class StageMissing(Exception):
    """A stage is not in the cache (raised only under :meth:`StageCache.only_lookups`)."""


def fault_point(stage: str) -> None:
    """Test hook: SIGKILL this process when MODELPRESS_FAULT=kill:<stage> names this stage."""
    fault = os.environ.get("MODELPRESS_FAULT", "")
    if fault.startswith("kill:") and fault[5:] == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def artifact_to_manifest(art: Artifact, folder: Path) -> dict[str, Any]:
    """An artifact's dict with its paths made relative to ``folder``."""
    d = art.to_dict()
    d["path"] = os.path.relpath(art.path, folder)
    d["files"] = [os.path.relpath(f, folder) for f in art.files]
    return d


def artifact_from_manifest(d: dict[str, Any], folder: Path) -> Artifact:
    d = dict(d)
    d["path"] = str(folder / d["path"])
    d["files"] = [str(folder / f) for f in d.get("files", [])]
    return Artifact.from_dict(d)


class StageCache:
    """Runs stages at most once per key under ``root``."""

    def __init__(self, root: Path, log: Callable[[str], None] = print, enabled: bool = True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self.dry = False  # see :meth:`only_lookups`
        self.sweep()

    def key(self, stage: str, parent_id: str, config: dict[str, Any]) -> str:
        return stage_id(parent_id, stage, {**config, "toolkit": __version__})

    @contextmanager
    def only_lookups(self) -> Iterator[None]:
        """Within this block :meth:`run` builds nothing: a missing stage raises StageMissing
        (nothing is logged or counted). Tells whether a chain of stages is all cached."""
        self.dry = True
        try:
            yield
        finally:
            self.dry = False

    def sweep(self) -> None:
        """Remove temporary folders of runs of this host that are no longer alive.

        A folder another host made (a cache on a shared filesystem) is left alone: its process
        id means nothing here, so it is neither removed nor taken as alive."""
        for tmp in self.root.glob(".*.tmp"):
            pid, host = _temp_owner(tmp.name)
            if host is not None and host != _HOST:
                continue
            if not pid.isdigit() or not _alive(int(pid)):
                shutil.rmtree(tmp, ignore_errors=True)

    def lookup(self, stage: str, key: str) -> tuple[Path, dict[str, Any]] | None:
        """(folder, manifest) of a finished stage, or None."""
        final = self.root / f"{stage}-{key}"
        if self.enabled and (final / MANIFEST).is_file():
            return final, json.loads((final / MANIFEST).read_text())
        return None

    def begin(self, stage: str, key: str) -> Path:
        """A fresh temporary folder for the stage's files."""
        tmp = self.root / f".{stage}-{key}.{os.getpid()}@{_HOST}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit(
        self, stage: str, key: str, tmp: Path, result: dict[str, Any], replace: bool = False
    ) -> tuple[Path, dict[str, Any]]:
        """Write the manifest and rename the folder into place (atomic); the fault hook fires first.

        ``replace``: this result supersedes a finished one under the same key (a fresh
        measurement); otherwise a finished one wins (a parallel worker got there first)."""
        fault_point(stage)
        final = self.root / f"{stage}-{key}"
        atomic_write_text(tmp / MANIFEST, json.dumps(result, indent=2, default=str))
        done = None if replace else self.lookup(stage, key)
        if done is not None:  # a parallel worker finished the same stage first
            shutil.rmtree(tmp, ignore_errors=True)
            return done
        if final.exists():  # a stale copy (cache disabled, or no manifest): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        return final, result

    def run(
        self, stage: str, key: str, build: Callable[[Path], dict[str, Any]], label: str = ""
    ) -> tuple[Path, dict[str, Any]]:
        """The stage's folder and manifest; ``build(tmp_folder)`` runs only on a cache miss."""
        what = f"{stage} {label}".strip()
        done = self.lookup(stage, key)
        if self.dry:  # only asking whether everything is there
            if done is None:
                raise StageMissing(what)
            return done
        if done is not None:
            self.hits += 1
            self.log(f"  [cached] {what}")
            return done
        tmp = self.begin(stage, key)
        start = time.perf_counter()
        self.log(f"  [run]    {what} ...")
        try:
            done = self.commit(stage, key, tmp, build(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.misses += 1
        self.log(f"  [done]   {what} ({time.perf_counter() - start:.1f} s)")
        return done


_HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def _temp_owner(name: str) -> tuple[str, str | None]:
    """(process id, host) of a temporary folder ``.<stage>-<key>.<pid>@<host>.tmp``; host None
    for a folder named without one (``.<stage>-<key>.<pid>.tmp``, older versions)."""
    owner, _, host = name.removesuffix(".tmp").rpartition("@")
    if not owner:  # no host in the name
        return name.rsplit(".", 2)[-2], None
    return owner.rsplit(".", 1)[-1], host


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
