"""The runner that travels: loads, validates and times one artifact on a device, standalone.

This one file is copied to a remote device (over SFTP or ``adb push``) with the artifact and its
inputs, and run there by the device's own Python (3.9+). It imports the standard library, numpy
and the runtime it is asked for (onnxruntime, ai_edge_litert or tflite_runtime) — never torch,
never modelpress — and numpy only once a job needs it, so ``probe`` answers even without numpy.
The local benchmark worker uses its timing loop and machine facts too
(:mod:`modelpress.measure.timing`, :mod:`modelpress.measure.machine`): a latency is measured by the
same code on every device.

Protocol (version :data:`PROTOCOL`; a host refuses a runner of another version):

``python runner.py probe``
    one JSON line on stdout: ``protocol``, ``python``, ``numpy`` (version or null), ``runtimes``
    (module -> version or null), ``facts`` (the machine: CPU model, flags digest, cores, OS, GPUs,
    runtime versions).
``python runner.py run JOB_DIR``
    reads ``JOB_DIR/job.json``::

        {"protocol": 1, "runtime": "onnxruntime" | "litert", "model": "model.onnx",
         "graphs": {"32": "model.b32.tflite"},  # litert: graphs for other fixed batches
         "options": {"threads": 1, "optimization": "all",       # onnxruntime
                     "disabled_optimizers": ["SkipLayerNormFusion"]},
                    {"threads": 1, "xnnpack": true, "module": "auto"}  # litert
         "input_names": ["input_ids", "attention_mask"],          # [] for one unnamed input
         "inputs": "../inputs/<digest>.npy",  # the batch pool, already in the model's dtype
         "validate": true,                    # logits of every row of inputs -> logits.npy
         "batch_sizes": [1, 32], "warmup_calls": 10, "warmup_seconds": 0.2,
         "min_calls": 200, "min_seconds": 2.0, "predict_batch": 256}

    and writes ``JOB_DIR/result.json`` (``protocol``, ``status`` ok | failed | skipped,
    ``reason``, ``load_s``, ``runtime``, ``batches``: [{``batch``, ``seconds``, ``warmup_calls``,
    ``graph_batch`` (the fixed batch of the graph that ran it), ``samples``: file}],
    ``peak_rss_bytes``, ``rss_before_load_bytes``, ``seconds``), per-call times in nanoseconds
    as ``samples_b<batch>.npy`` (int64) and ``logits.npy`` (float32). The host turns them into
    the same records as a local measurement. Exit status 0 whenever ``result.json`` was written.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import importlib
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROTOCOL = 1
RUNTIME_MODULES = ("onnxruntime", "ai_edge_litert", "tflite_runtime")
DISTRIBUTIONS = {  # module -> its pip distribution (what to install when it is missing)
    "numpy": "numpy",
    "onnxruntime": "onnxruntime",
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
}
PAD_ID = 0  # <pad> in modelpress's vocabularies: the derived attention_mask is 0 there


# --- the machine ---------------------------------------------------------------------------------


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what ``platform`` says)."""
    for line in _cpuinfo():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``), sorted; [] where unknown."""
    for line in _cpuinfo():
        if line.split(":", 1)[0].strip().lower() in ("flags", "features"):
            return sorted(set(line.split(":", 1)[1].split()))
    return []


def gpus() -> list[str]:
    """NVIDIA GPU models from the driver's /proc files (no CUDA import); [] where none."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            lines = info.read_text(errors="replace").splitlines()
        except OSError:
            continue
        names += [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model:")]
    return names


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return usable or 1


def versions(distributions: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Installed versions, read from package metadata (nothing is imported)."""
    from importlib import metadata

    found = {}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def machine_facts(runtimes: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """What a latency depends on besides the artifact: CPU model and flags (digest), logical and
    usable cores, OS, kernel and architecture, GPUs, and the versions of ``runtimes``."""
    flags = cpu_flags()
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16] if flags else "",
        "logical_cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "gpus": gpus(),
        "runtimes": versions(list(runtimes)),
    }


def maxrss_bytes() -> int:
    """Peak resident set size of this process so far (``VmHWM`` on Linux: ``ru_maxrss`` is
    carried over fork + exec there), else ``ru_maxrss`` (bytes on macOS, KiB elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


# --- timing --------------------------------------------------------------------------------------


def time_calls(call: Callable[[], Any], min_calls: int, min_seconds: float) -> Any:
    """Per-call latency (ns, an int64 array) of ``call()``: at least ``min_calls`` calls AND
    ``min_seconds``. Only ``call`` sits between the two clock reads; the garbage collector is
    paused, as timeit does, so that a collection triggered by other code is not billed to it."""
    import numpy as np

    samples: list[int] = []
    append, clock = samples.append, time.perf_counter_ns
    deadline = clock() + int(min_seconds * 1e9)
    n = 0
    enabled = gc.isenabled()
    gc.disable()
    try:
        while True:
            t0 = clock()
            call()
            t1 = clock()
            append(t1 - t0)
            n += 1
            if n >= min_calls and t1 >= deadline:
                break
    finally:
        if enabled:
            gc.enable()
    return np.asarray(samples, dtype=np.int64)


# --- runtimes ------------------------------------------------------------------------------------


class Unavailable(Exception):
    """The device lacks what the job needs: the job is ``skipped`` with this one line."""


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(
            f"{module} is not installed there ({exc}): pip install {DISTRIBUTIONS[module]}"
        ) from exc


def _derived(name: str, x: Any) -> Any:
    import numpy as np

    if name == "attention_mask":
        return (x != PAD_ID).astype(x.dtype)
    if name == "token_type_ids":
        return np.zeros_like(x)
    raise ValueError(f"input {name!r} cannot be derived from the data's array")


def feeds(x: Any, graph_inputs: list[str], names: list[str]) -> dict[str, Any]:
    """The graph's feeds: one unnamed input takes ``x``; named ones are matched by name (the
    first name is the data's array, the others derived from it as modelpress does)."""
    if not names:
        return {graph_inputs[0]: x}
    return {g: x if g == names[0] else _derived(g, x) for g in graph_inputs}


class OrtModel:
    """An onnxruntime session made exactly as modelpress's onnxruntime target makes it."""

    LEVELS = {
        "disable": "ORT_DISABLE_ALL",
        "basic": "ORT_ENABLE_BASIC",
        "extended": "ORT_ENABLE_EXTENDED",
        "all": "ORT_ENABLE_ALL",
    }

    def __init__(self, path: Path, options: dict[str, Any], names: list[str]):
        ort = _import("onnxruntime")
        opts = ort.SessionOptions()
        level = self.LEVELS[options.get("optimization", "all")]
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        if options.get("threads"):
            opts.intra_op_num_threads = int(options["threads"])
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path),
            sess_options=opts,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(options.get("disabled_optimizers", [])),
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.names = names
        self.info = {"runtime": "onnxruntime", "version": ort.__version__, "device": "cpu"}

    def predict(self, x: Any) -> Any:
        import numpy as np

        out = self.session.run(None, feeds(x, self.inputs, self.names))[0]
        return out.astype(np.float32, copy=False)

    def prepare(self, x: Any) -> Callable[[], Any]:
        return functools.partial(self.session.run, None, feeds(x, self.inputs, self.names))

    def add_graph(self, batch: int, path: Path) -> None:
        raise ValueError("an onnxruntime model takes any batch: it has no graphs per batch")

    def graph_batch(self, batch: int) -> int:
        return batch  # one graph, any batch


class LiteModel:
    """A LiteRT interpreter made as modelpress's litert target makes it: fixed-batch graph,
    int8 input/output (de)quantized with the tensors' own scale and zero point."""

    def __init__(self, path: Path, options: dict[str, Any], names: list[str]):
        module = options.get("module", "auto")
        if module == "auto":
            have = [m for m in ("ai_edge_litert", "tflite_runtime") if _installed(m)]
            module = have[0] if have else "ai_edge_litert"
        interp = _import(f"{module}.interpreter") if _installed(module) else _import(module)
        kind = interp.OpResolverType
        self.interpreter = interp.Interpreter(
            model_path=str(path),
            num_threads=int(options.get("threads", 1)),
            experimental_op_resolver_type=kind.AUTO
            if options.get("xnnpack", True)
            else kind.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        self.out = self.interpreter.get_output_details()[0]
        self.inputs = _by_name(inputs, names)
        self.batch = int(inputs[0]["shape"][0])
        self.names = names or [""]
        dist = DISTRIBUTIONS[module]
        self.info = {"runtime": module, "version": versions([dist]).get(dist, ""), "device": "cpu"}
        self.options = options  # the graphs of other batches load with the same settings
        self.others: dict[int, Path] = {}  # batch -> its graph, loaded at its first call
        self.loaded: dict[int, LiteModel] = {}

    def add_graph(self, batch: int, path: Path) -> None:
        """A graph converted for ``batch``: a call of exactly that many samples runs it."""
        if batch != self.batch:
            self.others[batch] = path

    def graph_batch(self, batch: int) -> int:
        """The fixed batch of the graph a call of ``batch`` samples runs."""
        return batch if batch in self.others else self.batch

    def predict(self, x: Any) -> Any:
        if len(x) in self.others:
            if len(x) not in self.loaded:
                self.loaded[len(x)] = LiteModel(self.others[len(x)], self.options, self.names)
            return self.loaded[len(x)]._chunk(x)
        return fixed_batch_logits(x, self.batch, int(self.out["shape"][-1]), self._chunk)

    def _chunk(self, chunk: Any) -> Any:
        named = {n: chunk if i == 0 else _derived(n, chunk) for i, n in enumerate(self.names)}
        for name, detail in self.inputs.items():
            self.interpreter.set_tensor(detail["index"], encode(named[name], detail))
        self.interpreter.invoke()
        return decode(self.interpreter.get_tensor(self.out["index"]), self.out)

    def prepare(self, x: Any) -> Callable[[], Any]:
        return functools.partial(self.predict, x)


def fixed_batch_logits(x: Any, batch: int, classes: int, run: Callable[[Any], Any]) -> Any:
    """Logits of every row of ``x`` from a graph whose batch is fixed at ``batch``: ``run``
    takes one full chunk and returns its float logits; the last chunk is padded with zeros and
    the padding's rows dropped (modelpress's litert target runs its graphs the same way)."""
    import numpy as np

    n = len(x)
    logits = np.empty((n, classes), dtype=np.float32)
    for start in range(0, n, batch):
        chunk = x[start : start + batch]
        k = len(chunk)
        if k < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - k, *chunk.shape[1:]), chunk.dtype)])
        logits[start : start + k] = run(chunk)[:k]
    return logits


def _installed(module: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _by_name(details: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Each input's detail by name (litert-torch names a keyword input ``<sig>_<name>``)."""
    if not names:
        return {"": details[0]}
    found = {n: next(d for d in details if str(d["name"]).endswith(f"_{n}")) for n in names[1:]}
    rest = [d for d in details if all(d is not h for h in found.values())]
    return {names[0]: rest[0], **found}


def encode(x: Any, detail: dict[str, Any]) -> Any:
    """``x`` in the dtype the graph's input takes: quantized with its scale / zero point if int."""
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    if np.issubdtype(x.dtype, np.floating) and np.issubdtype(dtype, np.integer) and scale:
        info = np.iinfo(dtype)
        q = np.round(x.astype(np.float32) / scale) + zero
        return np.clip(q, info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def decode(y: Any, detail: dict[str, Any]) -> Any:
    import numpy as np

    scale, zero = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)


MODELS = {"onnxruntime": OrtModel, "litert": LiteModel}


# --- the job -------------------------------------------------------------------------------------


def _save(path: Path, array: Any) -> str:
    import numpy as np

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)
    return path.name


def _batch(pool: Any, batch: int) -> Any:
    import numpy as np

    reps = -(-batch // len(pool))
    return np.ascontiguousarray(np.concatenate([pool] * reps)[:batch])


def run_job(folder: Path) -> dict[str, Any]:
    """Load, validate and time the job in ``folder``; what was measured survives a failure."""
    t_start = time.perf_counter()
    job = json.loads((folder / "job.json").read_text())
    out: dict[str, Any] = {"protocol": PROTOCOL, "status": "ok", "reason": "", "batches": []}
    phase = "job"
    try:
        if job.get("protocol") != PROTOCOL:
            raise ValueError(f"job protocol {job.get('protocol')!r}, this runner speaks {PROTOCOL}")
        np = _import("numpy")
        if job["runtime"] not in MODELS:
            raise ValueError(f"runtime {job['runtime']!r} is not one of {sorted(MODELS)}")
        pool = np.load(folder / job["inputs"], allow_pickle=False)
        out["rss_before_load_bytes"] = maxrss_bytes()
        phase = "load"
        t0 = time.perf_counter()
        model = MODELS[job["runtime"]](folder / job["model"], job["options"], job["input_names"])
        for batch, name in (job.get("graphs") or {}).items():
            model.add_graph(int(batch), folder / name)
        out["load_s"] = time.perf_counter() - t0
        out["runtime"] = {**model.info, "threads": job["options"].get("threads")}
        if job.get("validate"):
            phase = "validate"
            step = int(job.get("predict_batch", 256))
            parts = [model.predict(pool[i : i + step]) for i in range(0, len(pool), step)]
            _save(folder / "logits.npy", np.concatenate(parts).astype(np.float32))
        for batch in job["batch_sizes"]:
            phase = f"latency at batch {batch}"
            call = model.prepare(_batch(pool, int(batch)))
            warm = time_calls(call, int(job["warmup_calls"]), float(job["warmup_seconds"]))
            t0 = time.perf_counter()
            samples = time_calls(call, int(job["min_calls"]), float(job["min_seconds"]))
            entry = {"batch": int(batch), "seconds": time.perf_counter() - t0}
            entry["graph_batch"] = model.graph_batch(int(batch))
            entry["warmup_calls"] = int(warm.size)
            entry["samples"] = _save(folder / f"samples_b{int(batch)}.npy", samples)
            out["batches"].append(entry)
    except Unavailable as exc:
        out.update(status="skipped", reason=str(exc))
    except Exception as exc:  # a result that says why, never a traceback instead of a result
        out.update(status="failed", reason=f"{phase}: {type(exc).__name__}: {_line(exc)}")
    out["peak_rss_bytes"] = max(maxrss_bytes(), out.get("rss_before_load_bytes", 0))
    out["seconds"] = time.perf_counter() - t_start
    return out


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] or type(exc).__name__


def probe() -> dict[str, Any]:
    """What this device offers: Python, numpy, the runtimes, and the machine's facts."""
    dists = ["numpy", *(DISTRIBUTIONS[m] for m in RUNTIME_MODULES)]
    found = versions(dists)
    return {
        "protocol": PROTOCOL,
        "python": platform.python_version(),
        "numpy": found.get("numpy") if _installed("numpy") else None,
        "runtimes": {
            m: found.get(DISTRIBUTIONS[m]) if _installed(m) else None for m in RUNTIME_MODULES
        },
        "facts": machine_facts(list(DISTRIBUTIONS.values())),
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"] and len(argv) == 1:
        print(json.dumps(probe()))
        return 0
    if argv[:1] == ["run"] and len(argv) == 2:
        folder = Path(argv[1])
        result = run_job(folder)
        tmp = folder / "result.json.tmp"
        tmp.write_text(json.dumps(result))
        os.replace(tmp, folder / "result.json")
        return 0
    print("usage: runner.py probe | runner.py run JOB_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
