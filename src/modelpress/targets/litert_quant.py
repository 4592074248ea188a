"""Conversion and quantization for the litert target, and the flatbuffer edits after it.

- :func:`convert`: torch model -> TFLite bytes at fp32, fp16 (weights), dynamic_int8 or int8;
- :func:`set_interface`: float32 input/output around a full-integer graph (or keep int8);
- :func:`float_ops`: the ops a quantized graph still computes in float;
- :func:`weight_bytes`: bytes of constants by dtype (int8, float16, float32);
- :func:`symmetric_embedding_tables`: int8 embedding tables re-quantized with zero point 0;

>>> data, quant = convert(model, spec, "int8", data.calibration(256))   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data.base import InputSpec
from ..errors import BuildError, ModelPressError, one_line
from ..export import deployment_meta, dynamic_shapes, example_inputs
from ..quiet import quiet
from . import litert_annotators, litert_layout

QUANTIZE, DEQUANTIZE = "QUANTIZE", "DEQUANTIZE"
INT_TYPES = ("INT8", "UINT8", "INT16")
CALIB_BATCH = 32  # samples per calibration forward pass


def convert(
    model: nn.Module,
    spec: InputSpec,
    precision: str,
    calib: np.ndarray | None,
    *,
    per_channel: bool = True,
    batch: int = 1,
    observer: str = "histogram",
    exclude: tuple[str, ...] = (),
) -> tuple[bytes, dict[str, Any]]:
    """TFLite flatbuffer bytes of ``model`` at ``precision``, and what was quantized how.

    A model with named inputs (``spec.names``) is converted with every input (the derived ones
    as keywords), so the file takes them all. Raises :class:`BuildError` naming the op
    litert-torch could not lower.
    """
    graphs, quant = convert_batches(
        model,
        spec,
        precision,
        calib,
        (batch,),
        per_channel=per_channel,
        observer=observer,
        exclude=exclude,
    )
    return graphs[batch], quant


def convert_batches(
    model: nn.Module,
    spec: InputSpec,
    precision: str,
    calib: np.ndarray | None,
    batches: tuple[int, ...],
    *,
    per_channel: bool = True,
    observer: str = "histogram",
    exclude: tuple[str, ...] = (),
) -> tuple[dict[int, bytes], dict[str, Any]]:
    """:func:`convert` for several fixed batches: ``{batch: TFLite bytes}``, ``batches[0]``'s
    graph always, each other one where it converts (quantized once: every graph has the same
    weights and quantization parameters; the litert target then checks that each computes what
    the first one does). A batch without a graph is said in ``quant["notes"]``."""
    model = model.eval()
    first = batches[0]
    args, sample_kwargs = example_inputs(model, spec, _example(spec, first, calib))
    log: list[str] = []
    try:
        with quiet(log), torch.no_grad():
            import litert_torch

            quant: dict[str, Any] = {"method": "none"}
            kwargs: dict[str, Any] = {}
            source, graph = model, model
            if precision == "fp16":
                from litert_torch.generative.quantize import quant_recipes

                kwargs["quant_config"] = quant_recipes.full_fp16_recipe()
                quant = {"method": "fp16 weights (float casting), float32 compute"}
            elif precision in ("dynamic_int8", "int8"):
                graph, kwargs["quant_config"], quant = _pt2e(
                    model, spec, args[0], precision, calib, per_channel, first, observer, exclude
                )
            layout = litert_layout.register()
            if layout:
                quant.setdefault("notes", []).append(layout)
            edge = litert_torch.convert(graph, args, sample_kwargs=sample_kwargs or None, **kwargs)
            graphs = {first: bytes(edge.model_content())}
            for b in dict.fromkeys(batches[1:]):
                if b == first:
                    continue
                extra, why = _other_batch(litert_torch, source, graph, spec, b, kwargs)
                if extra is None:
                    quant.setdefault("notes", []).append(no_graph_note(b, first, why))
                else:
                    graphs[b] = extra
    except ModelPressError:
        raise
    except Exception as exc:  # litert-torch / torch.export / jax raise many types
        raise BuildError(_failure(exc, model, precision, log)) from exc
    return graphs, quant


def no_graph_note(batch: int, first: int, why: str) -> str:
    """What a build without a graph for ``batch`` says (the runner then chunks)."""
    runs = -(-batch // first)
    return (
        f"no batch-{batch} graph ({why}): a batch of {batch} runs the batch-{first} graph "
        f"{runs} times"
    )


def _other_batch(
    litert_torch: Any, source: nn.Module, graph: Any, spec: InputSpec, b: int, kwargs: Any
) -> tuple[bytes | None, str]:
    """The graph of ``graph`` (the model, or its quantized form) converted at batch ``b``."""
    args, sample_kwargs = example_inputs(source, spec, _example(spec, b, None))
    try:
        edge = litert_torch.convert(graph, args, sample_kwargs=sample_kwargs or None, **kwargs)
    except Exception as exc:  # a graph specialised to its batch while quantizing, an op ...
        return None, one_line(exc)[:200]
    return bytes(edge.model_content()), ""


def _minmax_activations(config: Any) -> Any:
    """``config`` with a min/max observer on activations instead of the histogram one: its
    L2 search loops in Python (about a second per activation tensor here, minutes for a
    MobileNetV2), min/max costs nothing but follows outliers."""
    import dataclasses

    from torchao.quantization.pt2e.observer import MinMaxObserver

    def swap(spec: Any) -> Any:
        if spec is None:
            return None
        ctr = MinMaxObserver.with_args(eps=2**-12)
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=ctr)

    return dataclasses.replace(
        config,
        input_activation=swap(config.input_activation),
        output_activation=swap(config.output_activation),
    )


def _example(spec: InputSpec, batch: int, calib: np.ndarray | None) -> torch.Tensor:
    if calib is not None:
        return torch.from_numpy(np.ascontiguousarray(calib[:batch]))
    if spec.dtype == "int64":
        return torch.ones((batch, *spec.shape), dtype=torch.int64)
    return torch.zeros((batch, *spec.shape), dtype=torch.float32)


def _pt2e(
    model: nn.Module,
    spec: InputSpec,
    example: torch.Tensor,
    precision: str,
    calib: np.ndarray | None,
    per_channel: bool,
    batch: int,
    observer: str = "histogram",
    exclude: tuple[str, ...] = (),
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """PT2E: export, annotate with litert-torch's quantizer, calibrate (static), convert; every
    call feeds the model all of ``spec``'s inputs."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = precision == "dynamic_int8"
    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic)
    if observer == "minmax" and not dynamic:
        config = _minmax_activations(config)
    quantizer = PT2EQuantizer().set_global(config)
    notes = _keep_float(quantizer, model, exclude)
    static_ops = litert_annotators.static_ops(PT2EQuantizer.STATIC_OPS)
    if not dynamic and any(isinstance(m, nn.GRU) for m in model.modules()):
        # its GRU annotator expects an explicit initial state (gru(x, h0)); ours pass none
        static_ops.remove("gru_io_only")
        notes.append("nn.GRU kept in float: litert-torch's GRU annotator needs an explicit h0")
    quantizer.STATIC_OPS = static_ops
    feed = functools.partial(example_inputs, model, spec)
    prepared, calib_batch = _prepare(model, spec, example, quantizer, prepare_pt2e, batch)
    samples = calib if calib is not None else example.numpy()
    for chunk in _chunks(samples, calib_batch, fixed=calib_batch == batch):
        args, kwargs = feed(torch.from_numpy(chunk))
        prepared(*args, **kwargs)
    converted = convert_pt2e(prepared, fold_quantize=False)
    move_exported_model_to_eval(converted)
    _one_reader_per_dequantize(converted)
    scheme = "per-channel" if per_channel else "per-tensor"
    quant = {
        "method": (
            f"PT2E dynamic: symmetric {scheme} int8 weights, activations quantized at run time"
            if dynamic
            else f"PT2E static: symmetric {scheme} int8 weights, int8 activations ({observer} observer)"
        ),
        "calib_samples": 0 if dynamic else len(calib) if calib is not None else 0,
        "calib_batch": 0 if dynamic else calib_batch,
        "notes": notes,
        **({"kept_float": list(exclude)} if exclude else {}),
    }
    return converted, QuantConfig(pt2e_quantizer=quantizer), quant


def _one_reader_per_dequantize(graph_module: Any) -> int:
    """Give every reader of a shared dequantize node its own copy (same arguments and meta).

    litert-torch 0.10's layout pass (``OptimizeLayoutTransposesPass.insert_t_q_dq``) replaces a
    dequantize node's meta when it puts a transpose after it for one reader, dropping its shape;
    the next reader then fails with "Attempting to convert non-NHWC compatible node to NHWC:
    dequantize_per_tensor_N" (MobileNetV2's residual adds: a block's output read by the add and
    by the next block). One reader per node leaves nothing to clobber. Returns the copies made.
    """
    import copy

    made = 0
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or "dequantize" not in str(node.target):
            continue
        for reader in list(node.users)[1:]:
            with graph_module.graph.inserting_after(node):
                twin = graph_module.graph.call_function(node.target, node.args, node.kwargs)
            twin.meta = copy.copy(node.meta)
            reader.replace_input_with(node, twin)
            made += 1
    if made:
        graph_module.graph.lint()
        graph_module.recompile()
    return made


def _keep_float(quantizer: Any, model: nn.Module, exclude: tuple[str, ...]) -> list[str]:
    """Keep the modules at ``exclude`` (and what they contain) in float: the quantizer's
    annotations are removed from their nodes after it annotates. (litert-torch's own
    ``set_module_name`` takes no ``None`` config, and its name filter does not match the
    ``nn_module_stack`` keys of this torch; the module path of a node is the stack's value.)
    A path that names no module is a ConfigError."""
    from ..errors import ConfigError

    names = {name for name, _ in model.named_modules() if name}
    unknown = [m for m in exclude if m not in names]
    if unknown:
        raise ConfigError(
            f"exclude: {unknown} name no module of {type(model).__name__}; "
            f"module paths: {sorted(names)[:8]} ..."
        )
    if not exclude:
        return []
    annotate = quantizer.annotate

    def annotate_but_excluded(graph: Any) -> Any:
        graph = annotate(graph)
        for node in graph.graph.nodes:
            paths = [str(v[0]) for v in (node.meta.get("nn_module_stack") or {}).values()]
            if any(p == m or p.startswith(f"{m}.") for p in paths for m in exclude):
                node.meta.pop("quantization_annotation", None)
        litert_annotators.drop_stale(graph)
        return graph

    quantizer.annotate = annotate_but_excluded
    return [f"kept in float (exclude): {', '.join(exclude)}"]


def _prepare(
    model: nn.Module,
    spec: InputSpec,
    x: torch.Tensor,
    quantizer: Any,
    prepare_pt2e: Any,
    batch: int,
) -> tuple[Any, int]:
    """Observers on the exported graph. Exported with a dynamic batch where the model allows it,
    so that calibration runs CALIB_BATCH samples at a time (the converted graph is still fixed
    at ``batch``); else at the fixed batch."""
    two = x[:1].expand(2, *x.shape[1:]).contiguous()  # batch 2: export specializes sizes 0 / 1
    try:
        dim = torch.export.Dim("batch", min=1, max=1 << 16)
        args, kwargs = example_inputs(model, spec, two)
        shapes = dynamic_shapes(model, spec, args, kwargs, dim)
        graph = torch.export.export(model, args, kwargs, dynamic_shapes=shapes).module()
        return prepare_pt2e(_for_int8(graph, quantizer), quantizer), CALIB_BATCH
    except Exception:  # a model whose graph needs a static batch: calibrate at that batch
        args, kwargs = example_inputs(model, spec, x)
        graph = torch.export.export(model, args, kwargs).module()
        return prepare_pt2e(_for_int8(graph, quantizer), quantizer), batch


def _for_int8(graph: Any, quantizer: Any) -> Any:
    """The exported graph with ops that have no int8 TFLite kernel rewritten into ones that do
    (static int8 only: dynamic int8 quantizes weights alone)."""
    if quantizer.global_config is not None and quantizer.global_config.input_activation:
        litert_annotators.hard_activations_as_int8_ops(graph)
    return graph


def _chunks(x: np.ndarray, batch: int, fixed: bool) -> Iterator[np.ndarray]:
    """Batches of ``x``; for a ``fixed`` batch the remainder is completed with samples from the
    end of ``x`` (never with zeros, which would skew the observed ranges)."""
    if not fixed:
        yield from (np.ascontiguousarray(x[i : i + batch]) for i in range(0, len(x), batch))
        return
    whole = len(x) - len(x) % batch
    for start in range(0, whole, batch):
        yield np.ascontiguousarray(x[start : start + batch])
    if whole < len(x):
        yield np.ascontiguousarray(x[-batch:])


def _failure(exc: BaseException, model: nn.Module, precision: str, log: list[str]) -> str:
    text = f"{exc}\n{''.join(log)}"
    where = f"litert (litert-torch) cannot convert {type(model).__name__} to TFLite {precision}"
    op = re.search(r"Lowering not found: (\S+)", text) or re.search(
        r"failed to legalize operation '([^']+)'", text
    )
    if op:
        return f"{where}: op {op.group(1)} has no LiteRT lowering; replace it or use another target"
    return f"{where}: {type(exc).__name__}: {one_line(str(exc))[:300]}"


# ---------------------------------------------------------------------------------------------
# flatbuffer edits (ai_edge_litert's flatbuffer_utils: the TFLite schema's object API)


def _read(data: bytes) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def _pack(model: Any) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _op_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as fb

    return {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}


def _type_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as fb

    return {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}


def _io_detail(tensor: Any) -> dict[str, Any]:
    q = tensor.quantization
    scales = [] if q is None or q.scale is None else [float(s) for s in q.scale]
    zeros = [] if q is None or q.zeroPoint is None else [int(z) for z in q.zeroPoint]
    out: dict[str, Any] = {"dtype": _type_names()[tensor.type].lower()}
    if scales:
        out.update(scale=scales[0], zero_point=zeros[0] if zeros else 0)
    return out


def set_interface(data: bytes, float_io: bool) -> tuple[bytes, dict[str, Any]]:
    """With ``float_io``, wrap int8 graph inputs in QUANTIZE and int8 outputs in DEQUANTIZE.

    Returns the (possibly rewritten) bytes and the input / output dtype and quantization.
    """
    model = _read(data)
    graph = model.subgraphs[0]
    int_ids = {v for k, v in vars(_fb().TensorType).items() if k in INT_TYPES}
    quantized = [
        i
        for i in [*graph.inputs, *graph.outputs]
        if graph.tensors[i].type in int_ids and "scale" in _io_detail(graph.tensors[i])
    ]
    if float_io and quantized:
        for i in [t for t in graph.inputs if t in quantized]:
            _wrap(model, graph, i, QUANTIZE, is_input=True)
        for i in [t for t in graph.outputs if t in quantized]:
            _wrap(model, graph, i, DEQUANTIZE, is_input=False)
        data = _pack(model)
    io = {
        "input": _io_detail(graph.tensors[graph.inputs[0]]),
        "output": _io_detail(graph.tensors[graph.outputs[0]]),
    }
    return data, io


def _fb() -> Any:
    from ai_edge_litert import schema_py_generated as fb

    return fb


def _wrap(model: Any, graph: Any, index: int, op: str, is_input: bool) -> None:
    """Give graph input/output ``index`` a float32 twin joined to it by a QUANTIZE/DEQUANTIZE."""
    fb = _fb()
    old = graph.tensors[index]
    new = fb.TensorT()
    new.shape, new.shapeSignature = list(old.shape), old.shapeSignature
    new.type, new.buffer, new.name = fb.TensorType.FLOAT32, 0, old.name
    old.name = (old.name.decode() if isinstance(old.name, bytes) else old.name) + "_int8"
    graph.tensors.append(new)
    new_index = len(graph.tensors) - 1
    code = getattr(fb.BuiltinOperator, op)
    opcode = _opcode_index(model, code, version=2)
    operator = fb.OperatorT()
    operator.opcodeIndex = opcode
    if is_input:
        operator.inputs, operator.outputs = [new_index], [index]
        graph.operators.insert(0, operator)
        graph.inputs = [new_index if i == index else i for i in graph.inputs]
    else:
        operator.inputs, operator.outputs = [index], [new_index]
        graph.operators.append(operator)
        graph.outputs = [new_index if i == index else i for i in graph.outputs]
    for sig in model.signatureDefs or []:
        for entry in (sig.inputs if is_input else sig.outputs) or []:
            if entry.tensorIndex == index:
                entry.tensorIndex = new_index


def _opcode_index(model: Any, code: int, version: int) -> int:
    fb = _fb()
    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == code and oc.version == version:
            return i
    oc = fb.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def symmetric_embedding_tables(data: bytes) -> tuple[bytes, list[str]]:
    """Give every int8 EMBEDDING_LOOKUP table zero point 0; returns the bytes and a note per table.

    litert-torch 0.10's dynamic int8 stores an embedding table per-tensor asymmetric (zero point
    -6 on a BERT's), which LiteRT's EMBEDDING_LOOKUP refuses when the interpreter prepares
    ("qparams->zero_point->data[0] == 0 was not true"). Centred values ``q - zp`` that fit in
    [-127, 127] keep their scale and lose nothing; wider ones are scaled into that range (at most
    half a step of the old scale more rounding error).
    """
    import numpy as np

    model = _read(data)
    graph, names = model.subgraphs[0], _op_names()
    int8 = _fb().TensorType.INT8
    notes = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) != "EMBEDDING_LOOKUP":
            continue
        table = graph.tensors[op.inputs[1]]
        q, buf = table.quantization, model.buffers[table.buffer]
        if table.type != int8 or q is None or q.zeroPoint is None or buf.data is None:
            continue
        zeros = np.asarray(q.zeroPoint, dtype=np.int64)
        if len(zeros) != 1 or zeros[0] == 0:
            continue  # per-channel tables come symmetric; zero point 0 needs nothing
        centred = np.asarray(buf.data, dtype=np.uint8).view(np.int8).astype(np.int64) - zeros[0]
        peak = max(int(np.abs(centred).max()), 1)
        factor = min(1.0, 127.0 / peak)
        values = np.clip(np.round(centred * factor), -127, 127).astype(np.int8)
        buf.data = values.view(np.uint8)
        q.scale = np.asarray([float(q.scale[0]) / factor], dtype=np.float32)
        q.zeroPoint = np.asarray([0], dtype=np.int64)
        name = table.name.decode() if isinstance(table.name, bytes) else str(table.name)
        notes.append(
            f"embedding table {name} re-quantized with zero point 0 (was {int(zeros[0])}; "
            + ("exact)" if factor == 1.0 else f"values scaled by {factor:.3f})")
        )
    return (_pack(model), notes) if notes else (data, notes)


def weight_bytes(data: bytes) -> dict[str, int]:
    """Bytes of the graph's constant tensors by dtype (what was stored as int8, fp16, float32)."""
    model = _read(data)
    names, out = _type_names(), Counter()
    for t in model.subgraphs[0].tensors:
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if buf is not None and buf.data is not None and len(buf.data):
            out[names[t.type].lower()] += len(buf.data)
    return dict(out.most_common())


def float_ops(data: bytes) -> dict[str, int]:
    """Count, by op type, the ops of a quantized graph that still produce float32 tensors."""
    model = _read(data)
    names, float32 = _op_names(), _fb().TensorType.FLOAT32
    graph = model.subgraphs[0]
    counts: Counter[str] = Counter()
    for op in graph.operators:
        oc = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(oc.builtinCode, oc.deprecatedBuiltinCode), "CUSTOM")
        if name != DEQUANTIZE and any(graph.tensors[t].type == float32 for t in op.outputs):
            counts[name] += 1
    return dict(counts.most_common())


# ---------------------------------------------------------------------------------------------
# metadata


def artifact_meta(
    parent_meta: dict[str, Any],
    precision: str,
    art_id: str,
    build: dict[str, Any],
    io: dict[str, Any],
    quant: dict[str, Any],
) -> dict[str, Any]:
    """What the deployed file says about itself (see :func:`modelpress.export.deployment_meta`)."""
    from importlib import metadata

    versions = {"modelpress": __version__, "torch": torch.__version__}
    for dist in ("litert-torch", "ai-edge-litert", "torchao", "ai-edge-quantizer"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return deployment_meta(
        dict(parent_meta),
        target="litert",
        precision=precision,
        format="modelpress.tflite",
        version=1,
        id=art_id,
        build=build,
        io=io,
        quantization=quant,
        toolkit=versions,
    )
