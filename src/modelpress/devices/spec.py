"""Devices: where a measurement runs. ``local`` is this machine; others come from a devices file.

A devices file (``devices.yaml``, read with one-line located errors like recipes)::

    version: 1
    devices:
      pi4:
        url: ssh://pi@192.168.1.20          # ssh://[user@]host[:port], key-based auth only
        python: python3                     # the interpreter there (needs numpy + the runtime)
        workdir: .cache/modelpress          # relative to the login's home; removed per run
        env: {OMP_NUM_THREADS: "4"}         # environment of the runner there (thread pinning)
        identity: ~/.ssh/id_ed25519         # key file; default: the agent and ~/.ssh's keys
        known_hosts: ~/.ssh/known_hosts     # host keys checked there; never skipped silently
      phone:
        url: adb://R58M12345ABC             # adb://SERIAL of `adb devices`
        python: /data/local/tmp/py/bin/python3

>>> from modelpress.devices.spec import parse_url
>>> parse_url("ssh://pi@raspberry.local:2222")
DeviceUrl(kind='ssh', user='pi', host='raspberry.local', port=2222, serial='')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError, one_line
from ..userinput import key_path

LOCAL = "local"  # the device every run has: this machine, a worker process per measurement
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$|^\[[0-9A-Fa-f:.]+\]$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
_SERIAL = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class DeviceUrl:
    kind: Literal["local", "ssh", "adb"]
    user: str = ""
    host: str = ""
    port: int = 22
    serial: str = ""


def parse_url(url: str) -> DeviceUrl:
    """``local``, ``ssh://[user@]host[:port]`` or ``adb://SERIAL``; ValueError says why not."""
    if url == LOCAL:
        return DeviceUrl("local")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("ssh", "adb"):
        raise ValueError(
            f"device url {url!r} is not local, ssh://[user@]host[:port] or adb://SERIAL"
        )
    if scheme == "adb":
        if not _SERIAL.match(rest):
            raise ValueError(f"adb serial {rest!r} is not a serial of `adb devices`")
        return DeviceUrl("adb", serial=rest)
    user, at, hostport = rest.rpartition("@")
    if at and not _USER.match(user):
        raise ValueError(f"ssh user {user!r} is not a user name")
    host, port = hostport, 22
    match = re.match(r"^(.*):(\d{1,5})$", hostport)
    if match and not hostport.endswith("]"):
        host, port = match.group(1), int(match.group(2))
    if not _HOST.match(host) or not 0 < port < 65536:
        raise ValueError(f"ssh host {hostport!r} is not host[:port] (port 1-65535)")
    return DeviceUrl("ssh", user=user, host=host, port=port)


class Device(BaseModel):
    """One device of a devices file (see the module's doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""  # filled from its key in the file
    url: str
    python: str = "python3"
    workdir: str = ""  # default: .cache/modelpress (ssh), /data/local/tmp/modelpress (adb)
    env: dict[str, str] = {}
    identity: str | None = None
    known_hosts: str | None = "~/.ssh/known_hosts"
    connect_timeout_s: float = Field(20.0, gt=0, le=600)
    timeout_s: float = Field(900.0, gt=0, le=86_400)  # one job (load + validate + timing)
    keep: bool = False  # keep the run's folder there (debugging)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parse_url(v)
        return v

    @field_validator("python", "workdir")
    @classmethod
    def _no_control(cls, v: str) -> str:
        if any(ord(c) < 32 for c in v) or len(v) > 400:
            raise ValueError(f"{v!r} must be one line of at most 400 characters")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        bad = next((k for k in v if not _ENV_KEY.match(k)), None)
        if bad is not None:
            raise ValueError(f"environment variable name {bad!r} is not NAME (letters, _, digits)")
        return v

    @property
    def address(self) -> DeviceUrl:
        return parse_url(self.url)

    @property
    def kind(self) -> str:
        return self.address.kind

    def remote_workdir(self) -> str:
        if self.workdir:
            return self.workdir.rstrip("/") or "/"
        return "/data/local/tmp/modelpress" if self.kind == "adb" else ".cache/modelpress"


class DevicesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    devices: dict[str, Device]

    @field_validator("devices", mode="before")
    @classmethod
    def _named(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for name in v:
            if not isinstance(name, str) or not _NAME.match(name) or name == LOCAL:
                raise ValueError(
                    f"device name {name!r} must start with a letter and hold letters, digits, "
                    f"_ or - (at most 40), and not be {LOCAL!r} (this machine)"
                )
        return {k: {**d, "name": k} if isinstance(d, dict) else d for k, d in v.items()}


LOCAL_DEVICE = Device(name=LOCAL, url=LOCAL)


def load_devices(path: str | Path) -> dict[str, Device]:
    """The devices of a devices file, by name, with ``local`` added; any problem is one
    ConfigError line with the file, the line and the key path."""
    from ..yamlfile import load_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"devices file {path} does not exist; write one (see docs/devices.md) or pass --devices"
        )
    data, lines = load_yaml(path, ConfigError, what="devices ")
    if not isinstance(data, dict):
        raise ConfigError(f"devices file {path} must be a mapping with devices:")
    try:
        parsed = DevicesFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = one_line(err["msg"].removeprefix("Value error, "))
        line = lines.line(tuple(err["loc"]))
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"devices file {where}: {key_path(err['loc'])}: {msg}") from exc
    return {LOCAL: LOCAL_DEVICE, **parsed.devices}


def pick(devices: dict[str, Device], names: list[str], where: str) -> list[Device]:
    """The devices called ``names`` (in that order); an unknown name says which exist."""
    unknown = [n for n in names if n not in devices]
    if unknown:
        raise ConfigError(
            f"{where}: unknown device(s) {unknown}; the devices file names {sorted(devices)}"
        )
    return [devices[n] for n in dict.fromkeys(names)]
