"""The adb transport (adbutils): commands over adb shell (v2: exit status, stdout and stderr
apart), files over adb sync, through the adb server of this machine.

The adb server is the one ``adb devices`` talks to: 127.0.0.1:5037, or ``ANDROID_ADB_SERVER_PORT``
(and adbutils' ``ANDROID_ADB_SERVER_HOST``). It is never started from here (adbutils would run
``adb start-server`` on its own): a missing server is a one-line error saying to start it.
The device's ``workdir`` must be absolute (default ``/data/local/tmp/modelpress``, where the
shell user may write) and :meth:`AdbTransport.remove_tree` removes nothing outside it.
A device without shell v2 (Android < 7) is run with shell v1: its exit status is read from a
marker echoed after the command, and its stderr arrives mixed into stdout.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import socket
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import DeviceError, one_line
from ..fsutil import atomic_path
from .spec import Device
from .transport import Completed, shell_command

T = TypeVar("T")
STDOUT, STDERR, EXIT = 1, 2, 3  # shell v2 packet ids


def _server_address() -> tuple[str, int]:
    host = os.environ.get("ANDROID_ADB_SERVER_HOST") or "127.0.0.1"
    return host, int(os.environ.get("ANDROID_ADB_SERVER_PORT") or 5037)


def _client(adbutils: Any, host: str, port: int, stall_s: float) -> Any:
    """adbutils' client whose connections never start an adb server (adbutils' own does,
    silently, when none answers): a refused connection stays an error."""
    from adbutils._adb import AdbConnection

    class Connection(AdbConnection):
        def _safe_connect(self) -> Any:
            return self._create_socket()

    class Client(adbutils.AdbClient):
        def make_connection(self, timeout: float | None = None) -> Any:
            conn = Connection(self.host, self.port)
            conn.conn.settimeout(timeout or stall_s)
            return conn

    return Client(host, port, socket_timeout=stall_s)


class AdbTransport:
    """The device ``adb://SERIAL`` of this machine's adb server.

    >>> from modelpress.devices.spec import Device
    >>> with AdbTransport(Device(name="phone", url="adb://R58M12")) as tr:  # doctest: +SKIP
    ...     tr.run(["uname", "-m"], 10.0).stdout
    'aarch64\\n'
    """

    def __init__(self, device: Device):
        try:
            import adbutils
        except ImportError as exc:
            raise DeviceError(
                f"{device.name}: adbutils is not installed here: pip install 'modelpress[devices]'"
            ) from exc
        self.adbutils = adbutils
        self.device, self.name = device, device.name
        self.serial = device.address.serial
        self.workdir = posixpath.normpath(device.remote_workdir())
        if not self.workdir.startswith("/") or self.workdir == "/":
            raise DeviceError(
                f"{self.name}: workdir {device.workdir!r} must be an absolute folder below / on "
                "an adb device (e.g. /data/local/tmp/modelpress): set workdir: in the devices file"
            )
        host, port = _server_address()
        self._check_server(host, port)
        self.client = _client(adbutils, host, port, stall_s=120.0)
        self.adb: Any = None
        self._step(self._find, "connect")
        features = self._step(self.adb.get_features, "connect")
        self.v2 = "shell_v2" in features.split(",")

    def _check_server(self, host: str, port: int) -> None:
        try:
            with socket.create_connection((host, port), self.device.connect_timeout_s):
                pass
        except OSError as exc:
            raise DeviceError(
                f"{self.name}: no adb server answers on {host}:{port} ({one_line(exc)}): start it "
                "with `adb start-server` (or set ANDROID_ADB_SERVER_PORT to its port)"
            ) from exc

    def _find(self) -> None:
        seen = {info.serial: info.state for info in self.client.list()}
        state = seen.get(self.serial)
        if state is None:
            listed = ", ".join(f"{s} ({st})" for s, st in seen.items()) or "none"
            raise DeviceError(
                f"{self.name}: adb sees no device {self.serial} (it sees: {listed}): plug it in, "
                "enable USB debugging, and use a serial `adb devices` lists"
            )
        if state != "device":
            raise DeviceError(
                f"{self.name}: device {self.serial} is {state}: unlock it and accept the USB "
                "debugging prompt, then check `adb devices`"
            )
        self.adb = self.client.device(self.serial)

    def _step(self, call: Callable[[], T], what: str) -> T:
        """Run one adbutils call; every failure is a one-line DeviceError naming the device."""
        try:
            return call()
        except DeviceError:
            raise
        except (self.adbutils.AdbTimeout, TimeoutError) as exc:
            raise DeviceError(f"{self.name}: {what} timed out ({one_line(exc)})") from exc
        except (self.adbutils.AdbError, OSError, EOFError, ValueError, struct.error) as exc:
            why = one_line(exc.args[0] if exc.args else type(exc).__name__)
            raise DeviceError(f"{self.name}: {what} failed: {why}") from exc

    # --- commands ---------------------------------------------------------------------------

    def run(self, argv: Sequence[str], timeout_s: float) -> Completed:
        command = shell_command(argv, self.device.env)
        shell = self._shell_v2 if self.v2 else self._shell_v1
        return self._step(lambda: shell(command, timeout_s), f"`{argv[0]}`")

    def _shell_v2(self, command: str, timeout_s: float) -> Completed:
        deadline = time.monotonic() + timeout_s
        conn = self.adb.open_transport(timeout=timeout_s)
        try:
            conn.send_command(f"shell,v2,raw:{command}")
            conn.check_okay()
            out, err = bytearray(), bytearray()
            while True:
                kind, data = _packet(conn, deadline, timeout_s)
                if kind == EXIT:
                    code = data[0] if data else 255
                    break
                (out if kind == STDOUT else err if kind == STDERR else bytearray()).extend(data)
        finally:
            conn.close()
        return Completed(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def _shell_v1(self, command: str, timeout_s: float) -> Completed:
        marker = f"modelpress-exit-{secrets.token_hex(6)}:"
        conn = self.adb.open_shell(f"{command}; echo {marker}$?")
        try:
            data = bytearray()
            deadline = time.monotonic() + timeout_s
            while chunk := _recv(conn, deadline, timeout_s, 65536):
                data.extend(chunk)
        finally:
            conn.close()
        text = data.decode(errors="replace")
        head, found, code = text.rpartition(marker)
        if not found or not code.strip().isdigit():
            raise DeviceError(f"{self.name}: the shell ended without an exit status")
        return Completed(int(code.strip()), head, "")

    # --- files ------------------------------------------------------------------------------

    def put(self, local: Path, remote: str) -> None:
        def push() -> None:
            try:
                self.adb.sync.push(Path(local), remote, 0o644)
            except self.adbutils.AdbError as exc:
                if str(exc) != "FAIL":  # adbutils drops the device's reason for a refused file
                    raise
                raise DeviceError(
                    f"{self.name}: the device refused {remote}: does its folder exist there, and "
                    "may the shell user write in it?"
                ) from exc

        self._step(push, f"copying {local.name} there")

    def get(self, remote: str, local: Path) -> None:
        def pull() -> None:
            with atomic_path(local) as tmp:
                self.adb.sync.pull_file(remote, tmp)

        self._step(pull, f"copying {remote} back")

    def makedirs(self, remote: str) -> None:
        done = self.run(["mkdir", "-p", remote], 60.0)
        if done.code != 0:
            raise DeviceError(f"{self.name}: making {remote} failed: {done.last_line()}")

    def remove_tree(self, remote: str) -> None:
        path = posixpath.normpath(remote)
        if not remote.startswith("/") or not path.startswith(self.workdir + "/"):
            raise DeviceError(
                f"{self.name}: refusing to remove {remote}: only folders below the device's "
                f"workdir {self.workdir} are removed"
            )
        done = self.run(["rm", "-rf", path], 120.0)
        if done.code != 0:
            raise DeviceError(f"{self.name}: removing {path} failed: {done.last_line()}")

    def close(self) -> None:
        self.adb = None  # adbutils opens one socket per request, closed after it

    def __enter__(self) -> AdbTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _recv(conn: Any, deadline: float, timeout_s: float, n: int) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"after {timeout_s:g} s")
    conn.conn.settimeout(left)
    try:
        return conn.conn.recv(n)
    except TimeoutError as exc:
        raise TimeoutError(f"after {timeout_s:g} s") from exc


def _exact(conn: Any, n: int, deadline: float, timeout_s: float) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = _recv(conn, deadline, timeout_s, n - len(data))
        if not chunk:
            raise EOFError("the adb connection closed before the command's exit status")
        data.extend(chunk)
    return bytes(data)


def _packet(conn: Any, deadline: float, timeout_s: float) -> tuple[int, bytes]:
    """One shell v2 packet: id (1 byte), length (uint32 little-endian), data."""
    kind, size = struct.unpack("<BI", _exact(conn, 5, deadline, timeout_s))
    return kind, _exact(conn, size, deadline, timeout_s) if size else b""
