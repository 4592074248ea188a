"""How the host talks to a device: run a command there, copy files both ways, clean up.

A :class:`Transport` is the whole interface a device kind implements (``ssh.py``, ``adb.py``);
:mod:`modelpress.devices.remote` drives it the same way for every kind. Remote paths are POSIX
strings as the device sees them (relative ones start in the login's home over ssh). Every failure
is a :class:`~modelpress.errors.DeviceError` whose one line names the device.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Completed:
    """What a command run on the device did."""

    code: int
    stdout: str
    stderr: str

    def last_line(self) -> str:
        lines = [ln.strip() for ln in (self.stderr or self.stdout).splitlines() if ln.strip()]
        return lines[-1][:300] if lines else f"exit {self.code}"


class Transport(Protocol):
    """One open connection to one device (a context manager: closed on exit)."""

    name: str  # the device's name, for messages

    def run(self, argv: Sequence[str], timeout_s: float) -> Completed:
        """Run ``argv`` there (each item one argument, quoted by the transport), with the
        device's environment; a timeout or a lost connection is a DeviceError."""
        ...

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...

    def makedirs(self, remote: str) -> None: ...

    def remove_tree(self, remote: str) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Transport: ...

    def __exit__(self, *exc: object) -> None: ...


def shell_command(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """One POSIX shell line for ``argv`` with ``env`` set (``env NAME=VALUE ... argv``): ssh and
    adb both run a line through the device's shell, so every argument is quoted here."""
    pairs = [f"{k}={v}" for k, v in env.items()]
    return shlex.join(["env", *pairs, *argv] if pairs else list(argv))
