"""The worker side of the int8 accuracy budget (``mode: int8_check``): validate one quantized
artifact on its own runtime against the float model it was built from and, when it loses more
than the budget, localise the layers that broke it and say which torch modules to keep in float.

Runs in a worker process (:mod:`modelpress.measure.worker`): only there are the runtimes
imported. The loop that rebuilds is :mod:`modelpress.run.int8_fallback`.

- accuracy on the **test** split, against the float model's test logits (``reference_logits``):
  the budget applies to the very drop that the run's table, report and gates show;
- localisation on the **calibration** inputs (drawn from the train split): which layers to keep
  in float is chosen without looking at test labels.

A candidate names the layer the localisation blamed and the modules to keep in float for it. On
ONNX Runtime a QDQ tensor is quantized wherever it is read by a quantized node, so keeping a
layer's output in float means keeping the layer and the nodes that read that output in float
(an outlier activation range is fixed by both, by neither alone: tests/test_int8_fallback.py).
On LiteRT the blamed op's module is kept in float (litert-torch's per-module config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

LOCALISE_SAMPLES = 64  # calibration inputs run through both graphs, every tensor kept
MIN_LOSS_DB = 1.0  # a layer that loses less SQNR than this is never a candidate
REPORT_LAYERS = 8  # localisation rows kept for the report


def run_int8_check(job: dict[str, Any]) -> dict[str, Any]:
    """Validate ``job["artifact"]`` on its target against ``job["reference_logits"]`` and, if
    the drop exceeds ``job["max_drop"]`` and ``job["localise"]``, rank the layers to keep float."""
    from ..artifact import Artifact
    from ..errors import TargetUnavailable, one_line
    from ..targets import get_target
    from ..validate import compare, predict_all
    from .timing import load_data

    art = Artifact.from_dict(job["artifact"])
    phase = "data"
    try:
        data = load_data(dict(art.meta))
        if data is None:
            return {"status": "failed", "reason": "the artifact records no data set to validate on"}
        phase = "validate"
        target = get_target(job["target"], **job.get("target_options", {}))
        runner = target.load(art)
        logits = predict_all(runner, data.test.x)
        runner.close()
        ref = np.load(job["reference_logits"], allow_pickle=False)
        rec = compare(logits, data.test.y, ref)
        out: dict[str, Any] = {"status": "ok", "validation": rec.to_dict()}
        if job.get("localise") and (rec.accuracy_drop or 0.0) > job["max_drop"]:
            phase = "localise"
            source = Artifact.from_dict(job["source"])
            calib = data.calibration(LOCALISE_SAMPLES, seed=1)
            report, candidates = _localise(job["target"], art, source, calib)
            out["localisation"] = {
                **report.to_dict(),
                "layers": report.to_dict()["layers"][:REPORT_LAYERS],
            }
            out["candidates"] = candidates
        return out
    except TargetUnavailable as exc:
        return {"status": "skipped", "reason": one_line(exc)}
    except Exception as exc:  # one failing check is a row that says why, never a crash
        return {"status": "failed", "reason": f"{phase}: {type(exc).__name__}: {one_line(exc)}"}


def _localise(target: str, art, source, x: np.ndarray) -> tuple[Any, list[dict[str, Any]]]:
    if target == "onnxruntime":
        from ..targets.onnxruntime_debug import localize

        report = localize(art, x)
        twin = Path(art.path).parent / str(art.meta["float_reference"])
        return report, ort_candidates(report, twin)
    from ..targets.litert_debug import localize as litert_localize

    report = litert_localize(source, art, x)
    return report, litert_candidates(report, _module_names(source))


def _blamed(report) -> list:
    return [d for d in report.ranked() if (d.sqnr_drop_db or 0.0) >= MIN_LOSS_DB]


def _scope(node_name: str) -> str:
    """The torch module path of an exported node (``blocks.1.conv1.0/Conv`` -> its scope)."""
    return node_name.rpartition("/")[0] if "/" in node_name else ""


def ort_candidates(report, twin: Path) -> list[dict[str, Any]]:
    """Per blamed layer, worst first: the modules to keep in float so that neither the layer
    nor its output tensor is quantized (the layer, and every node that reads its output)."""
    import onnx

    graph = onnx.load(str(twin), load_external_data=False).graph
    by_name = {n.name: n for n in graph.node}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    out = []
    for d in _blamed(report):
        node = by_name.get(d.layer.split("+")[0])
        if node is None or not _scope(node.name):
            continue
        outputs = list(node.output)
        if "+" in d.layer:  # fused with the activation that follows: that is the output
            outputs = [o for r in readers.get(outputs[0], []) for o in r.output]
        modules = [_scope(node.name)]
        modules += [_scope(r.name) for o in outputs for r in readers.get(o, []) if _scope(r.name)]
        out.append(_candidate(d, list(dict.fromkeys(modules))))
    return out


def litert_candidates(report, modules: set[str]) -> list[dict[str, Any]]:
    """Per blamed op, worst first: its torch module (ops of no known module are skipped)."""
    return [_candidate(d, [d.layer]) for d in _blamed(report) if d.layer in modules]


def _candidate(d, keep: list[str]) -> dict[str, Any]:
    return {"layer": d.layer, "op": d.op, "sqnr_drop_db": d.sqnr_drop_db, "keep_float": keep}


def _module_names(source) -> set[str]:
    from ..checkpoint import load_checkpoint

    return {name for name, _ in load_checkpoint(source.path).model.named_modules() if name}
