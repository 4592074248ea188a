"""The ``torch`` target: eager PyTorch on CPU or CUDA, the reference every backend is compared to.

``build`` does not convert anything: the artifact is the checkpoint itself (precision fp32, or
fp16 on CUDA where half precision runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from ..artifact import Artifact
from ..errors import ConfigError
from .base import Availability, Runner, TargetInfo, check_build


class TorchRunner(Runner):
    def __init__(self, model, input_spec, device: str, precision: str):
        super().__init__(input_spec, "torch")
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.half = precision == "fp16"
        if self.half:
            self.model = self.model.half()

    def _run(self, x: np.ndarray) -> np.ndarray:
        t = self.torch.from_numpy(x).to(self.device)
        if self.half and t.is_floating_point():
            t = t.half()
        with self.torch.inference_mode():
            out = self.model(t)
        return out.float().cpu().numpy()


class TorchTarget:
    name: ClassVar[str] = "torch"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16")

    def __init__(self, device: str = "cpu", threads: int | None = None):
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise ConfigError(f"torch target device {device!r} is unknown; use cpu or cuda[:N]")
        self.device = device
        self.threads = threads

    def availability(self) -> Availability:
        import torch

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            return Availability(
                False, "no CUDA device visible to torch (torch.cuda.is_available() is False)"
            )
        return Availability(True)

    def build(
        self, art: Artifact, precision: str, calib: np.ndarray | None, out_dir: Path
    ) -> Artifact:
        check_build(self, precision)  # it writes no file: no out_dir to create
        if precision == "fp16" and self.device == "cpu":
            raise ConfigError("torch fp16 runs on CUDA only here; use precision fp32 on cpu")
        if art.format != "torch":
            raise ConfigError(f"the torch target takes a torch checkpoint, not {art.format}")
        meta = {**art.meta, "target": self.name, "precision": precision, "device": self.device}
        return Artifact(path=art.path, format="torch", id=art.id, meta=meta, files=art.files)

    def load(self, art: Artifact) -> TorchRunner:
        import torch

        from ..checkpoint import load_checkpoint

        self.availability().require(self.name)
        if self.threads:
            torch.set_num_threads(self.threads)
        ckpt = load_checkpoint(art.path)
        return TorchRunner(
            ckpt.model, ckpt.input_spec, self.device, art.meta.get("precision", "fp32")
        )

    def describe(self) -> TargetInfo:
        import torch

        device = self.device
        if device.startswith("cuda") and torch.cuda.is_available():
            device = torch.cuda.get_device_name(torch.device(device))
        return TargetInfo(
            name=self.name,
            runtime="torch",
            version=torch.__version__,
            device=device,
            threads=torch.get_num_threads(),
        )
