"""Test fixtures' helpers for remote devices: a Python environment without torch or modelpress,
and an SSH server on 127.0.0.1 (asyncssh) whose "remote" side is a folder of this machine.

The light environment is a venv without pip whose only packages are links to this venv's numpy,
onnxruntime and ai_edge_litert (what a Raspberry Pi would pip install): the runner must work
there, and torch cannot be imported there.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

LIGHT_PACKAGES = ("numpy", "numpy.libs", "onnxruntime", "ai_edge_litert")


def fast_settings():
    """Short measurements for the device tests (batch 1 and 8, a few dozen calls)."""
    from modelpress.measure.bench import BenchSettings

    return BenchSettings(
        batch_sizes=(1, 8),
        warmup_calls=2,
        warmup_seconds=0.0,
        min_calls=30,
        min_seconds=0.05,
        keep_samples=50,
    )


def tiny_resnet(out: Path):
    """An untrained small resnet8 checkpoint on digits and its float test logits (.npy):
    (artifact, logits path, ``out``). Validation needs no skill: equal logits, equal accuracy."""
    import torch

    from modelpress.checkpoint import save_trained
    from modelpress.data import load_dataset
    from modelpress.measure.bench import reference_logits
    from modelpress.models import create_model

    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("resnet8", input_spec=data.input_spec, num_classes=10, width=0.25).eval()
    art = save_trained(out / "resnet8.safetensors", model, data)
    return art, reference_logits(art, out / "ref.npy"), out


def light_python(folder: Path, packages: tuple[str, ...] = LIGHT_PACKAGES) -> Path:
    """A venv in ``folder`` that sees only ``packages`` (and their dist-info) of this one."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = Path(sysconfig.get_paths()["purelib"])
    links = folder / "light-packages"
    links.mkdir()
    for entry in site.iterdir():
        name = entry.name.split("-")[0] if entry.name.endswith(".dist-info") else entry.name
        if name in packages or name.replace("_", "-") in packages:
            (links / entry.name).symlink_to(entry)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "light.pth").write_text(f"{links}\n")
    return python


class SshServer:
    """asyncssh's server in a thread: public-key auth with one client key, real SFTP (chrooted
    to ``home``) and real exec (``/bin/sh -c`` in ``home``, with a bare environment)."""

    def __init__(self, home: Path, keys: Path):
        import asyncssh

        self.home, self.asyncssh = home, asyncssh
        home.mkdir(parents=True, exist_ok=True)
        keys.mkdir(parents=True, exist_ok=True)
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.identity = keys / "id_ed25519"
        client_key.write_private_key(str(self.identity))
        os.chmod(self.identity, 0o600)
        self.authorized = keys / "authorized_keys"
        client_key.write_public_key(str(self.authorized))
        self.host_key = host_key
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._call(self._start())
        self.port = self.server.sockets[0].getsockname()[1]
        self.known_hosts = keys / "known_hosts"
        public = host_key.export_public_key().decode().strip()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public}\n")
        self.commands: list[str] = []

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self):
        home = str(self.home)
        return await self.asyncssh.create_server(
            self.asyncssh.SSHServer,
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=str(self.authorized),
            sftp_factory=lambda chan: self.asyncssh.SFTPServer(chan, chroot=home),
            process_factory=self._exec,
            allow_scp=False,
        )

    async def _exec(self, process) -> None:
        self.commands.append(process.command or "")
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            process.command or "true",
            cwd=self.home,
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.home)},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        process.stdout.write(out.decode(errors="replace"))
        process.stderr.write(err.decode(errors="replace"))
        process.exit(proc.returncode)

    def close(self) -> None:
        self.server.close()
        self._call(self.server.wait_closed())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
