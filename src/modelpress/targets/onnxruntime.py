"""ONNX Runtime: export (dynamo, dynamic batch), then fp32 / fp16 / int8 builds.

Runs on the CPU by default; ``providers: [cuda]`` or ``[tensorrt]`` runs the same files on a GPU
through onnxruntime-gpu (:mod:`.ort_providers`: an unavailable provider is a skip, never a silent
CPU fallback).

Precisions:
- ``fp32``: the exported graph; ORT applies its graph optimisations at load time.
- ``fp16``: weights and compute in half precision, float32 input/output kept (``keep_io_types``);
  built only if a session really runs it here.
- ``dynamic_int8``: int8 weights, activations quantized on the fly (suits RNN / transformer
  MatMuls); the ops ORT leaves in float are listed in the artifact's notes.
- ``int8``: static QDQ, per-channel int8 weights, activations calibrated on the calibration
  split with MinMax, Entropy or Percentile.
- ``qdq``: an ONNX artifact that already holds QuantizeLinear/DequantizeLinear (from QAT)
  passes through as it is.

>>> target = OnnxRuntimeTarget(threads=2)                              # doctest: +SKIP
>>> art = target.build(checkpoint_artifact, "int8", data.calibration(256), Path("out"))
>>> target.load(art).predict(data.test.x[:32]).shape
(32, 10)
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifact import Artifact, stage_id
from ..data.base import InputSpec
from ..errors import ArtifactError, BuildError, ConfigError
from ..export import (
    check_external_data,
    copy_onnx,
    deployment_meta,
    export_onnx,
    onnx_files,
    read_onnx_meta,
    write_onnx_meta,
)
from ..feeds import CalibrationFeeds, graph_feeds
from ..quiet import quiet_logger
from . import ort_providers
from .base import Availability, Runner, TargetInfo, begin_build

# float exports of this process, by (checkpoint id, rnn form, external-data threshold): a worker that builds fp32 and
# int8 of one checkpoint exports it once (the exporter's metadata is rewritten per build)
_EXPORTED: dict[tuple[str, str, int], Path] = {}
_EXPORT_DIR: list[Path] = []


def _export_cache_dir() -> Path:
    if not _EXPORT_DIR:
        import atexit

        _EXPORT_DIR.append(Path(tempfile.mkdtemp(prefix="modelpress-exports-")))
        atexit.register(shutil.rmtree, _EXPORT_DIR[0], True)
    return _EXPORT_DIR[0]


OPT_LEVELS = ("disable", "basic", "extended", "all")
CALIBRATIONS = ("minmax", "entropy", "percentile")
COMPUTE_PREFIXES = ("Conv", "Gemm", "MatMul", "LSTM", "GRU")
FLOAT_COMPUTE_OPS = ("Conv", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention")


@dataclass(frozen=True)
class OrtConfig:
    threads: int | None = None  # intra-op threads; None lets ORT decide
    optimization: str = "all"  # graph optimisation level at load time
    calibration: str = "minmax"  # int8 static: minmax | entropy | percentile
    per_channel: bool = True  # int8: per-channel weight scales
    activation_type: str = "uint8"  # int8 static activations: uint8 (U8S8) | int8 (S8S8)
    # int8 static: qdq (portable, TensorRT reads it) | qoperator (smaller, ORT only)
    quant_format: str = "qdq"
    exclude: tuple[str, ...] = ()  # int8: torch module paths kept in float (see sensitivity)
    # GRU/LSTM export: auto = unrolled into Linear layers for int8 builds (ORT has no int8 GRU and
    # does not quantize the exported LSTM), the native recurrent op otherwise
    rnn: str = "auto"
    percentile: float = 99.999  # for calibration="percentile"
    # execution providers, in order (ort_providers.py): cpu | cuda | tensorrt; load-time settings
    providers: tuple[str, ...] = ort_providers.DEFAULT
    device_id: int = 0  # the GPU of the cuda / tensorrt providers
    # graph optimisers ORT must not apply at load time. SkipLayerNormFusion: ORT 1.32's CPU
    # SkipLayerNormalization kernel is ~3x slower than the Add + LayerNormalization it replaces
    # (0.25 vs 0.08 ms at 128x256, one thread); unfused, BERT-mini runs 1.15x (fp32) and 1.28x
    # (dynamic int8) faster (benchmarks/results/ort_fusions.md). [] keeps every optimiser. ORT
    # ignores a name it does not know without a word: spell them as its optimizer classes do.
    disabled_optimizers: tuple[str, ...] = ("SkipLayerNormFusion",)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"onnxruntime threads must be >= 1, got {self.threads}")
        if self.optimization not in OPT_LEVELS:
            raise ConfigError(
                f"onnxruntime optimization {self.optimization!r} is unknown; choose one of {OPT_LEVELS}"
            )
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(
                f"calibration {self.calibration!r} is unknown; choose one of {CALIBRATIONS}"
            )
        if self.activation_type not in ("uint8", "int8"):
            raise ConfigError(
                f"activation_type must be uint8 or int8, got {self.activation_type!r}"
            )
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "providers", ort_providers.parse_providers(self.providers))
        if isinstance(self.disabled_optimizers, str) or not all(
            isinstance(o, str) and o for o in self.disabled_optimizers
        ):
            raise ConfigError(
                "onnxruntime disabled_optimizers must be a list of optimiser names, e.g. "
                f"[SkipLayerNormFusion], got {self.disabled_optimizers!r}"
            )
        object.__setattr__(self, "disabled_optimizers", tuple(self.disabled_optimizers))
        if self.device_id < 0:
            raise ConfigError(f"onnxruntime device_id must be >= 0, got {self.device_id}")
        if self.rnn not in ("auto", "native", "unrolled"):
            raise ConfigError(f"rnn must be auto, native or unrolled, got {self.rnn!r}")
        if self.quant_format not in ("qdq", "qoperator"):
            raise ConfigError(f"quant_format must be qdq or qoperator, got {self.quant_format!r}")
        if not 90.0 <= self.percentile < 100.0:
            raise ConfigError(f"percentile must be in [90, 100), got {self.percentile}")


def _quiet():
    """ORT's quantization tools log every node at INFO/WARNING; keep the console for errors."""
    return quiet_logger()


def op_counts(path: Path) -> Counter:
    import onnx

    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


class OrtRunner(Runner):
    """Feeds every graph input: the batch, and the inputs derived from it (feeds.py)."""

    def __init__(self, session: Any, input_spec: InputSpec):
        super().__init__(input_spec, "onnxruntime")
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        graph_feeds(np.zeros((0, *input_spec.shape)), self.input_names, input_spec.names)

    def _feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return graph_feeds(x, self.input_names, self.input_spec.names)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, self._feeds(x))[0].astype(np.float32, copy=False)

    def prepare(self, x: np.ndarray):
        """A zero-argument call on a fixed, checked batch (the benchmark's timed loop)."""
        return functools.partial(self.session.run, None, self._feeds(self.check_input(x)))


class OnnxRuntimeTarget:
    name: ClassVar[str] = "onnxruntime"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "dynamic_int8", "int8", "qdq")

    def __init__(self, **options: Any):
        self.cfg = OrtConfig(**options)

    def availability(self) -> Availability:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return Availability(False, f"onnxruntime is not installed ({exc})", extra="")
        return ort_providers.availability(self.cfg.providers)

    # -- build -------------------------------------------------------------------------------
    def build(
        self, art: Artifact, precision: str, calib: np.ndarray | None, out_dir: Path
    ) -> Artifact:
        out_dir, name = begin_build(self, art, precision, out_dir)
        dest = out_dir / f"{name}.{precision}.onnx"
        meta = deployment_meta(
            dict(art.meta), target=self.name, precision=precision, ort=self._cfg_meta(precision)
        )
        if precision == "qdq":
            return self._pass_through_qdq(art, dest, meta)
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            fp32 = self._float_onnx(art, Path(tmp), meta, precision)
            if precision == "fp32":
                built = fp32
            elif precision == "fp16":
                built = self._fp16(fp32, Path(tmp) / dest.name)
            elif precision == "dynamic_int8":
                built = self._dynamic_int8(fp32, Path(tmp) / dest.name, meta, out_dir, name)
            else:
                built = self._static_int8(fp32, Path(tmp) / dest.name, calib, meta, out_dir, name)
            write_onnx_meta(built, meta)
            self._check_runs(built)
            files = _move_onnx(built, dest)
        art_id = stage_id(art.id, f"{self.name}:{precision}", self._cfg_meta(precision))
        return Artifact(path=dest, format="onnx", id=art_id, meta=meta, files=files)

    def _cfg_meta(self, precision: str) -> dict[str, Any]:
        cfg = asdict(self.cfg)
        for load_time in (
            "threads",
            "providers",
            "device_id",
            "disabled_optimizers",
        ):  # they do not change the file
            cfg.pop(load_time)
        if precision == "int8":
            return cfg
        kept = {"exclude": list(cfg["exclude"])} if precision == "dynamic_int8" else {}
        return {"optimization": cfg["optimization"], **({} if not cfg["exclude"] else kept)}

    def _float_onnx(
        self, art: Artifact, tmp: Path, meta: dict[str, Any], precision: str = "fp32"
    ) -> Path:
        if art.format == "onnx":
            dest = tmp / art.path.name
            copy_onnx(art.path, dest)
            return dest
        if art.format != "torch":
            raise ConfigError(
                f"onnxruntime builds from a torch checkpoint or an .onnx file, not {art.format}"
            )
        from ..checkpoint import load_checkpoint
        from ..rnn_unroll import has_rnn, unroll_rnns

        ckpt = load_checkpoint(art.path)
        model = ckpt.model
        unroll = self.cfg.rnn == "unrolled" or (self.cfg.rnn == "auto" and "int8" in precision)
        if unroll and has_rnn(model):
            model = unroll_rnns(model)
            meta["rnn"] = "unrolled"
        dest = tmp / "model.fp32.onnx"
        from .. import export

        key = (art.id, meta.get("rnn", ""), export.EXTERNAL_DATA_BYTES)
        if key in _EXPORTED:  # the same checkpoint, exported before in this process
            copy_onnx(_EXPORTED[key], dest)
            return dest
        export_onnx(model, ckpt.input_spec, dest, meta, parent_id=art.id)
        cached = _export_cache_dir() / str(len(_EXPORTED)) / dest.name
        cached.parent.mkdir()
        copy_onnx(dest, cached)
        _EXPORTED[key] = cached
        return dest

    def _fp16(self, fp32: Path, dest: Path) -> Path:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with _quiet():
            proto = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(proto, str(dest))
        return dest

    def _dynamic_int8(
        self, fp32: Path, dest: Path, meta: dict[str, Any], out_dir: Path, name: str
    ) -> Path:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        short_tensor_names(fp32)
        excluded = nodes_of_modules(fp32, self.cfg.exclude)
        with _quiet():
            quantize_dynamic(
                str(fp32),
                str(dest),
                weight_type=QuantType.QInt8,
                per_channel=self.cfg.per_channel,
                nodes_to_exclude=excluded,
            )
        # the float twin, with the same tensor names, for per-layer localisation of divergence
        reference = out_dir / f"{name}.fp32-twin.onnx"
        copy_onnx(fp32, reference)
        meta["float_reference"] = reference.name
        meta["notes"] = _float_leftovers(dest)
        return dest

    def _static_int8(
        self,
        fp32: Path,
        dest: Path,
        calib: np.ndarray | None,
        meta: dict[str, Any],
        out_dir: Path,
        name: str,
    ) -> Path:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if calib is None or len(calib) == 0:
            raise ConfigError(
                "onnxruntime int8 needs calibration data: pass data.calibration(n) as calib"
            )
        prep = dest.with_name(f"{name}.fp32-prep.onnx")
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[self.cfg.calibration]
        act = QuantType.QUInt8 if self.cfg.activation_type == "uint8" else QuantType.QInt8
        extra = {"ActivationSymmetric": self.cfg.activation_type == "int8"}
        if self.cfg.calibration == "percentile":
            extra["CalibPercentile"] = self.cfg.percentile
        try:
            with _quiet():
                # a dynamic sequence axis (named token inputs): merge the symbolic dims that
                # ORT's shape inference cannot otherwise reconcile (BERT's attention reshapes)
                named = bool((meta.get("input_spec") or {}).get("names"))
                quant_pre_process(str(fp32), str(prep), auto_merge=named)
                short_tensor_names(prep)
                excluded = nodes_of_modules(prep, self.cfg.exclude)
                quantize_static(
                    str(prep),
                    str(dest),
                    _calibration_feeds(prep, calib, meta),
                    quant_format=QuantFormat.QDQ
                    if self.cfg.quant_format == "qdq"
                    else QuantFormat.QOperator,
                    per_channel=self.cfg.per_channel,
                    activation_type=act,
                    weight_type=QuantType.QInt8,
                    calibrate_method=method,
                    extra_options=extra,
                    nodes_to_exclude=excluded,
                    # an unrolled RNN: quantize only its projections; QDQ around every gate op
                    # of every step would cost more bytes than the int8 weights save
                    op_types_to_quantize=list(COMPUTE_PREFIXES)
                    if meta.get("rnn") == "unrolled"
                    else None,
                )
        except Exception as exc:
            raise BuildError(
                f"onnxruntime int8 quantization failed: {type(exc).__name__}: {exc}"
            ) from exc
        # the float twin, with the same tensor names, for per-layer localisation of divergence
        reference = out_dir / prep.name
        shutil.copy2(prep, reference)
        meta["float_reference"] = reference.name
        meta["notes"] = _float_leftovers(dest) + self._float_on_dequantized(dest)
        return dest

    def _float_on_dequantized(self, path: Path) -> list[str]:
        """The ops ORT still runs in float on dequantized tensors once it has fused what it can
        into int8 kernels (QLinearConv, QLinearMul, ...): each costs a DequantizeLinear before
        it and a QuantizeLinear after, and makes an int8 graph slower where they are many
        (MobileNetV3's hard-sigmoid and squeeze means: benchmarks/results/ort_profile.md)."""
        import onnx
        import onnxruntime as ort

        optimized = path.with_name(f"{path.stem}.ort-optimized.onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(optimized)
        opts.log_severity_level = 3
        try:
            ort.InferenceSession(
                str(path),
                opts,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=list(self.cfg.disabled_optimizers),
            )
            graph = onnx.load(str(optimized), load_external_data=False).graph
        except Exception:  # the session check after the build names what does not load
            return []
        finally:
            for f in path.parent.glob(f"{optimized.name}*"):
                f.unlink()
        dq = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        left = Counter(
            n.op_type
            for n in graph.node
            if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in dq for i in n.input)
        )
        if not left:
            return []
        ops = ", ".join(f"{op} x{k}" for op, k in left.most_common())
        return [
            f"run in float between DequantizeLinear and QuantizeLinear by onnxruntime "
            f"{ort.__version__} on CPU (no int8 kernel for them after its fusions): {ops}"
        ]

    def _pass_through_qdq(self, art: Artifact, dest: Path, meta: dict[str, Any]) -> Artifact:
        if art.format != "onnx" or not op_counts(art.path)["QuantizeLinear"]:
            raise ConfigError(
                "precision 'qdq' passes through an ONNX file with QuantizeLinear nodes (from QAT)"
            )
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            copy = Path(tmp) / dest.name
            copy_onnx(art.path, copy)
            write_onnx_meta(copy, meta)
            self._check_runs(copy)
            files = _move_onnx(copy, dest)
        return Artifact(
            path=dest,
            format="onnx",
            id=stage_id(art.id, "onnxruntime:qdq", {}),
            meta=meta,
            files=files,
        )

    def _check_runs(self, path: Path) -> None:
        """A build is only done when ORT can create a session for it (names the op if not)."""
        self._session(path)

    # -- load ----------------------------------------------------------------------------------
    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.cfg.optimization]
        if self.cfg.threads:
            opts.intra_op_num_threads = self.cfg.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        check_external_data(path)  # before ORT reads any external data file
        try:
            session = ort.InferenceSession(
                str(path),
                sess_options=opts,
                providers=ort_providers.session_providers(self.cfg.providers, self.cfg.device_id),
                disabled_optimizers=list(self.cfg.disabled_optimizers),
            )
        except Exception as exc:  # InvalidProtobuf, NotImplemented, Fail, ...
            raise _load_error(path, exc) from exc
        ort_providers.check_session(session, self.cfg.providers)  # no silent CPU fallback
        return session

    def load(self, art: Artifact) -> OrtRunner:
        self.availability().require(self.name)
        path = Path(art.path)
        if not path.is_file():
            raise ArtifactError(f"ONNX file {path} does not exist; build it first")
        meta = art.meta or read_onnx_meta(path)
        if "input_spec" not in meta:
            raise ArtifactError(
                f"{path} carries no modelpress metadata (input spec); build it with modelpress"
            )
        return OrtRunner(self._session(path), InputSpec.from_dict(meta["input_spec"]))

    def describe(self) -> TargetInfo:
        import onnxruntime as ort

        return TargetInfo(
            name=self.name,
            runtime="onnxruntime",
            version=ort.__version__,
            device=ort_providers.device_label(self.cfg.providers, self.cfg.device_id),
            threads=self.cfg.threads,
            details={
                "optimization": self.cfg.optimization,
                "providers": list(self.cfg.providers),
                "disabled_optimizers": list(self.cfg.disabled_optimizers),
            },
        )


def nodes_of_modules(path: Path, modules: tuple[str, ...]) -> list[str]:
    """Names of the graph nodes made by the torch modules at ``modules`` (export names nodes
    ``<module scope>/<Op>``; a conv folded with its BatchNorm carries the BN's scope, so a path
    inside a Sequential also matches its siblings: ``blocks.0.conv1.0`` -> ``blocks.0.conv1.*``)."""
    import onnx

    if not modules:
        return []
    names = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]
    picked, unmatched = [], []
    for module in modules:
        hits = [n for n in names if n.startswith(f"{module}/")]
        parent, _, last = module.rpartition(".")
        if not hits and parent and last.isdigit():  # folded into a sibling (conv + BN)
            hits = [
                n
                for n in names
                if n.startswith(f"{parent}.") and n.split("/")[-1].startswith(COMPUTE_PREFIXES)
            ]
        picked += hits
        if not hits:
            unmatched.append(module)
    if unmatched:
        raise ConfigError(
            f"exclude: no ONNX node comes from module(s) {unmatched}; node names: {names[:8]} ..."
        )
    return sorted(set(picked))


def short_tensor_names(path: Path) -> None:
    """Rename weights and intermediate tensors to short ids (``w0``, ``t0``) in place.

    The quantizer derives five names from every tensor (``_quantized``, ``_scale``, ...), so on
    a small model long names cost ~10 % of the int8 file. Graph inputs/outputs and node names
    (which carry the torch module path) are kept, so reports still name layers.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    g = proto.graph
    keep = {v.name for v in g.input} | {v.name for v in g.output} | {""}
    mapping = {init.name: f"w{i}" for i, init in enumerate(g.initializer) if init.name not in keep}
    produced = [o for n in g.node for o in n.output if o not in keep and o not in mapping]
    mapping.update({name: f"t{i}" for i, name in enumerate(dict.fromkeys(produced))})
    for init in g.initializer:
        init.name = mapping.get(init.name, init.name)
    for node in g.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for vi in g.value_info:
        vi.name = mapping.get(vi.name, vi.name)
    onnx.save(proto, str(path))


def _calibration_feeds(path: Path, calib: np.ndarray, meta: dict[str, Any]) -> CalibrationFeeds:
    """Calibration batches that feed every input of the graph at ``path``."""
    from ..onnx_inputs import graph_inputs

    names = [name for name, _, _ in graph_inputs(path)]
    spec_names = tuple((meta.get("input_spec") or {}).get("names", ()))
    return CalibrationFeeds(calib, lambda x: graph_feeds(x, names, spec_names, path.name))


def _float_leftovers(path: Path) -> list[str]:
    """Say which compute ops quantization left in float (never a silent partial quantization).

    A compute op counts as quantized when it was replaced by an integer op (QLinearConv,
    MatMulInteger, ...) or, in QDQ graphs, when one of its inputs comes from DequantizeLinear.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    left = Counter(
        n.op_type
        for n in graph.node
        if n.op_type in FLOAT_COMPUTE_OPS and not any(i in dq_outputs for i in n.input)
    )
    if not left:
        return []
    where = ", ".join(f"{op} x{k}" for op, k in sorted(left.items()))
    return [f"left in float by onnxruntime quantization: {where}"]


def _move_onnx(src: Path, dest: Path) -> tuple[Path, ...]:
    files = onnx_files(src)
    for f in files[1:]:
        target = dest.parent / f.relative_to(src.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(f), target)
    shutil.move(str(src), dest)
    return onnx_files(dest)


def _load_error(path: Path, exc: Exception) -> Exception:
    text = str(exc)
    if (
        "implementation for" in text
        or "NOT_IMPLEMENTED" in text
        or "not a registered function/op" in text
    ):
        op = _op_in(text)
        return BuildError(
            f"onnxruntime cannot run op {op} in {path.name}: {text.splitlines()[0][:300]}"
        )
    return ArtifactError(
        f"onnxruntime cannot load {path}: {text.splitlines()[0][:300] if text else type(exc).__name__}; "
        "the file is truncated or corrupt: rebuild it"
    )


def _op_in(text: str) -> str:
    import re

    for pattern in (
        r"implementation for (\w+)\(",
        r"node with name '[^']*' and op_type (\w+)",
        r"Op type not registered '(\w+)'",
        r"'(\w+)' is not a registered function/op",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return "(unknown op)"
