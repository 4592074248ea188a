"""Search trials on a Ray cluster whose worker node shares no files with the driver.

The by-value transport and the host-aware stage-cache sweep are checked on their own (no Ray
needed). The cluster test starts two Ray nodes on this machine: a head with no CPUs, and a
worker node that alone offers the ``trial`` resource the tasks ask for
(``MODELPRESS_RAY_OPTIONS``), with its own temporary folders. Both nodes see one filesystem
here, so every Python process of the worker node gets an audit hook that fails any file
operation under the driver's run folder: a trial that reads or writes a path of the driver
fails the test, as it would fail on a cluster without a shared filesystem.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelpress import stages
from modelpress.artifact import Artifact
from modelpress.data.base import DataBundle, InputSpec, Split
from modelpress.errors import ArtifactError, ConfigError
from modelpress.run import run
from modelpress.run.search_trials import ray_task_options
from modelpress.run.stages import StageCache
from modelpress.run.trial_transport import (
    adopt_stages,
    local_artifact,
    pack_artifact,
    pack_code,
    pack_data,
    pack_stages,
    relative_artifact,
    unpack_artifact,
    unpack_code,
    unpack_data,
)

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:  # the optional 'ray' extra
    ray = None

needs_ray = pytest.mark.skipif(
    ray is None, reason="Ray is the optional 'ray' extra: pip install 'modelpress[ray]'"
)

# -- the transport and the sweep, without Ray -----------------------------------------------------


def test_artifact_files_travel_with_it(tmp_path):
    src = tmp_path / "driver" / "build-1"
    src.mkdir(parents=True)
    (src / "m.onnx").write_bytes(b"graph")
    (src / "m.onnx.data").write_bytes(b"weights")
    art = Artifact(
        path=src / "m.onnx",
        format="onnx",
        id="abc",
        meta={"precision": "fp32"},
        files=(src / "m.onnx", src / "m.onnx.data"),
    )
    here = unpack_artifact(pack_artifact(art), tmp_path / "node")
    assert here.path == tmp_path / "node" / "m.onnx" and (here.id, here.meta) == (art.id, art.meta)
    assert [f.read_bytes() for f in here.files] == [b"graph", b"weights"]

    (src / "m.onnx.data").unlink()
    with pytest.raises(ArtifactError, match="not on disk"):
        pack_artifact(art)
    evil = {"artifact": {"path": "m", "format": "onnx", "id": "x"}, "files": {"../m": b""}}
    with pytest.raises(ArtifactError, match="leaves its folder"):
        unpack_artifact(evil, tmp_path / "node2")


def test_data_set_travels_as_its_arrays():
    rng = np.random.default_rng(0)
    splits = {
        s: Split(rng.standard_normal((n, 1, 4, 4)).astype(np.float32), np.arange(n) % 3)
        for s, n in (("train", 12), ("val", 3), ("test", 6))
    }
    data = DataBundle(
        name="tiny",
        labels=["a", "b", "c"],
        input_spec=InputSpec("image", (1, 4, 4), "float32"),
        preprocessing={"data_config": {"name": "npz", "root": "/driver/only.npz"}},
        **splits,
    )
    packed = pack_data(data)
    for s in splits:  # arrays from Ray's object store are read-only: the copies are not
        packed["splits"][s]["x"].flags.writeable = False
    back = unpack_data(packed)
    for s in splits:
        assert np.array_equal(getattr(back, s).x, getattr(data, s).x)
        assert np.array_equal(getattr(back, s).y, getattr(data, s).y)
        assert getattr(back, s).x.flags.writeable
    assert (back.name, back.labels, back.input_spec) == (data.name, data.labels, data.input_spec)
    assert back.preprocessing == data.preprocessing
    assert np.array_equal(back.calibration(6), data.calibration(6))


def test_factory_sources_travel_installed_modules_do_not(tmp_path, monkeypatch):
    folder = tmp_path / "recipe"
    (folder / "mp_pkg_nets").mkdir(parents=True)
    (folder / "mp_pkg_nets" / "__init__.py").write_text("")
    (folder / "mp_pkg_nets" / "small.py").write_text("def build():\n    return 1\n")
    (folder / "mp_flat_net.py").write_text("def build():\n    return 2\n")
    monkeypatch.syspath_prepend(str(folder))
    trust = {
        "pythonpath": [str(folder)],
        "factories": ["mp_pkg_nets.small:build", "mp_flat_net:build", "json:loads"],
    }
    packed = pack_code(trust)
    assert sorted(packed["files"]) == [
        "mp_flat_net.py",
        "mp_pkg_nets/__init__.py",
        "mp_pkg_nets/small.py",
    ]
    here = unpack_code(packed, tmp_path / "node" / "code")
    assert here == {
        "pythonpath": [str(tmp_path / "node" / "code")],
        "factories": trust["factories"],
    }
    assert (tmp_path / "node" / "code" / "mp_pkg_nets" / "small.py").read_text().startswith("def")
    for name in ("mp_pkg_nets.small", "mp_pkg_nets", "mp_flat_net"):
        sys.modules.pop(name, None)


def test_finished_stages_are_adopted_once(tmp_path):
    node = StageCache(tmp_path / "node", log=lambda s: None)

    def build(tmp: Path) -> dict:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "m.onnx").write_bytes(b"built")
        art = Artifact(
            path=tmp / "sub" / "m.onnx", format="onnx", id="i1", files=(tmp / "sub" / "m.onnx",)
        )
        return {"artifact": stages.artifact_to_manifest(art, tmp)}

    folder, man = node.run("build", "k1", build)
    sent = relative_artifact(
        stages.artifact_from_manifest(man["artifact"], folder).to_dict(), node.root
    )
    driver = StageCache(tmp_path / "driver", log=lambda s: None)
    adopt_stages(driver, pack_stages(node.root))
    got = Artifact.from_dict(local_artifact(sent, driver))
    assert got.path == tmp_path / "driver" / "build-k1" / "sub" / "m.onnx"
    assert got.path.read_bytes() == b"built" and got.files == (got.path,)
    assert driver.lookup("build", "k1") is not None  # a later run finds it
    got.path.write_bytes(b"kept")
    adopt_stages(driver, pack_stages(node.root))  # a stage the cache holds is kept
    assert got.path.read_bytes() == b"kept"
    bad = {"stage": "../build", "key": "k2", "manifest": {}, "files": {}}
    with pytest.raises(ArtifactError, match="letters, digits"):
        adopt_stages(driver, [bad])


def test_sweep_removes_only_this_hosts_dead_temp_folders(tmp_path):
    cache = StageCache(tmp_path, log=lambda s: None)
    assert cache.begin("build", "k").name == f".build-k.{os.getpid()}@{stages._HOST}.tmp"
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(done.stdout)  # a process that has ended
    names = {
        "mine_dead": f".build-a.{dead}@{stages._HOST}.tmp",
        "mine_alive": f".build-b.{os.getpid()}@{stages._HOST}.tmp",
        "other_host": f".build-c.{dead}@another-node.example.tmp",
        "no_host_dead": f".build-d.{dead}.tmp",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    cache.sweep()
    left = {k for k, name in names.items() if (tmp_path / name).exists()}
    assert left == {"mine_alive", "other_host"}


def test_ray_task_options_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("MODELPRESS_RAY_OPTIONS", '{"resources": {"trial": 1}}')
    assert ray_task_options() == {"num_cpus": 1, "resources": {"trial": 1}}
    monkeypatch.setenv("MODELPRESS_RAY_OPTIONS", "[1]")
    with pytest.raises(ConfigError, match="JSON object"):
        ray_task_options()


# -- trials on a two-node Ray cluster -------------------------------------------------------------

RECIPE = """\
name: search-ray
data: {name: digits, calibration: 32}
models:
  cnn: {model: resnet8, width: 0.25, train: {epochs: 1}}
targets:
  torch: {precisions: [fp32], variants: [compressed]}  # no chain: the results table stays empty
search:
  max_drop: 100.0
  objective: bytes
  prune_ratios: [0.0, 0.5]
  precisions: [int8]
  keep_float: [0]
  workers: 2
  recovery_epochs: 1
benchmark: {batch_sizes: [1], min_calls: 3, min_seconds: 0.0, warmup_calls: 1, warmup_seconds: 0.0}
"""

FORBID = "MODELPRESS_TEST_FORBID"
# sitecustomize of the worker node's processes (Ray workers and the build processes they start)
AUDIT_HOOK = f"""\
import os, sys

_root = os.environ.get({FORBID!r})
if _root:
    _root = os.path.realpath(_root)
    _events = {{"open", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.listdir",
               "os.scandir", "shutil.rmtree", "os.replace"}}

    def _forbid(event, args):
        if event not in _events:
            return
        for a in args[:2]:
            if isinstance(a, (str, bytes, os.PathLike)):
                p = os.path.realpath(os.fsdecode(a))
                if p == _root or p.startswith(_root + os.sep):
                    raise PermissionError(f"a trial touched the driver's run folder: {{p}}")

    sys.addaudithook(_forbid)
"""


@pytest.fixture(scope="module")
def cluster():
    """Head (0 CPUs) + a worker node with the ``trial`` resource; each its own temp folders."""
    tempfile.gettempdir()  # fix this process's temp folder before TMPDIR changes below
    root = Path(tempfile.mkdtemp(prefix="mpray"))  # short: Ray's socket paths must stay short
    head_tmp, node_tmp, trial_tmp = root / "h", root / "n", root / "t"
    for d in (head_tmp, node_tmp, trial_tmp):
        d.mkdir()
    # the head writes its address to <Ray's default temp dir>/ray/ray_current_cluster whatever
    # its temp_dir: point that default here, where the folder exists (a fresh machine has no
    # /tmp/ray, and the write failed there)
    (root / "r" / "ray").mkdir(parents=True)
    c = Cluster()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RAY_TMPDIR", str(root / "r"))
            c.add_node(num_cpus=0, temp_dir=str(head_tmp), include_dashboard=False)
        with pytest.MonkeyPatch.context() as env:  # inherited by the node's raylet and workers
            env.setenv("TMPDIR", str(trial_tmp))
            c.add_node(num_cpus=2, resources={"trial": 2}, temp_dir=str(node_tmp))
        yield c, trial_tmp
    finally:
        ray.shutdown()
        c.shutdown()
        shutil.rmtree(root, ignore_errors=True)


def _connect(c, hook_dir: Path, forbidden: Path) -> None:
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {"PYTHONPATH": str(hook_dir), FORBID: str(forbidden), "OMP_NUM_THREADS": "1"}
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=c.address, log_to_driver=False, runtime_env={"env_vars": env})


def _guard_says(path: Path) -> list[str]:
    """What a process of the worker node, and a child it starts, say when asked to read
    ``path`` (defined here so that Ray sends the function by value)."""

    def touch(path: str) -> list[str]:
        said = []
        try:
            Path(path).read_text()
            said.append("read")
        except PermissionError as exc:
            said.append(str(exc))
        child = subprocess.run(
            [sys.executable, "-P", "-c", f"open({path!r})"], capture_output=True, text=True
        )
        said.append(child.stderr.strip().splitlines()[-1] if child.returncode else "read")
        return said

    return ray.get(ray.remote(num_cpus=1, resources={"trial": 1})(touch).remote(str(path)))


def _trials(out: Path) -> list[dict]:
    return json.loads((out / "search.json").read_text())["trials"]


def _forget_trials(cache: Path) -> None:
    """Remove the stages of the search's trials (prune, ONNX Runtime builds and measurements):
    a run then prepares and measures them again, finding the float model in the cache."""
    for folder in cache.iterdir():
        manifest = json.loads((folder / "stage.json").read_text())
        kind = folder.name.split("-")[0]
        built = manifest.get("artifact", {}).get("format") == "onnx"
        measured = manifest.get("record", {}).get("target") == "onnxruntime"
        if kind == "prune" or (kind == "build" and built) or (kind == "bench" and measured):
            shutil.rmtree(folder)


@needs_ray
def test_ray_trials_need_no_shared_filesystem(cluster, tmp_path, monkeypatch):
    c, trial_tmp = cluster
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # pool and Ray workers alike: the same numbers
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "out"
    recipe.write_text(textwrap.dedent(RECIPE))
    run(recipe, out=out, log=lambda s: None)  # the local process pool
    local = _trials(out)
    _forget_trials(out / "cache")

    (out / "probe.txt").write_text("the driver's")
    _connect(c, tmp_path / "hook", out)
    said = _guard_says(out / "probe.txt")
    assert all("driver's run folder" in s for s in said), said  # the guard is armed

    monkeypatch.setenv("MODELPRESS_RAY_OPTIONS", json.dumps({"resources": {"trial": 1}}))
    logged: list[str] = []
    run(recipe, out=out, log=logged.append, ray=c.address)
    assert "[search] cnn: 2 ratio(s) on Ray, 0 cached" in logged

    mine = _trials(out)
    assert [(t["prune_ratio"], t["precision"], t["status"]) for t in mine] == [
        (t["prune_ratio"], t["precision"], t["status"]) for t in local
    ]
    assert all(t["status"] == "ok" for t in mine), [t["reason"] for t in mine]
    for a, b in zip(mine, local):  # the same models: same ids, accuracy on the runtime, bytes
        assert a["accuracy_drop"] == pytest.approx(b["accuracy_drop"], abs=1e-9)
        assert a["size_bytes"] == b["size_bytes"] and a["artifact"] == b["artifact"]
        built = Path(a["artifact"])
        assert built.is_file() and built.is_relative_to(out / "cache"), built
    assert not list(trial_tmp.glob("modelpress-trial-*"))  # each task removed its folder

    logged.clear()  # a second run finds every trial in the driver's stage cache
    again = run(recipe, out=out, log=logged.append, ray=c.address)
    assert "[search] cnn: 0 ratio(s) on Ray, 2 cached" in logged
    assert again.cache_misses == 0 and _trials(out) == mine
