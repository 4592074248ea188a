"""TensorRT on CUDA: a serialized engine built from the ONNX artifact with the TensorRT Python API.

Every network is strongly typed: the precision is in the ONNX graph, never in builder flags
(TensorRT 11 removed ``BuilderFlag.FP16`` / ``INT8``; on 10.x the ``STRONGLY_TYPED`` flag asks for
the same). Precisions: ``fp32``; ``fp16``, from the graph converted to float16 inside with float32
inputs and outputs (ONNX Runtime's converter, ``keep_io_types``); ``int8`` from a QDQ graph
(explicit quantization: TensorRT reads the QuantizeLinear/DequantizeLinear scales). From a torch
checkpoint, int8 first builds that QDQ graph with ONNX Runtime's static quantizer, symmetric
int8 activations as TensorRT requires; a QAT QDQ ``.onnx`` artifact is used as it is.

An optimisation profile covers the dynamic batch (min 1, opt ``opt_batch``, max ``max_batch``).
The runner (:mod:`.tensorrt_runner`) keeps copies and execution on one stream and times both
end to end and device compute only.

An engine only runs on the TensorRT version and GPU model that built it: both are in its
metadata (:func:`engine_identity`) and in its build's cache key, and :meth:`TensorRTTarget.load`
refuses an engine from another version or GPU with a one-line "rebuild it here".

The engine ``<name>.<precision>.engine`` has a JSON sidecar ``<name>.<precision>.engine.json``
with its metadata and a SHA-256 over the engine bytes and that JSON (:func:`write_engine`);
:func:`read_engine` checks it before an engine is deserialized, so a swapped or edited engine or
sidecar is an :class:`~modelpress.errors.ArtifactError`, never a silently wrong model.

Without CUDA or without the ``tensorrt`` package, :meth:`availability` says why and every build or
load raises :class:`~modelpress.errors.TargetUnavailable` naming the extra to install.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifact import Artifact, stage_id
from ..data.base import InputSpec
from ..errors import ArtifactError, BuildError, ConfigError
from ..export import copy_onnx, deployment_meta, export_onnx
from ..fsutil import atomic_write_bytes
from .base import Availability, TargetInfo, begin_build
from .litert_meta import DIGEST_AT, DIGEST_PLACEHOLDER, file_digest
from .tensorrt_runner import TrtRunner


@dataclass(frozen=True)
class TrtConfig:
    device: int = 0
    opt_batch: int = 32
    max_batch: int = 256
    workspace_mib: int = 1024

    def __post_init__(self) -> None:
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(
                f"need 1 <= opt_batch <= max_batch, got {self.opt_batch}, {self.max_batch}"
            )
        if self.workspace_mib < 16 or self.device < 0:
            raise ConfigError("workspace_mib must be >= 16 and device >= 0")


def _trt_logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.ERROR)


def engine_identity(device: int) -> dict[str, str]:
    """What an engine is only valid for: the TensorRT version and the GPU (model and compute
    capability). Part of the build's cache key and of the engine's metadata, checked at load."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return {
        "tensorrt": trt.__version__,
        "gpu": torch.cuda.get_device_name(device),
        "compute_capability": f"{major}.{minor}",
    }


class TensorRTTarget:
    name: ClassVar[str] = "tensorrt"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")

    def __init__(self, **options: Any):
        self.cfg = TrtConfig(**options)

    def availability(self) -> Availability:
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            return Availability(False, "the tensorrt package is not installed", extra="tensorrt")
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a core dependency
            return Availability(False, "torch is not installed")
        if not torch.cuda.is_available():
            return Availability(
                False, "no CUDA GPU is visible (torch.cuda.is_available() is False)"
            )
        if self.cfg.device >= torch.cuda.device_count():
            return Availability(False, f"CUDA device {self.cfg.device} does not exist")
        return Availability(True)

    def build(
        self, art: Artifact, precision: str, calib: np.ndarray | None, out_dir: Path
    ) -> Artifact:
        out_dir, name = begin_build(self, art, precision, out_dir)
        identity = engine_identity(self.cfg.device)
        meta = deployment_meta(
            dict(art.meta),
            target=self.name,
            precision=precision,
            tensorrt={"opt_batch": self.cfg.opt_batch, "max_batch": self.cfg.max_batch, **identity},
        )
        spec = InputSpec.from_dict(meta["input_spec"])
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            onnx_path = self._onnx_for(art, precision, calib, Path(tmp))
            engine_bytes = self._build_engine(onnx_path, spec, precision)
        dest = out_dir / f"{name}.{precision}.engine"
        files = write_engine(dest, engine_bytes, meta)
        art_id = stage_id(
            art.id,
            f"tensorrt:{precision}",
            {"opt": self.cfg.opt_batch, "max": self.cfg.max_batch, **identity},
        )
        meta = read_engine(dest)[1]  # what the files say, digest included
        return Artifact(path=dest, format="tensorrt", id=art_id, meta=meta, files=files)

    def _onnx_for(self, art: Artifact, precision: str, calib: np.ndarray | None, tmp: Path) -> Path:
        """The ONNX graph TensorRT parses: float for fp32/fp16, QDQ for int8."""
        from .onnxruntime import OnnxRuntimeTarget, op_counts

        if art.format == "onnx":
            has_qdq = bool(op_counts(art.path)["QuantizeLinear"])
            if precision == "int8" and not has_qdq:
                return self._qdq_from_onnx(art, calib, tmp)
            if precision == "fp16" and not has_qdq:
                return OnnxRuntimeTarget().build(art, "fp16", None, tmp).path
            target = tmp / art.path.name
            copy_onnx(art.path, target)  # with its external data, checked to stay beside it
            return target
        if art.format != "torch":
            raise ConfigError(
                f"tensorrt builds from a torch checkpoint or an .onnx file, not {art.format}"
            )
        if precision == "int8":
            qdq = OnnxRuntimeTarget(activation_type="int8", per_channel=True)
            return qdq.build(art, "int8", calib, tmp).path
        if precision == "fp16":  # float16 inside, float32 in and out
            return OnnxRuntimeTarget().build(art, "fp16", None, tmp).path
        from ..checkpoint import load_checkpoint

        ckpt = load_checkpoint(art.path)
        meta = deployment_meta(dict(art.meta), target=self.name, precision=precision)
        return export_onnx(
            ckpt.model, ckpt.input_spec, tmp / "model.onnx", meta, parent_id=art.id
        ).path

    def _qdq_from_onnx(self, art: Artifact, calib: np.ndarray | None, tmp: Path) -> Path:
        from .onnxruntime import OnnxRuntimeTarget

        return OnnxRuntimeTarget(activation_type="int8").build(art, "int8", calib, tmp).path

    def _build_engine(self, onnx_path: Path, spec: InputSpec, precision: str) -> bytes:
        import tensorrt as trt

        logger = _trt_logger()
        builder = trt.Builder(logger)
        # strongly typed: the graph's types decide (required on 11.x, where the flag is a no-op)
        flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        network = builder.create_network(0 if flag is None else 1 << int(flag))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise BuildError(f"tensorrt cannot parse the ONNX graph: {'; '.join(errors)[:400]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.cfg.workspace_mib << 20)
        profile = builder.create_optimization_profile()
        sample = tuple(spec.shape)
        for i in range(network.num_inputs):  # every input: the data's array, derived ones
            profile.set_shape(
                network.get_input(i).name,
                (1, *sample),
                (self.cfg.opt_batch, *sample),
                (self.cfg.max_batch, *sample),
            )
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BuildError(
                f"tensorrt could not build a {precision} engine from {onnx_path.name} (see the log above)"
            )
        return bytes(serialized)

    def load(self, art: Artifact) -> TrtRunner:
        self.availability().require(self.name)
        import tensorrt as trt
        import torch

        path = Path(art.path)
        engine_bytes, meta = read_engine(path)  # the digest is checked before deserializing
        check_identity(path, meta, engine_identity(self.cfg.device))
        torch.cuda.set_device(self.cfg.device)
        engine = trt.Runtime(_trt_logger()).deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise ArtifactError(
                f"tensorrt cannot deserialize {path}: truncated, corrupt, or built by another TensorRT "
                "version or GPU; rebuild it on this machine"
            )
        return TrtRunner(engine, InputSpec.from_dict(meta["input_spec"]), self.cfg.device)

    def describe(self) -> TargetInfo:
        version, device = "not installed", "none"
        try:
            import tensorrt as trt

            version = trt.__version__
        except ImportError:
            pass
        import torch

        if torch.cuda.is_available() and self.cfg.device < torch.cuda.device_count():
            device = f"cuda:{self.cfg.device} ({torch.cuda.get_device_name(self.cfg.device)})"
        return TargetInfo(
            name=self.name,
            runtime="tensorrt",
            version=version,
            device=device,
            threads=None,
            details={
                "opt_batch": self.cfg.opt_batch,
                "max_batch": self.cfg.max_batch,
                "timings": "end to end (host to host) and device compute (CUDA events)",
            },
        )

    def build_identity(self) -> dict[str, str]:
        """Added to the build's cache key: an engine cached for one GPU or TensorRT version is
        never reused on another."""
        return engine_identity(self.cfg.device) if self.availability().ok else {}


# -- the engine's files: plain functions (no tensorrt needed), tested everywhere ---------------


def sidecar_path(engine: Path) -> Path:
    """``x.fp16.engine`` -> ``x.fp16.engine.json``."""
    return Path(engine).with_name(Path(engine).name + ".json")


def _sidecar_digest(engine_bytes: bytes, text: bytes) -> str:
    """SHA-256 over the engine bytes and the sidecar JSON (its digest value zeroed): the same
    :func:`~modelpress.targets.litert_meta.file_digest` as a ``.tflite``'s embedded metadata."""
    return file_digest(engine_bytes + text, len(engine_bytes))


def write_engine(dest: Path, engine_bytes: bytes, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write the engine, then its sidecar JSON carrying ``meta`` and the digest (atomically).

    >>> write_engine(Path("out/m.fp16.engine"), engine_bytes, meta)   # doctest: +SKIP
    (PosixPath('out/m.fp16.engine'), PosixPath('out/m.fp16.engine.json'))
    """
    body = {k: v for k, v in meta.items() if k != "digest"}
    text = bytearray(json.dumps({"digest": DIGEST_PLACEHOLDER, **body}, default=str).encode())
    text[DIGEST_AT : DIGEST_AT + 64] = _sidecar_digest(engine_bytes, bytes(text)).encode()
    dest = atomic_write_bytes(dest, engine_bytes)
    side = atomic_write_bytes(sidecar_path(dest), bytes(text))  # last: a pair is complete
    return dest, side


def read_engine(path: Path) -> tuple[bytes, dict[str, Any]]:
    """(engine bytes, metadata) of an engine, after checking the sidecar's digest.

    Raises :class:`ArtifactError` when the engine or its sidecar is missing, unreadable, or was
    edited, truncated or swapped after the build.
    """
    path, side = Path(path), sidecar_path(path)
    if not path.is_file():
        raise ArtifactError(f"TensorRT engine {path} does not exist; build it first")
    if not side.is_file():
        raise ArtifactError(
            f"{side} is missing: an engine needs its metadata file beside it; rebuild the engine"
        )
    engine_bytes, text = path.read_bytes(), side.read_bytes()
    try:
        meta = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{side} is not valid JSON ({exc}); rebuild the engine") from exc
    if not isinstance(meta, dict) or meta.get("digest") != _sidecar_digest(engine_bytes, text):
        raise ArtifactError(
            f"TensorRT engine {path} failed its digest check against {side.name}: the engine or its "
            "metadata was edited, truncated or swapped; rebuild it with the tensorrt target"
        )
    return engine_bytes, meta


def check_identity(path: Path, meta: dict[str, Any], here: dict[str, str]) -> None:
    """Raise :class:`ArtifactError` when the engine was built for another TensorRT or GPU."""
    built = meta.get("tensorrt") or {}
    for key, value in here.items():
        if key in built and built[key] != value:
            raise ArtifactError(
                f"TensorRT engine {path} was built for {key} {built[key]!r}, this machine has "
                f"{value!r}: engines do not move between TensorRT versions or GPU models; rebuild it here"
            )


def read_engine_meta(path: Path) -> dict[str, Any]:
    """The metadata of an engine (digest checked)."""
    return read_engine(path)[1]
