"""Which layer broke a quantized TFLite model: per-layer divergence on the interpreter itself.

:func:`localize` runs the quantized ``.tflite`` and an fp32 ``.tflite`` of the same checkpoint
(converted by the same litert-torch, so the graphs line up op for op) with every intermediate
tensor preserved, dequantizes the int8 tensors with their own scale / zero point, pairs each op
with its fp32 twin and measures the SQNR of its output. Errors accumulate down a network, so a
layer is ranked by the SQNR it *loses* (worst input SQNR minus output SQNR): the op where the
signal collapses comes first, not everything after it.

:func:`validate_artifact` validates an artifact on the runtime that runs it and, when a quantized
one disagrees with its float model, attaches the localisation report.

>>> rec, report = validate_artifact(int8_art, checkpoint_art, data.test)   # doctest: +SKIP
>>> report.summary()
'litert int8: most divergent layers: blocks.1.conv2.0 (-2.1 dB), ...'
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import Artifact
from ..data.base import Split
from ..errors import ConfigError
from ..validate import (
    LayerDivergence,
    LocalisationReport,
    ValidationRecord,
    compare,
    predict_all,
    sqnr_db,
)
from .litert import LiteRTTarget, encode_input, read_meta

PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE")  # change the representation, not the value
# move values without computing: never compared (their output is as good as their input)
LAYOUT = ("RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "SLICE", "STRIDED_SLICE", "SPLIT")
LAYOUT += ("SPLIT_V", "UNPACK", "PAD", "PADV2", "BROADCAST_TO")
# 8-bit's ideal SQNR (6.02 * 8 + 1.76 dB): a tensor above it is as good as int8 gets, so SQNR
# lost above this ceiling (e.g. quantizing the float input to 52 dB) is not counted as a drop
SQNR_CEILING = 6.02 * 8 + 1.76


@dataclass
class Capture:
    """One interpreter run: the ops in execution order and every op output, as float."""

    ops: list[dict[str, Any]]
    tensors: dict[int, dict[str, Any]]
    inputs: list[int]
    outputs: list[int]
    values: dict[int, np.ndarray] = field(default_factory=dict)  # index -> (n, *shape)


def capture(target: LiteRTTarget, path: Path, x: np.ndarray) -> Capture:
    """Run ``x`` through ``path`` (builtin kernels, all tensors kept) and record every tensor."""
    interp = target.interpreter(path, preserve_all_tensors=True)
    inp = interp.get_input_details()[0]
    batch = int(inp["shape"][0])
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    # _get_ops_details: private, but in both ai_edge_litert and tflite_runtime's interpreter
    ops = [op for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"]
    wanted = [inp["index"], *(i for op in ops for i in op["outputs"] if i >= 0)]
    runs: dict[int, list[np.ndarray]] = {i: [] for i in wanted}
    usable = len(x) - len(x) % batch
    if usable == 0:
        raise ConfigError(f"localize needs at least {batch} samples (the graph's batch)")
    for start in range(0, usable, batch):
        interp.set_tensor(inp["index"], encode_input(x[start : start + batch], inp))
        interp.invoke()
        for i in wanted:
            runs[i].append(_dequantize(interp.get_tensor(i), tensors[i]))
    return Capture(
        ops=ops,
        tensors=tensors,
        inputs=[inp["index"]],
        outputs=[d["index"] for d in interp.get_output_details()],
        values={i: np.concatenate(v) for i, v in runs.items()},
    )


def _dequantize(t: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if not np.issubdtype(t.dtype, np.integer):
        return t.astype(np.float32)
    q = detail["quantization_parameters"]
    scales, zeros = q["scales"], q["zero_points"]
    if len(scales) == 0:
        return t.astype(np.float32)  # an integer tensor that is not quantized (indices, shapes)
    if len(scales) > 1:  # per-channel
        shape = [1] * t.ndim
        shape[q["quantized_dimension"]] = -1
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    return ((t.astype(np.float32) - zeros) * scales).astype(np.float32)


def match_tensors(quant: Capture, ref: Capture) -> dict[int, int]:
    """Map quantized-graph tensors to fp32-graph tensors.

    Each op that computes (not a layout op, not QUANTIZE / DEQUANTIZE) is paired, in execution
    order, with an unpaired fp32 op of the same type and output shape that reads the fp32
    twins of what it reads (seen through layout and (de)quantize ops). Candidates come from the
    same module first, then siblings under its parent (fusions name ops differently), then
    anywhere; among several (q / k / v slices, unrolled RNN steps) the closest values win. An
    op with no such twin (the graphs are not always the same op for op) stays unpaired. A
    QUANTIZE / DEQUANTIZE output stands for the value of its input.
    """

    def keys(c: Capture, op: dict[str, Any]) -> tuple[tuple, ...]:
        t = c.tensors[op["outputs"][0]]
        loose = (op["op_name"], tuple(int(s) for s in t["shape"]))
        chain = location(t["name"])
        return (*loose, "at", *chain), (*loose, "in", *chain[:-1]), loose

    pools: dict[tuple, list[dict[str, Any]]] = {}
    for op in ref.ops:
        if op["op_name"] not in PASS_THROUGH + LAYOUT:
            for key in keys(ref, op):
                pools.setdefault(key, []).append(op)
    rivals: dict[tuple, list[dict[str, Any]]] = {}
    for op in quant.ops:
        if op["op_name"] not in PASS_THROUGH + LAYOUT:
            for key in keys(quant, op):
                rivals.setdefault(key, []).append(op)
    cache: dict[tuple[int, int], float] = {}

    def similarity(q_op: dict[str, Any], r_op: dict[str, Any]) -> float:
        pair = (q_op["index"], r_op["index"])
        if pair not in cache:
            q, r = quant.values[q_op["outputs"][0]], ref.values[r_op["outputs"][0]]
            cache[pair] = sqnr_db(r, q)
        return cache[pair]

    q_src, r_src = _sources(quant), _sources(ref)
    mapping, used, done = {quant.inputs[0]: ref.inputs[0]}, set(), set()
    for op in quant.ops:
        if op["op_name"] in PASS_THROUGH:  # in execution order, so its source is mapped first
            if op["inputs"][0] in mapping:
                mapping[op["outputs"][0]] = mapping[op["inputs"][0]]
            continue
        if op["op_name"] in LAYOUT:
            continue
        reads = {mapping[q_src(i)] for i in op["inputs"] if q_src(i) in mapping}
        for key in keys(quant, op):
            free = [
                r
                for r in pools.get(key, [])
                if r["index"] not in used and (not reads or reads & {r_src(i) for i in r["inputs"]})
            ]
            if not free:
                continue
            # mutual best: no other unpaired op of this kind matches the twin better
            others = [o for o in rivals[key] if o["index"] not in done and o is not op]
            good = [r for r in free if all(similarity(o, r) <= similarity(op, r) for o in others)]
            if good:
                best = max(good, key=lambda r: similarity(op, r))
                used.add(best["index"])
                done.add(op["index"])
                mapping.update(zip(op["outputs"], best["outputs"]))
            break
    return mapping


def _sources(c: Capture) -> Any:
    """tensor -> the tensor it carries the value of, seen through layout and (de)quantize ops."""
    producer = {o: op for op in c.ops for o in op["outputs"]}

    def source(t: int) -> int:
        while t in producer and producer[t]["op_name"] in PASS_THROUGH + LAYOUT:
            t = producer[t]["inputs"][0]
        return t

    return source


def location(tensor_name: str) -> list[tuple[str, str]]:
    """(class, attribute) pairs from the root module down, from a litert-torch tensor name
    (``pkg.ResNet8/torch...Sequential_blocks/pkg.BasicBlock_1/...``); the deepest of the fused
    locations (``a;;b``) wins. The root has no attribute."""
    best: list[tuple[str, str]] = []
    for loc in re.sub(r";\d*$", "", tensor_name).split(";"):
        if "<locals>" in loc or "." not in loc:
            continue
        parts = [seg.rsplit(".", 1)[-1] for seg in loc.split("/")]
        chain = [(parts[0], ""), *((c, a) for c, _, a in (p.partition("_") for p in parts[1:]))]
        if len(chain) > len(best):
            best = chain
    return best


def module_path(chain: list[tuple[str, str]], modules: dict[str, str] | None = None) -> str:
    """``blocks.1.conv2.0`` from a location chain; ``modules`` (path -> class name of the torch
    model) restores containers the trace skips (a ModuleList is never called: ``0.attn`` ->
    ``blocks.0.attn``)."""
    path = ".".join(a for _, a in chain[1:])
    if not path:
        return chain[0][0] if chain else ""
    if modules and path not in modules:
        cls = chain[-1][0]
        hits = [m for m, c in modules.items() if m.endswith("." + path) and c == cls]
        if len(hits) == 1:
            return hits[0]
    return path


def divergences(
    quant: Capture, ref: Capture, modules: dict[str, str] | None = None
) -> list[LayerDivergence]:
    """Per-op divergence of ``quant`` from ``ref``, in execution order (paired ops only).

    An op that is not compared (a layout op, or one with no fp32 twin) passes the SQNR of its
    inputs on, so the next compared op's drop includes whatever it lost.
    """
    mapping = match_tensors(quant, ref)
    first = quant.inputs[0]
    sqnr: dict[int, float] = {first: sqnr_db(*_pair(quant, ref, mapping, first))}
    labels = {first: "input"}
    layers = []
    for op in quant.ops:
        out = op["outputs"][0]
        labels.update(dict.fromkeys(op["outputs"], _label(quant, op, labels, modules)))
        known = [sqnr[i] for i in op["inputs"] if i in sqnr]
        paired = out in mapping and mapping[out] in ref.values
        if not paired or ref.values[mapping[out]].shape != quant.values[out].shape:
            sqnr.update({o: min(known) for o in op["outputs"] if known})
            continue
        r, q = _pair(quant, ref, mapping, out)
        sqnr[out] = sqnr_db(r, q)
        before = min(min(known), SQNR_CEILING) if known else SQNR_CEILING
        layers.append(
            LayerDivergence(
                layer=labels[out],
                sqnr_db=sqnr[out],
                max_abs_diff=float(np.abs(r - q).max()) if r.size else 0.0,
                op=op["op_name"],
                sqnr_drop_db=before - min(sqnr[out], SQNR_CEILING),
            )
        )
    return layers


def _label(
    c: Capture, op: dict[str, Any], labels: dict[int, str], modules: dict[str, str] | None
) -> str:
    """The module the op came from; for the converter's own ops (layout changes, (de)quantize
    at the graph's edges) the label of what they read, or ``output``."""
    name = c.tensors[op["outputs"][0]]["name"]
    if name.startswith("serving_default_output") or op["outputs"][0] in c.outputs:
        return "output"
    chain = location(name)
    if chain:
        return module_path(chain, modules)
    inherited = [labels[i] for i in op["inputs"] if i in labels]
    return inherited[0] if inherited else re.sub(r";\d*$", "", name)


def _pair(
    quant: Capture, ref: Capture, mapping: dict[int, int], i: int
) -> tuple[np.ndarray, np.ndarray]:
    return ref.values[mapping[i]], quant.values[i]


def localize(
    reference: Artifact, quantized: Artifact, x: np.ndarray, *, max_samples: int = 64
) -> LocalisationReport:
    """Per-layer divergence of a quantized ``.tflite`` from its float original, worst first.

    ``reference`` is the float torch checkpoint the artifact was built from (converted here to
    fp32 TFLite with the same converter and batch) or an fp32 ``.tflite`` of it.

    >>> report = localize(checkpoint_art, int8_art, data.test.x[:64])   # doctest: +SKIP
    >>> report.worst(1)[0].layer
    'blocks.1.conv2.0'
    """
    from . import litert_quant

    qmeta = read_meta(quantized.path)
    target = LiteRTTarget(threads=1)
    x = np.asarray(x)[:max_samples]
    with tempfile.TemporaryDirectory() as tmp:
        ref_path, modules = _reference_tflite(reference, qmeta, Path(tmp), litert_quant)
        ref = capture(target, ref_path, x)
        quant = capture(target, Path(quantized.path), x)
    layers = divergences(quant, ref, modules)
    kinds = [op["op_name"] for op in quant.ops]
    compute = sum(k not in PASS_THROUGH + LAYOUT for k in kinds)
    notes = [
        f"{len(quant.values[quant.inputs[0]])} samples; intermediates read with TFLite's builtin "
        "kernels (XNNPACK off) so that every tensor is kept",
        f"{sum(d.op not in PASS_THROUGH for d in layers)} of {compute} compute ops paired with "
        f"their fp32 twin; {len(kinds) - compute} layout / (de)quantize ops pass SQNR through",
        "ranked by the SQNR lost at the op (worst input SQNR - output SQNR, above "
        f"{SQNR_CEILING:.1f} dB not counted); sqnr_db is cumulative from the input",
    ]
    return LocalisationReport(
        target="litert", precision=str(qmeta.get("precision", "")), layers=layers, notes=notes
    )


def _reference_tflite(
    reference: Artifact, qmeta: dict[str, Any], tmp: Path, litert_quant: Any
) -> tuple[Path, dict[str, str] | None]:
    """An fp32 .tflite of the checkpoint ``quantized`` was built from, and its module names."""
    from ..checkpoint import load_checkpoint

    parent = qmeta.get("parent_id", "")
    if reference.format == "tflite":
        rmeta = read_meta(reference.path)
        batches = (rmeta.get("build", {}).get("batch"), qmeta.get("build", {}).get("batch"))
        if batches[0] != batches[1]:
            raise ConfigError(
                f"the fp32 .tflite takes batch {batches[0]}, the quantized one {batches[1]}; "
                "build both with the same batch or pass the torch checkpoint"
            )
        if rmeta.get("precision") != "fp32" or rmeta.get("parent_id") != parent:
            raise ConfigError(
                f"localize needs an fp32 .tflite of the same checkpoint ({parent}); {reference.path} is "
                f"{rmeta.get('precision')} of {rmeta.get('parent_id')}"
            )
        return Path(reference.path), None
    if reference.format != "torch":
        raise ConfigError(
            f"localize compares with a torch checkpoint or fp32 tflite, not {reference.format}"
        )
    ckpt = load_checkpoint(reference.path)
    if parent and ckpt.meta.id != parent:
        raise ConfigError(
            f"{reference.path} (id {ckpt.meta.id}) is not the checkpoint this artifact was built from ({parent})"
        )
    batch = int(qmeta.get("build", {}).get("batch", 1))
    data, _ = litert_quant.convert(ckpt.model, ckpt.input_spec, "fp32", None, batch=batch)
    path = tmp / "reference.fp32.tflite"
    path.write_bytes(data)
    return path, {name: type(m).__name__ for name, m in ckpt.model.named_modules()}


def validate_artifact(
    art: Artifact,
    reference: Artifact,
    split: Split,
    *,
    target: LiteRTTarget | None = None,
    min_agreement: float = 0.99,
    max_drop_points: float = 1.0,
    samples: int = 64,
) -> tuple[ValidationRecord, LocalisationReport | None]:
    """Validate ``art`` on the LiteRT interpreter against the float torch ``reference``.

    When a quantized artifact agrees with the float model on fewer than ``min_agreement`` of the
    samples, or loses more than ``max_drop_points`` accuracy points, the localisation report of
    the samples it gets wrong (then others, up to ``samples``) comes with the record.
    """
    from .torch import TorchTarget

    runner = (target or LiteRTTarget()).load(art)
    logits = predict_all(runner, split.x)
    runner.close()
    reference_logits = predict_all(TorchTarget().load(reference), split.x)
    record = compare(logits, split.y, reference_logits)
    bad = (record.agreement or 0.0) < min_agreement or (
        record.accuracy_drop or 0.0
    ) > max_drop_points
    if art.meta.get("precision") == "fp32" or not bad:
        return record, None
    agree = logits.argmax(-1) == reference_logits.argmax(-1)
    order = np.argsort(agree, kind="stable")  # disagreements first
    return record, localize(reference, art, split.x[order[:samples]], max_samples=samples)
