"""LiteRT / TFLite on CPU (XNNPACK): convert with litert-torch (no TensorFlow), run with the
LiteRT interpreter (``ai_edge_litert``), or ``tflite_runtime`` where only that is installed.

Precisions:
- ``fp32``: the converted graph as it is;
- ``fp16``: weights stored in half precision, compute in float32 (ai-edge-quantizer float casting);
- ``dynamic_int8``: int8 per-channel weights, activations quantized on the fly (PT2E dynamic);
- ``int8``: full-integer, per-channel int8 weights, int8 activations calibrated on the
  calibration split (PT2E static, histogram observer). What the quantizer leaves in float
  (GRU / LSTM cells, LayerNorm, softmax ...) is listed in ``quantization.float_ops``. The file
  takes and returns float32 (QUANTIZE / DEQUANTIZE ops are added at its edges) unless
  ``int8_io=True`` keeps the int8 interface the converter produced.

Every artifact records its constants' bytes by dtype (``quantization.weight_bytes``): e.g. an
int8 LSTM keeps its recurrent weights in float32, while ``dynamic_int8`` quantizes them.

TFLite graphs have a fixed batch (litert-torch cannot export a dynamic one here): the model is
converted for ``batch`` samples (1 by default) and the runner feeds any batch in chunks. The
modelpress metadata (input spec, preprocessing, labels, lineage, I/O quantization and a SHA-256
over the whole file) is embedded in the flatbuffer's ``metadata`` under ``modelpress``; read it
with :func:`read_meta`. Per-layer localisation of a quantized file: :mod:`.litert_debug`.

>>> from modelpress.targets import get_target                            # doctest: +SKIP
>>> target = get_target("litert", threads=2)
>>> art = target.build(checkpoint_artifact, "int8", data.calibration(256), Path("out"))
>>> target.load(art).predict(data.test.x[:32]).shape
(32, 10)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..artifact import Artifact, stage_id
from ..data.base import InputSpec
from ..devices.runner import decode as decode_output  # one (de)quantization on every device
from ..devices.runner import encode, fixed_batch_logits
from ..errors import ArtifactError, BuildError, ConfigError, one_line
from ..feeds import numpy_feeds
from ..quiet import quiet
from .base import Availability, Runner, TargetInfo, check_build, safe_stem
from .litert_meta import read_meta, write_with_meta

RUNTIMES = ("auto", "ai_edge_litert", "tflite_runtime")
OBSERVERS = ("histogram", "minmax")
EXTRA = "tflite"
CONVERSION = 2  # see build(): part of every artifact's id
# the most a graph converted for another batch may differ from the first graph on the same
# inputs, as a share of the largest logit: float kernels sum in another order at another batch,
# and dynamic int8 quantizes each call's activations with that whole batch's range
SAME_GRAPH_TOL = 0.05


@dataclass(frozen=True)
class LiteRTConfig:
    threads: int = 1  # interpreter num_threads (XNNPACK's thread pool)
    int8_io: bool = False  # int8: keep the int8 input/output of the converted graph
    per_channel: bool = True  # int8 / dynamic_int8: per-channel (else per-tensor) weight scales
    calib_size: int = 0  # int8: calibration samples used (0: every sample passed in)
    batch: int = 1  # the fixed batch the graph is converted for
    # more fixed batches, each converted into a graph of its own next to the file (same weights
    # and quantization): a call with exactly that many samples runs its graph, any other batch
    # runs ``batch``'s graph in chunks. ``modelpress run`` sets it to the benchmark's batch sizes
    batches: tuple[int, ...] = ()
    runtime: str = "auto"  # auto: ai_edge_litert, else tflite_runtime
    xnnpack: bool = True  # False: TFLite's builtin kernels only (no default delegate)
    # int8 activation ranges: histogram (L2 search, litert-torch's default; seconds per
    # activation tensor) or minmax (the calibration's extremes; fast, outlier-sensitive)
    observer: str = "histogram"
    # int8 / dynamic_int8: torch module paths kept in float (litert-torch's per-module config)
    exclude: tuple[str, ...] = ()
    # GRU/LSTM: unrolled = Linear layers (rnn_unroll.py), so that int8 quantizes the cell
    # (litert-torch's quantizer leaves nn.GRU / nn.LSTM float): 2.5-3.7x faster than fp32 at
    # hidden 256, but slower at hidden 64, batch 1, and the file is not smaller (per-step biases
    # and quantization parameters; benchmarks/results/rnn_int8.md). auto = native. An unrolled
    # dynamic_int8 graph does not load in LiteRT 2.3: refused at build time
    rnn: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if isinstance(self.batches, (int, str)) or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in self.batches
        ):
            raise ConfigError(
                f"litert batches must be a list of integers >= 1, e.g. [32], got {self.batches!r}"
            )
        extra = dict.fromkeys(b for b in self.batches if b != self.batch)
        object.__setattr__(self, "batches", tuple(extra))
        for name in ("threads", "batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"litert {name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.calib_size, int) or self.calib_size < 0:
            raise ConfigError(f"litert calib_size must be >= 0 (0: all), got {self.calib_size!r}")
        if self.observer not in OBSERVERS:
            raise ConfigError(
                f"litert observer {self.observer!r} is unknown; choose one of {OBSERVERS}"
            )
        if self.rnn not in ("auto", "native", "unrolled"):
            raise ConfigError(f"litert rnn must be auto, native or unrolled, got {self.rnn!r}")
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"litert runtime {self.runtime!r} is unknown; choose one of {RUNTIMES}"
            )


def _rnn_form(model: Any, precision: str, rnn: str) -> tuple[Any, str]:
    """``model`` with its GRU/LSTM layers unrolled when ``rnn`` is ``unrolled`` (``auto`` keeps
    them native), and the form built: ``"unrolled"``, ``"native"`` or ``""`` (no RNN)."""
    from ..rnn_unroll import has_rnn, unroll_rnns

    if not has_rnn(model):
        return model, ""
    if rnn != "unrolled":
        return model, "native"
    if precision == "dynamic_int8":
        raise BuildError(
            "litert dynamic_int8 of an unrolled GRU/LSTM does not load in LiteRT (its "
            "FULLY_CONNECTED takes int8 in and float out); use rnn: native (or auto) for "
            "dynamic_int8, or int8"
        )
    return unroll_rnns(model), "unrolled"


# ---------------------------------------------------------------------------------------------
# runner


class LiteRTRunner(Runner):
    """Feeds any batch through a fixed-batch TFLite graph; (de)quantizes int8 input/output.
    Named inputs (``input_ids`` + ``attention_mask``) are all set (:mod:`modelpress.feeds`)."""

    def __init__(
        self,
        interpreter: Any,
        input_spec: InputSpec,
        meta: dict[str, Any],
        others: dict[int, Callable[[], Any]] | None = None,
    ):
        super().__init__(input_spec, "litert")
        self.interpreter = interpreter
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        want = max(1, len(input_spec.names))
        if len(inputs) != want or len(outputs) != 1:
            raise ArtifactError(
                f"litert runner expects {want} input(s) and one output, the model has "
                f"{len(inputs)} and {len(outputs)}; rebuild it for its input spec"
            )
        self.inputs = _by_name(inputs, input_spec.names)  # input name -> its detail
        self.inp, self.out = inputs[0], outputs[0]
        self.batch = int(self.inp["shape"][0])
        self.meta = meta
        # the graphs converted for other batches: batch -> a loader of its interpreter (loaded
        # at its first call, so an unused graph costs no memory)
        self.others = {b: load for b, load in (others or {}).items() if b != self.batch}
        self._loaded: dict[int, LiteRTRunner] = {}

    def _run(self, x: np.ndarray) -> np.ndarray:  # x: (B, *spec.shape)
        if len(x) in self.others:
            return self._graph(len(x))._chunk(x)
        return fixed_batch_logits(x, self.batch, int(self.out["shape"][-1]), self._chunk)

    def _graph(self, batch: int) -> LiteRTRunner:
        if batch not in self._loaded:
            self._loaded[batch] = LiteRTRunner(self.others[batch](), self.input_spec, self.meta)
        return self._loaded[batch]

    def _chunk(self, chunk: np.ndarray) -> np.ndarray:  # (b, ...) -> (b, classes), float
        feeds = numpy_feeds(chunk, self.input_spec.names or ("",))
        for name, detail in self.inputs.items():
            self.interpreter.set_tensor(detail["index"], encode_input(feeds[name], detail))
        self.interpreter.invoke()
        return decode_output(self.interpreter.get_tensor(self.out["index"]), self.out)

    def close(self) -> None:
        self.interpreter = None
        self._loaded.clear()


def _by_name(details: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each input's detail by name: litert-torch names a keyword input ``<signature>_<name>``
    and the positional one (the data's array, ``names[0]``) ``<signature>_args_0``."""
    if not names:
        return {"": details[0]}
    found = {n: [d for d in details if str(d["name"]).endswith(f"_{n}")] for n in names[1:]}
    rest = [d for d in details if all(d is not h for hits in found.values() for h in hits)]
    if any(len(hits) != 1 for hits in found.values()) or len(rest) != 1:
        raise ArtifactError(
            f"litert: the model's inputs {[d['name'] for d in details]} do not match its input "
            f"spec {list(names)}; rebuild it for its input spec"
        )
    return {names[0]: rest[0], **{n: hits[0] for n, hits in found.items()}}


def encode_input(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """``x`` in the dtype the graph's input takes (the runner's :func:`encode`: quantized with
    its scale / zero point if int); token ids that do not fit that dtype are refused."""
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer) and np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(dtype)
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise ConfigError(f"litert: token ids do not fit the model's {dtype} input")
    return encode(x, detail)


# ---------------------------------------------------------------------------------------------
# target


class LiteRTTarget:
    """The ``litert`` target: litert-torch conversion, LiteRT interpreter on CPU."""

    name: ClassVar[str] = "litert"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "dynamic_int8", "int8")

    def __init__(self, **options: Any):
        self.config = LiteRTConfig(**options)

    # -- availability --------------------------------------------------------------------------

    def runtime_module(self) -> str | None:
        """The interpreter package this target runs with, or None if none is installed."""
        wanted = self.config.runtime
        for name in ("ai_edge_litert", "tflite_runtime"):
            if wanted in ("auto", name) and _installed(name):
                return name
        return None

    def availability(self) -> Availability:
        if self.runtime_module() is not None:
            return Availability(True)
        if self.config.runtime == "tflite_runtime":
            return Availability(
                False,
                "tflite_runtime is not installed; pip install tflite-runtime, or use runtime='auto'",
            )
        return Availability(False, "neither ai-edge-litert nor tflite-runtime is installed", EXTRA)

    def converter_availability(self, precision: str = "fp32") -> Availability:
        """Whether this machine can build ``precision`` (litert-torch, torchao, ai-edge-quantizer)."""
        needs = {"litert_torch": "litert-torch"}
        if precision in ("int8", "dynamic_int8"):
            needs["torchao"] = "torchao"
        if precision == "fp16":
            needs["ai_edge_quantizer"] = "ai-edge-quantizer"
        missing = [pip for mod, pip in needs.items() if not _installed(mod)]
        if missing:
            return Availability(
                False, f"building {precision} needs {', '.join(missing)} (not installed)", EXTRA
            )
        return Availability(True)

    # -- build -----------------------------------------------------------------------------------

    def build(
        self, art: Artifact, precision: str, calib: np.ndarray | None, out_dir: Path
    ) -> Artifact:
        """Convert a torch checkpoint artifact to ``<out_dir>/<stem>.<precision>.tflite``."""
        from ..checkpoint import load_checkpoint
        from . import litert_quant

        # not begin_build: the file is named after the checkpoint's file (below), as it always was
        check_build(self, precision, self.converter_availability(precision))
        if art.format != "torch":
            raise ConfigError(f"the litert target builds from a torch checkpoint, not {art.format}")
        ckpt = load_checkpoint(art.path)
        spec = ckpt.input_spec
        calib = self._check_calib(precision, calib, spec)
        cfg = self.config
        model, rnn = _rnn_form(ckpt.model, precision, cfg.rnn)
        graphs, quant = litert_quant.convert_batches(
            model,
            spec,
            precision,
            calib,
            (cfg.batch, *cfg.batches),
            per_channel=cfg.per_channel,
            observer=cfg.observer,
            exclude=cfg.exclude,
        )
        graphs = {b: self._finish(data, quant) for b, data in graphs.items()}
        model_bytes, io = graphs[cfg.batch]
        quant["float_ops"] = litert_quant.float_ops(model_bytes) if precision == "int8" else {}
        quant["weight_bytes"] = litert_quant.weight_bytes(model_bytes)
        build_cfg = {
            "precision": precision,
            # bumped when the conversion itself changes, so that a run's cache rebuilds:
            # 2 = litert_annotators (int8 adds, muls, pools, hard activations) + NHWC pads
            "conversion": CONVERSION,
            "batch": cfg.batch,
            **({"batches": list(cfg.batches)} if cfg.batches else {}),
            "int8_io": cfg.int8_io if precision == "int8" else False,
            "per_channel": cfg.per_channel,
            **({"observer": cfg.observer} if cfg.observer != "histogram" else {}),
            **({"exclude": list(cfg.exclude)} if cfg.exclude and "int8" in precision else {}),
            **({"rnn": rnn} if rnn else {}),
            "calib": _array_digest(calib) if calib is not None else None,
        }
        art_id = stage_id(art.id, self.name, build_cfg)
        meta = litert_quant.artifact_meta(art.meta, precision, art_id, build_cfg, io, quant)
        dest = Path(out_dir) / f"{safe_stem(Path(art.path).stem)}.{precision}.tflite"
        dest.parent.mkdir(parents=True, exist_ok=True)
        others = self._other_graphs(graphs, dest, meta, spec, calib)
        meta["batch_graphs"] = {str(b): f.name for b, f in others.items()}
        try:
            write_with_meta(model_bytes, meta, dest)
            meta = read_meta(dest)  # what the file says, digest included
        except BaseException:
            for f in others.values():  # no half-written artifact
                f.unlink(missing_ok=True)
            raise
        files = (dest, *others.values())
        return Artifact(path=dest, format="tflite", id=art_id, meta=meta, files=files)

    def _finish(self, data: bytes, quant: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """A converted graph with its interface set and its embedding tables symmetric (the
        notes of that go to ``quant`` once for all the graphs of a build), and its I/O."""
        from . import litert_quant

        data, io = litert_quant.set_interface(data, float_io=not self.config.int8_io)
        data, tables = litert_quant.symmetric_embedding_tables(data)
        quant["notes"] = list(dict.fromkeys([*quant.get("notes", []), *tables]))
        return data, io

    def _other_graphs(
        self,
        graphs: dict[int, tuple[bytes, dict]],
        dest: Path,
        meta: dict[str, Any],
        spec: InputSpec,
        calib: np.ndarray | None,
    ) -> dict[int, Path]:
        """The graphs of the other batches written next to ``dest`` (``<stem>.b<batch>.tflite``),
        each kept only if it computes what the first graph computes on the same inputs: a graph
        quantized at a fixed batch and converted at another can mix up samples without failing.
        A dropped one is a note; its batch runs the first graph in chunks."""
        from . import litert_quant

        first = self.config.batch
        kept: dict[int, Path] = {}
        notes = meta["quantization"].setdefault("notes", [])
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            ref = Path(tmp) / "first.tflite"
            write_with_meta(graphs[first][0], meta, ref)
            for b, (data, _) in graphs.items():
                if b == first:
                    continue
                path = dest.with_name(f"{dest.stem}.b{b}.tflite")
                write_with_meta(data, {**meta, "graph_batch": b}, path)
                why = self._differs(ref, path, spec, calib, b)
                if why:
                    path.unlink()
                    notes.append(litert_quant.no_graph_note(b, first, why))
                else:
                    kept[b] = path
        return kept

    def _differs(
        self, ref: Path, other: Path, spec: InputSpec, calib: np.ndarray | None, b: int
    ) -> str:
        """Why the graph ``other`` (batch ``b``) does not compute what ``ref`` computes, or ''."""
        if calib is not None:
            pool = np.asarray(calib, dtype=spec.dtype)
        elif np.issubdtype(np.dtype(spec.dtype), np.integer):
            pool = np.ones((b, *spec.shape), dtype=spec.dtype)  # token ids
        else:
            pool = np.random.default_rng(0).standard_normal((b, *spec.shape)).astype(spec.dtype)
        x = np.resize(pool, (b, *spec.shape))  # ``b`` samples, the pool's repeated if fewer
        try:
            want = LiteRTRunner(self.interpreter(ref), spec, {})._run(x)
            got = LiteRTRunner(self.interpreter(other), spec, {})._run(x)
        except (ArtifactError, RuntimeError, ValueError) as exc:
            return f"it does not run: {one_line(exc)[:160]}"
        scale = float(np.abs(want).max()) or 1.0
        err = float(np.abs(got - want).max()) / scale
        if err > SAME_GRAPH_TOL:
            first = self.config.batch
            return f"its outputs differ from the batch-{first} graph's by {err:.1%} of the largest logit"
        return ""

    def _check_calib(
        self, precision: str, calib: np.ndarray | None, spec: InputSpec
    ) -> np.ndarray | None:
        if precision != "int8":
            return None
        if calib is None or len(calib) == 0:
            raise ConfigError(
                "litert int8 needs calibration data: pass calib=data.calibration(256) "
                "(inputs from the train split)"
            )
        calib = np.asarray(calib)
        if tuple(calib.shape[1:]) != spec.shape:
            raise ConfigError(
                f"calibration batch {tuple(calib.shape)} does not match the model input (n, {', '.join(map(str, spec.shape))})"
            )
        if np.issubdtype(calib.dtype, np.integer) != (spec.dtype == "int64"):
            raise ConfigError(f"calibration data is {calib.dtype}; the model takes {spec.dtype}")
        calib = np.ascontiguousarray(calib, dtype=spec.dtype)
        if self.config.calib_size:
            calib = calib[: self.config.calib_size]
        if len(calib) < self.config.batch:
            raise ConfigError(
                f"litert int8 needs at least batch={self.config.batch} calibration samples, got {len(calib)}"
            )
        return calib

    # -- load / describe ---------------------------------------------------------------------------

    def load(self, art: Artifact) -> LiteRTRunner:
        """A runner for a ``tflite`` artifact (checks the file's digest first)."""
        self.availability().require(self.name)
        if art.format != "tflite":
            raise ConfigError(f"the litert target loads tflite artifacts, not {art.format}")
        meta = read_meta(art.path)
        spec = InputSpec.from_dict(meta["input_spec"])
        interpreter = self.interpreter(Path(art.path))
        return LiteRTRunner(interpreter, spec, meta, self._graph_loaders(Path(art.path), meta))

    def _graph_loaders(self, path: Path, meta: dict[str, Any]) -> dict[int, Callable[[], Any]]:
        """A loader per graph converted for another batch that lies next to ``path`` (a file
        copied without them runs every batch through its own graph, in chunks)."""
        loaders = {}
        for batch, name in (meta.get("batch_graphs") or {}).items():
            other = path.with_name(name)
            if other.is_file():
                loaders[int(batch)] = functools.partial(self._checked_interpreter, other)
        return loaders

    def _checked_interpreter(self, path: Path) -> Any:
        read_meta(path)  # its digest: an edited or truncated graph is refused like the first
        return self.interpreter(path)

    def interpreter(self, path: Path, preserve_all_tensors: bool = False) -> Any:
        """An allocated interpreter for ``path`` with this target's threads and kernels."""
        module = self.runtime_module()
        if module is None:
            self.availability().require(self.name)
        interp_mod = importlib.import_module(f"{module}.interpreter")
        resolver = interp_mod.OpResolverType
        kind = (
            resolver.AUTO
            if self.config.xnnpack and not preserve_all_tensors
            else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        try:
            with quiet():
                interpreter = interp_mod.Interpreter(
                    model_path=str(path),
                    num_threads=self.config.threads,
                    experimental_op_resolver_type=kind,
                    experimental_preserve_all_tensors=preserve_all_tensors,
                )
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{module} cannot load {path}: {one_line(exc)}") from exc
        return interpreter

    def describe(self) -> TargetInfo:
        module = self.runtime_module()
        dist = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime"}.get(
            module or "", "ai-edge-litert"
        )
        details = {
            "available": str(self.availability()),
            "converter": f"litert-torch {_version('litert-torch')}",
            "kernels": "XNNPACK" if self.config.xnnpack else "TFLite builtin (no delegate)",
            **{k: v for k, v in asdict(self.config).items() if k != "threads"},
        }
        return TargetInfo(
            name=self.name,
            runtime=module or "none",
            version=_version(dist),
            device=f"cpu ({details['kernels']})",
            threads=self.config.threads,
            details=details,
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _array_digest(x: np.ndarray) -> str:
    x = np.ascontiguousarray(x)
    head = f"{x.dtype}:{x.shape};".encode()
    return hashlib.sha256(head + x.tobytes()).hexdigest()[:16]
