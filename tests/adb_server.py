"""A loopback adb server for tests: the adb host protocol (what ``adb`` and adbutils speak to the
adb server on port 5037), on 127.0.0.1 only, in front of one "device" that is a folder of this
machine: its shell runs ``/bin/sh -c`` there and its sync service serves files below it.

What it speaks, as the real server does:

- requests are 4 hex digits of length then the text; answers ``OKAY`` or ``FAIL`` + a
  length-prefixed message;
- ``host:version``, ``host:devices[-l]``, ``host-serial:SERIAL:features|get-state``,
  ``host:transport:SERIAL`` and ``host:tport:serial:SERIAL`` (``OKAY`` + an 8-byte transport id),
  after which the same connection asks the device for a service;
- ``shell:CMD`` (v1: stdout and stderr mixed, no exit status) and ``shell,v2[,raw]:CMD``
  (packets: id byte, uint32 length, data; 1 stdout, 2 stderr, 3 exit status);
- ``sync:`` with ``STAT``, ``SEND`` (``DATA``/``DONE`` frames, answered ``OKAY``), ``RECV``
  (``DATA``... ``DONE``) and ``QUIT``; a path outside the folder is refused (``FAIL``).

A client that closes the connection of a running shell command has that command killed, as adbd
does. ``shell_v2=False`` makes a device without shell v2 (Android before 7); ``state`` is what
``host:devices`` says of it (``unauthorized`` until the phone accepts this computer's key).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import socketserver
import stat
import struct
import subprocess
import threading
from pathlib import Path

SYNC_CHUNK = 64 * 1024


class _Closed(Exception):
    """The client hung up."""


class AdbServer:
    """Serve the adb host protocol on 127.0.0.1:<free port> in a thread."""

    def __init__(
        self, root: Path, serial: str = "LOOPBACK01", shell_v2: bool = True, state: str = "device"
    ):
        self.root, self.serial, self.shell_v2 = root.resolve(), serial, shell_v2
        self.state = state  # what `adb devices` says of it: device, unauthorized, offline
        self.commands: list[str] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with contextlib.suppress(_Closed, ConnectionError):
                    _Session(outer, self.request).serve()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class _Session:
    """One client connection."""

    def __init__(self, adb: AdbServer, sock: socket.socket):
        self.adb, self.sock = adb, sock

    # --- framing ----------------------------------------------------------------------------

    def read(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise _Closed
            data.extend(chunk)
        return bytes(data)

    def request(self) -> str:
        return self.read(int(self.read(4), 16)).decode()

    def okay(self, block: str | None = None) -> None:
        body = b"" if block is None else f"{len(block.encode()):04x}{block}".encode()
        self.sock.sendall(b"OKAY" + body)

    def fail(self, message: str) -> None:
        self.sock.sendall(f"FAIL{len(message.encode()):04x}{message}".encode())

    # --- host services ----------------------------------------------------------------------

    def serve(self) -> None:
        req, adb = self.request(), self.adb
        if req == "host:version":
            return self.okay(f"{41:04x}")
        if req in ("host:devices", "host:devices-l"):
            return self.okay(f"{adb.serial}\t{adb.state}\n")
        if req.startswith("host-serial:"):
            serial, _, what = req.removeprefix("host-serial:").rpartition(":")
            if serial != adb.serial:
                return self.fail(f"device '{serial}' not found")
            if what == "features":
                return self.okay("shell_v2,cmd,stat_v2" if adb.shell_v2 else "cmd")
            return self.okay("device") if what == "get-state" else self.fail(f"unknown {what}")
        for prefix, ack in (("host:tport:serial:", struct.pack("<Q", 1)), ("host:transport:", b"")):
            if req.startswith(prefix):
                if req.removeprefix(prefix) != adb.serial:
                    return self.fail(f"device '{req.removeprefix(prefix)}' not found")
                self.okay()
                self.sock.sendall(ack)
                return self.device_service(self.request())
        return self.fail(f"unknown host service {req}")

    def device_service(self, req: str) -> None:
        service, _, arg = req.partition(":")
        options = service.split(",")
        if options[0] == "shell" and (self.adb.shell_v2 or "v2" not in options):
            self.okay()
            return self.shell(arg, v2="v2" in options)
        if req == "sync:":
            self.okay()
            return self.sync()
        return self.fail(f"unknown device service {req}")

    # --- shell ------------------------------------------------------------------------------

    def shell(self, command: str, v2: bool) -> None:
        self.adb.commands.append(command)
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command or "true"],
            cwd=self.adb.root,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.adb.root)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if v2 else subprocess.STDOUT,
            start_new_session=True,
        )
        lock = threading.Lock()

        def pump(stream, kind: int) -> None:
            while chunk := os.read(stream.fileno(), 65536):
                frame = struct.pack("<BI", kind, len(chunk)) + chunk if v2 else chunk
                with lock:
                    try:
                        self.sock.sendall(frame)
                    except OSError:
                        return

        pumps = [threading.Thread(target=pump, args=(proc.stdout, 1), daemon=True)]
        if v2:
            pumps.append(threading.Thread(target=pump, args=(proc.stderr, 2), daemon=True))
        for t in pumps:
            t.start()
        while proc.poll() is None:
            readable, _, _ = select.select([self.sock], [], [], 0.05)
            if readable and not self.sock.recv(4096):  # the client hung up: kill, as adbd does
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise _Closed
        for t in pumps:
            t.join()
        code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        if v2:
            self.sock.sendall(struct.pack("<BIB", 3, 1, code & 0xFF))

    # --- sync -------------------------------------------------------------------------------

    def local(self, path: str) -> Path | None:
        """The file of device path ``path``, or None outside the device's folder."""
        real = Path(os.path.realpath(path))
        return real if real == self.adb.root or self.adb.root in real.parents else None

    def sync_fail(self, message: str) -> None:
        data = message.encode()
        self.sock.sendall(b"FAIL" + struct.pack("<I", len(data)) + data)

    def sync(self) -> None:
        while True:
            try:
                cmd, size = struct.unpack("<4sI", self.read(8))
            except _Closed:
                return
            if cmd == b"QUIT":
                return
            arg = self.read(size).decode()
            if cmd == b"STAT":
                self.stat(arg)
            elif cmd == b"SEND":
                self.send(arg)
            elif cmd == b"RECV":
                self.recv(arg)
            else:
                return self.sync_fail(f"unknown sync request {cmd!r}")

    def stat(self, path: str) -> None:
        local = self.local(path)
        st = local.stat() if local is not None and local.exists() else None
        fields = (st.st_mode, st.st_size, int(st.st_mtime)) if st else (0, 0, 0)
        self.sock.sendall(b"STAT" + struct.pack("<III", *fields))

    def send(self, arg: str) -> None:
        path, _, mode = arg.rpartition(",")
        data = bytearray()
        while True:
            cmd, size = struct.unpack("<4sI", self.read(8))
            if cmd == b"DONE":
                break
            if cmd != b"DATA" or size > SYNC_CHUNK:
                return self.sync_fail(f"bad sync frame {cmd!r}")
            data.extend(self.read(size))
        local = self.local(path)
        if local is None:
            return self.sync_fail(f"{path}: permission denied")
        try:
            local.write_bytes(data)
            local.chmod(stat.S_IMODE(int(mode)))
        except OSError as exc:
            return self.sync_fail(f"{path}: {exc.strerror}")
        self.sock.sendall(b"OKAY" + struct.pack("<I", 0))

    def recv(self, path: str) -> None:
        local = self.local(path)
        if local is None or not local.is_file():
            return self.sync_fail(f"{path}: No such file or directory")
        with open(local, "rb") as fh:
            while chunk := fh.read(SYNC_CHUNK):
                self.sock.sendall(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        self.sock.sendall(b"DONE" + struct.pack("<I", 0))
