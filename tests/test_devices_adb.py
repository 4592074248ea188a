"""The adb transport (adbutils) against a loopback adb server on 127.0.0.1 (tests/adb_server.py:
the adb host protocol, shell v1/v2 and sync, in front of a folder of this machine), with a torch-free
Python as the device's: the same records as a local measurement, and one-line reasons otherwise."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from modelpress.devices.spec import LOCAL_DEVICE, Device
from modelpress.errors import DeviceError
from modelpress.measure.bench import BenchJob, benchmark
from tests.adb_server import AdbServer
from tests.devices_env import fast_settings, light_python, tiny_resnet

pytest.importorskip("adbutils")

FAST = fast_settings()
SERIAL = "LOOPBACK01"


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    srv = AdbServer(tmp_path_factory.mktemp("phone-root"), SERIAL)
    yield srv
    srv.close()


@pytest.fixture
def adb_env(phone, monkeypatch):
    """adbutils (and adb) find the adb server through these, as `adb devices` does."""
    monkeypatch.setenv("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(phone.port))
    return phone


def adb_device(server: AdbServer, python: str = "python3", **extra) -> Device:
    settings = {
        "name": "phone",
        "url": f"adb://{SERIAL}",
        "python": python,
        "workdir": str(server.root / "data" / "local" / "tmp" / "modelpress"),
        "env": {"OMP_NUM_THREADS": "1"},
        "connect_timeout_s": 5,
    }
    return Device(**{**settings, **extra})


@pytest.fixture(scope="module")
def light(tmp_path_factory):
    return light_python(tmp_path_factory.mktemp("adb-light-env") / "venv")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    return tiny_resnet(tmp_path_factory.mktemp("adb-model"))


def fp32_job(resnet) -> BenchJob:
    art, ref, out = resnet
    return BenchJob(
        art, "onnxruntime", "fp32", {"threads": 1}, build=True, build_dir=out / "fp32",
        reference_logits=ref,
    )  # fmt: skip


def closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the whole flow ---------------------------------------------------------------------------


def test_adb_records_equal_local_ones(adb_env, light, resnet):
    device = adb_device(adb_env, str(light))
    res = benchmark([fp32_job(resnet)], FAST, devices=[LOCAL_DEVICE, device])
    here, there = sorted(res.records, key=lambda r: r.device is not None)
    assert (here.device, there.device) == (None, "phone")
    assert here.status == there.status == "ok", there.reason
    assert there.validation.accuracy == here.validation.accuracy  # the same logits
    assert there.validation.agreement == here.validation.agreement
    assert there.validation.max_abs_diff == pytest.approx(here.validation.max_abs_diff, abs=1e-6)
    assert [lat.batch for lat in there.latency] == [1, 8]
    for a, b in zip(here.latency, there.latency):  # same machine: same speed within noise
        assert 0.1 < b.p50_ms / a.p50_ms < 10.0  # loose: the suite runs two files at once
    assert there.artifact_id == here.artifact_id and there.size_bytes == here.size_bytes
    assert there.runtime["runtime"] == "onnxruntime" and there.threads == 1
    assert {"connect_s", "probe_s", "copy_s", "start_s", "fetch_s"} <= set(
        there.runtime["details"]["transport"]
    )
    assert "@phone" in there.label
    ran = " ".join(adb_env.commands)  # through the adb shell, with the device's environment
    assert "runner.py probe" in ran and "OMP_NUM_THREADS=1" in ran
    assert not any(Path(device.workdir).iterdir())  # the run's folder is gone


# --- the transport ----------------------------------------------------------------------------


@pytest.mark.parametrize("shell_v2", [True, False], ids=["shell-v2", "shell-v1"])
def test_commands_give_their_exit_status_and_files_go_both_ways(tmp_path, monkeypatch, shell_v2):
    from modelpress.devices.adb import AdbTransport

    (tmp_path / "root").mkdir()
    server = AdbServer(tmp_path / "root", SERIAL, shell_v2=shell_v2)
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(server.port))
    try:
        with AdbTransport(adb_device(server, env={"WHO": "phone"})) as tr:
            done = tr.run(["sh", "-c", 'echo "out $WHO"; echo err >&2; exit 3'], 10)
            assert done.code == 3 and "out phone" in done.stdout
            if shell_v2:  # v2 keeps stderr apart; v1 mixes it into stdout
                assert (done.stdout, done.stderr) == ("out phone\n", "err\n")
            else:
                assert done.stdout == "out phone\nerr\n" and done.stderr == ""
            folder = f"{tr.workdir}/run-1/j0"
            tr.makedirs(folder)
            blob = tmp_path / "blob.bin"
            blob.write_bytes(bytes(range(256)) * 700)  # several sync DATA chunks
            tr.put(blob, f"{folder}/blob.bin")
            tr.get(f"{folder}/blob.bin", tmp_path / "back.bin")
            assert (tmp_path / "back.bin").read_bytes() == blob.read_bytes()
            with pytest.raises(DeviceError, match=r"^phone: copying .*/nope back failed: "):
                tr.get(f"{folder}/nope", tmp_path / "nope")
            with pytest.raises(DeviceError, match=r"^phone: `sleep` timed out"):
                tr.run(["sleep", "5"], 0.3)
            tr.remove_tree(f"{tr.workdir}/run-1")
            assert not Path(folder).exists() and Path(tr.workdir).is_dir()
    finally:
        server.close()


@pytest.mark.parametrize(  # all harmless if the guard broke: this machine's shell would run rm
    "path", ["{out}", "{out}/keep.txt", "{w}", "{w}/..", "{w}/run-1/../../x", "run-1", "{w}-x/r"]
)
def test_remove_tree_refuses_anything_not_below_the_workdir(adb_env, tmp_path, path):
    from modelpress.devices.adb import AdbTransport

    outside = tmp_path / "keep.txt"
    outside.write_text("not the device's")
    with AdbTransport(adb_device(adb_env)) as tr:
        before = len(adb_env.commands)
        with pytest.raises(DeviceError, match=r"^phone: refusing to remove "):
            tr.remove_tree(path.format(w=tr.workdir, out=tmp_path))
        assert len(adb_env.commands) == before  # nothing was run there
    assert outside.read_text() == "not the device's"


# --- one-line reasons ---------------------------------------------------------------------------


def rows_on(device: Device, resnet) -> list[dict]:
    """What benchmark() gets for a remote device: one row per job (the artifact is not built:
    a device that cannot be reached never looks at it)."""
    from modelpress.devices.remote import measure_on

    art, ref, _ = resnet
    return measure_on(device, [(art, "onnxruntime", {}, ref)] * 2, FAST.to_dict())


def test_an_unknown_serial_is_a_row_naming_the_serials_adb_sees(adb_env, resnet):
    device = adb_device(adb_env, url="adb://R58M000000")
    rows = rows_on(device, resnet)
    assert len(rows) == 2 and rows[0] == rows[1]
    assert rows[0]["status"] == "failed" and rows[0]["device"] == "phone"
    why = rows[0]["reason"]
    assert why.startswith(f"phone: adb sees no device R58M000000 (it sees: {SERIAL} (device))")
    assert "\n" not in why


def test_no_adb_server_is_a_row_saying_to_start_it_and_none_is_started(monkeypatch, resnet):
    port = closed_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    device = Device(name="phone", url=f"adb://{SERIAL}", connect_timeout_s=2)
    (row,) = rows_on(device, resnet)[:1]
    assert row["status"] == "failed" and "\n" not in row["reason"]
    assert row["reason"].startswith(f"phone: no adb server answers on 127.0.0.1:{port}")
    assert "adb start-server" in row["reason"]
    with socket.socket() as s:  # adbutils would have run `adb start-server` on that port
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_relative_workdir_is_refused(adb_env):
    from modelpress.devices.adb import AdbTransport

    with pytest.raises(DeviceError, match=r"^phone: workdir 'tmp/mp' must be an absolute"):
        AdbTransport(adb_device(adb_env, workdir="tmp/mp"))


def test_an_unauthorized_phone_says_to_accept_the_prompt(tmp_path, monkeypatch):
    from modelpress.devices.adb import AdbTransport

    server = AdbServer(tmp_path, SERIAL, state="unauthorized")
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(server.port))
    try:
        with pytest.raises(DeviceError, match=rf"^phone: device {SERIAL} is unauthorized: unlock"):
            AdbTransport(adb_device(server))
        assert server.commands == []
    finally:
        server.close()


def test_the_client_never_starts_an_adb_server(monkeypatch):
    """adbutils' own client runs `adb start-server` when none answers; ours fails instead."""
    import adbutils

    from modelpress.devices.adb import _client

    port = closed_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))  # where a started one would listen
    with pytest.raises(adbutils.AdbError, match="connect to adb server failed"):
        _client(adbutils, "127.0.0.1", port, stall_s=2.0).server_version()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
