"""The ssh transport (asyncssh): commands over exec channels, files over SFTP, key auth only.

Host keys are checked against ``known_hosts`` (the device's setting; ``~/.ssh/known_hosts`` by
default). A device whose ``known_hosts`` is null in the devices file accepts any host key: that
is written there, on purpose, by the user, never a silent fallback. Passwords are never asked.
asyncssh is asynchronous; this class is not: it owns a private event loop and runs each step to
completion on it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import DeviceError, one_line
from .spec import Device
from .transport import Completed, shell_command

T = TypeVar("T")


def _expand(path: str | None) -> str | None:
    return None if path is None else os.path.expanduser(path)


class SshTransport:
    """One ssh connection (and one SFTP session on it) to ``device``."""

    def __init__(self, device: Device):
        try:
            import asyncssh
        except ImportError as exc:
            raise DeviceError(
                f"{device.name}: asyncssh is not installed here: pip install 'modelpress[devices]'"
            ) from exc
        self.asyncssh = asyncssh
        self.device, self.name = device, device.name
        self.loop = asyncio.new_event_loop()
        self.conn: Any = None
        self.sftp: Any = None
        try:
            self._step(self._open(), "connect", device.connect_timeout_s)
        except BaseException:
            self.close()
            raise

    async def _open(self) -> None:
        d, url = self.device, self.device.address
        known = _expand(d.known_hosts)
        if known is not None and not Path(known).is_file():
            raise DeviceError(
                f"{d.name}: the host key of {url.host} cannot be checked: {known} does not exist; "
                f"add it (ssh-keyscan -p {url.port} {url.host} >> {d.known_hosts}) or set "
                "known_hosts: null for this device in the devices file"
            )
        options: dict[str, Any] = {
            "port": url.port,
            "known_hosts": known,
            "password": None,
            "kbdint_auth": False,
            "agent_forwarding": False,
        }
        if url.user:
            options["username"] = url.user
        if d.identity:
            options["client_keys"] = [_expand(d.identity)]
        self.conn = await self.asyncssh.connect(url.host, **options)
        self.sftp = await self.conn.start_sftp_client()

    def _step(self, coro: Awaitable[T], what: str, timeout_s: float) -> T:
        """Run one step on the loop; every failure is a one-line DeviceError naming the device."""
        try:
            return self.loop.run_until_complete(asyncio.wait_for(coro, timeout_s))
        except DeviceError:
            raise
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise DeviceError(f"{self.name}: {what} timed out after {timeout_s:g} s") from exc
        except (OSError, self.asyncssh.Error) as exc:
            why = one_line(getattr(exc, "reason", "") or exc) or type(exc).__name__
            raise DeviceError(f"{self.name}: {what} failed: {why}") from exc

    def run(self, argv: Sequence[str], timeout_s: float) -> Completed:
        command = shell_command(argv, self.device.env)
        res = self._step(self.conn.run(command, check=False), f"`{argv[0]}`", timeout_s)
        code = res.exit_status if res.exit_status is not None else 255
        return Completed(code, str(res.stdout or ""), str(res.stderr or ""))

    def put(self, local: Path, remote: str) -> None:
        self._step(self.sftp.put(str(local), remote), f"copying {local.name} there", 600.0)

    def get(self, remote: str, local: Path) -> None:
        self._step(self.sftp.get(remote, str(local)), f"copying {remote} back", 600.0)

    def makedirs(self, remote: str) -> None:
        self._step(self.sftp.makedirs(remote, exist_ok=True), f"making {remote}", 60.0)

    def remove_tree(self, remote: str) -> None:
        self._step(self.sftp.rmtree(remote, ignore_errors=True), f"removing {remote}", 120.0)

    def close(self) -> None:
        try:
            if self.sftp is not None:
                self.sftp.exit()
            if self.conn is not None:
                self.conn.close()
                self.loop.run_until_complete(self.conn.wait_closed())
        except Exception:  # closing is best effort: the connection may be gone already
            pass
        finally:
            self.conn = self.sftp = None
            self.loop.close()

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
