"""The interleaved regression gate, and ``modelpress compare --interleave BASE NEW``.

A stored baseline was measured at another time, so a gate against it compares two states of a
shared machine as much as two artifacts. Here the baseline artifact and the current one are
measured now, alternately, in one worker (:mod:`modelpress.measure.interleave`), and a check
fails only when the confidence interval of the current/baseline latency ratio lies entirely
above ``1 + tolerance``. In a policy or a recipe's ``gates:``::

    regression:
      mode: interleaved
      baseline: ci/main-results.json   # a results file of the base build (its artifact paths),
                                       # or one artifact file (.onnx / .tflite) for every match
      match: {precision: int8}
      tolerance: 0.02                  # the default, measured: benchmarks/gate_aa_ab.py

>>> from modelpress.measure.gate_interleaved import measure_pair     # doctest: +SKIP
>>> res = measure_pair(Path("base.onnx"), Path("new.onnx"), "onnxruntime", {"threads": 1},
...                    {"batch_sizes": [1], "blocks": 30, "calls_per_block": 50, "warmup": 50})
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifact import Artifact
from ..errors import ConfigError, one_line
from .interleave import DEFAULT_TOLERANCE

if TYPE_CHECKING:
    from .gate import Regression
    from .results import Record, Results

Check = tuple  # (record, name, status, value, limit, message, details): gate.py's GateCheck
FORMATS = {".onnx": ("onnx", "onnxruntime"), ".tflite": ("tflite", "litert")}


def artifact_from_file(path: Path) -> Artifact:
    """A built artifact read back from its file (.onnx or .tflite, with modelpress metadata)."""
    if path.suffix not in FORMATS:
        raise ConfigError(f"{path} is not an .onnx or .tflite artifact; give a built model file")
    if not path.is_file():
        raise ConfigError(f"artifact {path} does not exist; build it first (modelpress run)")
    fmt, _ = FORMATS[path.suffix]
    if fmt == "onnx":
        from ..export import read_onnx_meta

        meta = read_onnx_meta(path)
    else:
        from ..targets.litert_meta import read_meta

        meta = read_meta(path)
    if "input_spec" not in meta:
        raise ConfigError(
            f"{path} carries no modelpress metadata (input spec); build it with modelpress"
        )
    ident = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return Artifact(path=path, format=fmt, id=meta.get("id", ident), meta=meta, files=(path,))


def measure_pair(
    base: Path | Artifact,
    new: Path | Artifact,
    target: str,
    options: dict[str, Any],
    settings: dict[str, Any],
    slowdown: float = 0.0,
) -> dict[str, Any]:
    """The worker's ``interleave`` result for A = ``base``, B = ``new`` (a fresh process)."""
    from .bench import run_worker

    a, b = (x if isinstance(x, Artifact) else artifact_from_file(Path(x)) for x in (base, new))
    job = {
        "mode": "interleave",
        "artifact_a": a.to_dict(),
        "artifact_b": b.to_dict(),
        "target": target,
        "target_options": options,
        "slowdown_b": slowdown,
        "settings": settings,
    }
    with tempfile.TemporaryDirectory(prefix="modelpress-ab-") as tmp:
        return run_worker(job, 3600.0, Path(tmp))


def _options_of(rec: Record) -> dict[str, Any]:
    """The load-time settings a record was measured with (threads; ORT's optimization)."""
    opts: dict[str, Any] = {"threads": rec.threads} if rec.threads else {}
    details = (rec.runtime or {}).get("details") or {}
    if rec.target == "onnxruntime":
        for key in ("optimization", "disabled_optimizers"):
            if details.get(key) is not None:
                opts[key] = details[key]
    return opts


def _baseline_artifact(rec: Record, reg: Regression, base: Results | None) -> Path | None:
    if base is None:
        return Path(str(reg.baseline))
    old = base.find(*rec.key)
    return Path(old.artifact_path) if old is not None and old.artifact_path else None


def interleaved_checks(results: Results, reg: Regression, where: Path | None = None) -> list[Check]:
    """One check per matched, measured local record and batch size: measured now against its
    baseline artifact, interleaved (the fields of :class:`modelpress.measure.gate.GateCheck`)."""
    from .interleave import InterleavedResult, interleaved_verdict
    from .results import load_results

    path = Path(str(reg.baseline))
    if not path.is_absolute() and not path.exists() and where is not None:
        path = where / path
    base = load_results(path, "baseline") if path.suffix == ".json" else None
    tol = reg.allowed_slowdown()
    checks = []
    for rec in results.records:
        if rec.status != "ok" or rec.device is not None or not reg.match.matches(rec):
            continue
        name = "regression_interleaved"
        art = _baseline_artifact(rec, reg, base) if base is not None else path
        if art is None or not Path(rec.artifact_path).is_file():
            what = "no baseline record" if art is None else f"{rec.artifact_path} is gone"
            status = "error" if reg.missing == "error" else "skip"
            checks.append((rec.label, name, status, None, None, f"{what}; cannot compare", {}))
            continue
        batches = reg.batches or [lat.batch for lat in rec.latency]
        settings = {
            "batch_sizes": batches,
            "blocks": reg.blocks,
            "calls_per_block": reg.calls_per_block,
            "warmup": max(reg.calls_per_block, 10),
            "confidence": reg.confidence,
            "reload": reg.reload,
        }
        try:
            res = measure_pair(art, Path(rec.artifact_path), rec.target, _options_of(rec), settings)
        except ConfigError as exc:
            checks.append((rec.label, name, "error", None, None, one_line(exc), {}))
            continue
        if res["status"] != "ok":
            checks.append((rec.label, name, "error", None, None, res.get("reason", ""), {}))
            continue
        for entry in res["batches"]:
            ir = InterleavedResult.from_dict(entry)
            status, why = interleaved_verdict(ir, tol)
            details = {"ci_low": ir.ci_low, "ci_high": ir.ci_high, "baseline": str(art)}
            value, limit = round(ir.ratio, 4), 1.0 + tol
            message = why.replace("B/A", "current/baseline", 1)
            checks.append(
                (rec.label, f"{name}@batch{entry['batch']}", status, value, limit, message, details)
            )
    return checks


# --- modelpress compare --interleave BASE NEW ------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``compare --interleave`` (the two files are the command's inputs)."""
    g = p.add_argument_group("--interleave BASE NEW: measure two artifacts now, alternately")
    g.add_argument(
        "--interleave", action="store_true", help="the inputs are two artifacts: BASE then NEW"
    )
    g.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    g.add_argument("--batches", default="1", help="comma-separated batch sizes (default 1)")
    g.add_argument("--blocks", type=int, default=30, help="ABBA block pairs per batch size")
    g.add_argument("--calls-per-block", type=int, default=50)
    g.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"fail when NEW is slower than BASE beyond this fraction (default {DEFAULT_TOLERANCE})",
    )
    g.add_argument("--json", type=Path, help="also write the measurement here")


def cmd_interleave(a: argparse.Namespace) -> int:
    """Exit 0: NEW is not slower than BASE beyond the tolerance; 1: it is; 2: bad input."""
    from ..fsutil import atomic_write_text
    from .interleave import InterleavedResult, interleaved_verdict

    if len(a.results) != 2:
        raise ConfigError(f"--interleave takes two artifacts, BASE and NEW; got {len(a.results)}")
    base, new = (artifact_from_file(Path(p)) for p in a.results)
    if base.format != new.format:
        raise ConfigError(
            f"BASE is {base.format} and NEW is {new.format}: compare one runtime's files"
        )
    batches = [int(b) for b in str(a.batches).split(",") if b.strip()]
    settings = {
        "batch_sizes": batches,
        "blocks": a.blocks,
        "calls_per_block": a.calls_per_block,
        "warmup": max(a.calls_per_block, 10),
        "confidence": 0.95,
    }
    target = FORMATS[Path(base.path).suffix][1]
    res = measure_pair(base, new, target, {"threads": a.threads}, settings)
    if a.json:
        atomic_write_text(a.json, json.dumps(res, indent=1))
    if res["status"] != "ok":
        print(f"modelpress: error: {res['reason']}", file=sys.stderr)
        return 1 if res["status"] == "failed" else 2
    worst = 0
    for entry in res["batches"]:
        status, why = interleaved_verdict(InterleavedResult.from_dict(entry), a.tolerance)
        print(f"batch {entry['batch']}: {status.upper()}  {why.replace('B/A', 'NEW/BASE', 1)}")
        worst = max(worst, status == "fail")
    return worst
