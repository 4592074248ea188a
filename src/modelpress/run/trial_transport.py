"""Search trials on nodes that share no filesystem with the driver: everything travels by value.

A Ray task of the search (:func:`modelpress.run.search_trials.prepare_ratio_by_value`) gets its
inputs as plain values that Ray's object store carries to any node: the start artifact's files
(names and bytes), the data set's arrays (put once per model, shared by its tasks) and the source
files of the user's factory modules. The worker writes them into its own temporary folder, runs the trial
there with a stage cache of its own, and sends back every finished stage folder the same way;
the driver stores those in its own stage cache (a second run finds them there) and points the
trials at its copies. Nothing on either side names a path of the other.

>>> packed = pack_artifact(start)                                   # doctest: +SKIP
>>> here = unpack_artifact(packed, Path(tmp) / "start")             # the same model, local files
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..data.base import DataBundle, InputSpec, Split
from ..errors import ArtifactError
from .stages import MANIFEST, StageCache, artifact_from_manifest, artifact_to_manifest

Packed = dict[str, Any]  # JSON-able values, bytes and numpy arrays only
_NAME = re.compile(r"[A-Za-z0-9_]+")  # a stage's name or key: never a path
SPLITS = ("train", "val", "test")


# -- files ----------------------------------------------------------------------------------------


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write ``{relative name: bytes}`` under ``folder``; a name that leaves it is refused."""
    root = folder.resolve()
    for name, blob in files.items():
        dest = (root / name).resolve()
        if not dest.is_relative_to(root) or dest == root:
            raise ArtifactError(
                f"packed file name {name!r} leaves its folder {root}; expected a relative path "
                "inside it: the sender is broken, report it"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(blob)


def _read_files(base: Path, paths: list[Path]) -> dict[str, bytes]:
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in paths}


# -- artifacts ------------------------------------------------------------------------------------


def _artifact_files(art: Artifact) -> tuple[Path, list[Path]]:
    """(the folder every file of ``art`` is under, those files)."""
    path = Path(art.path)
    files = {Path(f) for f in art.files}
    if path.is_dir():
        files |= {p for p in path.rglob("*") if p.is_file()}
        anchors = [path, *(f.parent for f in files)]
    else:
        files.add(path)
        anchors = [f.parent for f in files]
    missing = sorted(str(f) for f in files if not f.is_file())
    if missing:
        raise ArtifactError(
            f"artifact {art.id} lists files that are not on disk ({', '.join(missing)}); "
            "run again without the cache (--no-cache) to rebuild it"
        )
    return Path(os.path.commonpath(anchors)), sorted(files)


def pack_artifact(art: Artifact) -> Packed:
    """An artifact and the bytes of all its files (checkpoint, model, sidecars, external data)."""
    base, files = _artifact_files(art)
    return {"artifact": artifact_to_manifest(art, base), "files": _read_files(base, files)}


def unpack_artifact(packed: Packed, folder: Path) -> Artifact:
    """Write a packed artifact's files under ``folder``; the artifact pointing at them."""
    _write_files(folder, packed["files"])
    return artifact_from_manifest(packed["artifact"], folder)


# -- data -----------------------------------------------------------------------------------------


def pack_data(data: DataBundle) -> Packed:
    """A loaded data set as arrays and JSON-able values (no file of the driver is named for
    reading: ``preprocessing`` travels only as the metadata artifacts carry)."""
    return {
        "name": data.name,
        "labels": list(data.labels),
        "input_spec": data.input_spec.to_dict(),
        "preprocessing": data.preprocessing,
        "splits": {s: {"x": getattr(data, s).x, "y": getattr(data, s).y} for s in SPLITS},
    }


def unpack_data(packed: Packed) -> DataBundle:
    """The data set again; arrays are copied (those from Ray's object store are read-only)."""
    splits = {s: Split(np.array(v["x"]), np.array(v["y"])) for s, v in packed["splits"].items()}
    return DataBundle(
        name=packed["name"],
        labels=list(packed["labels"]),
        input_spec=InputSpec.from_dict(packed["input_spec"]),
        preprocessing=dict(packed["preprocessing"]),
        **splits,
    )


# -- the user's factory modules -------------------------------------------------------------------


def _module_files(module: str) -> list[Path]:
    """The source file of ``module`` and of each package above it (``__init__.py``)."""
    parts = module.split(".")
    out = []
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        loaded = sys.modules.get(name)
        origin = getattr(loaded, "__file__", None)
        if origin is None and loaded is None:
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec is not None and spec.has_location else None
        if origin and origin.endswith(".py"):
            out.append(Path(origin).resolve())
    return out


def pack_code(trust: dict[str, list[str]]) -> Packed:
    """The factories the driver trusts and the source of those kept in its trusted folders (a
    module installed in the environment is not sent: each node imports its own, as modelpress)."""
    folders = [Path(f).resolve() for f in trust.get("pythonpath", [])]
    files: dict[str, bytes] = {}
    for factory in trust.get("factories", []):
        for path in _module_files(factory.partition(":")[0]):
            base = next((f for f in folders if path.is_relative_to(f)), None)
            if base is not None:
                files[path.relative_to(base).as_posix()] = path.read_bytes()
    return {"factories": list(trust.get("factories", [])), "files": files}


def unpack_code(packed: Packed, folder: Path) -> dict[str, list[str]]:
    """Write the factory sources under ``folder``; the trust record that names it (the form of
    :attr:`modelpress.run.pipeline.Pipeline.trust`)."""
    _write_files(folder, packed["files"])
    factories = list(packed["factories"])
    return {"pythonpath": [str(folder.resolve())] if factories else [], "factories": factories}


# -- finished stages ------------------------------------------------------------------------------


def pack_stages(root: Path) -> list[Packed]:
    """Every finished stage under a stage cache's ``root``: name, key, manifest, files."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        manifest = folder / MANIFEST
        if not manifest.is_file():
            continue
        stage, _, key = folder.name.rpartition("-")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p != manifest)
        out.append(
            {
                "stage": stage,
                "key": key,
                "manifest": json.loads(manifest.read_text()),
                "files": _read_files(folder, files),
            }
        )
    return out


def adopt_stages(cache: StageCache, stages: list[Packed]) -> None:
    """Store packed stages in ``cache`` (atomically, as if they had run here); a stage the cache
    already holds is kept."""
    for s in stages:
        if not (_NAME.fullmatch(s["stage"]) and _NAME.fullmatch(s["key"])):
            raise ArtifactError(
                f"a returned stage is named {s['stage']!r}-{s['key']!r}; expected letters, digits "
                "and '_' only: the worker is broken, report it"
            )
        if cache.lookup(s["stage"], s["key"]) is not None:
            continue
        tmp = cache.begin(s["stage"], s["key"])
        try:
            _write_files(tmp, s["files"])
            cache.commit(s["stage"], s["key"], tmp, s["manifest"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def relative_artifact(d: dict[str, Any], root: Path) -> dict[str, Any]:
    """An artifact dict with its paths relative to a stage cache's ``root`` (it lives in one of
    the cache's stage folders)."""
    return artifact_to_manifest(Artifact.from_dict(d), root)


def local_artifact(d: dict[str, Any], cache: StageCache) -> dict[str, Any]:
    """The artifact dict of :func:`relative_artifact` read back from ``cache``'s copy of its
    stage folder (the manifest there is the truth, whoever wrote it)."""
    name = Path(d["path"]).parts[0]
    folder = cache.root / name
    if not _NAME.fullmatch(name.replace("-", "_")) or not (folder / MANIFEST).is_file():
        raise ArtifactError(
            f"stage folder {folder} is not in the stage cache after the trial came back; "
            "run again (a concurrent clean may have removed it)"
        )
    manifest = json.loads((folder / MANIFEST).read_text())
    return artifact_from_manifest(manifest["artifact"], folder).to_dict()
