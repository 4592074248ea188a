"""Int8 annotations that litert-torch 0.10's quantizer misses on graphs from ``torch.export``.

Its annotators for add, mul, cat and the pools find their nodes with
``get_source_partitions``, which reads each node's ``source_fn_stack``. The non-strict
``torch.export`` of torch 2.13 (its default) records no ``source_fn_stack``, so those annotators
annotate nothing: a residual ``add`` or a squeeze-excitation ``mul`` stayed float between a
dequantize and a quantize, and MobileNetV2 at LiteRT int8 ran 1.02x its fp32 speed with 9 of
its 10 residual ADDs in float (benchmarks/results/zoo_litert.md).

:func:`static_ops` registers :func:`annotate` in litert-torch's annotator table (its
``register_annotator`` extension point, ``OP_TO_ANNOTATOR``) as the quantizer's last static
annotator: litert-torch's own keep precedence where they work (a node already annotated is left
alone). It matches aten ops directly:

- zero ``pad``: input as an activation, output sharing its parameters (zeros stay exact);
- ``add`` / ``mul`` of two tensors, ``cat``: int8 only where every input already comes out of
  an int8 op (through shape-only ops), so an additive attention mask or a float side branch
  never gets squeezed into int8;
- ``max_pool2d`` / ``adaptive_avg_pool2d`` / ``mean``: share the input's parameters;
- ReLU after an int8 op that litert-torch did not fuse it with: int8 in, its own range out;

:func:`hard_activations_as_int8_ops` rewrites ``hardsigmoid`` and ``hardswish`` (MobileNetV3)
into ADD / RELU6 / MUL before annotation, ops that the XNNPACK delegate runs in int8.

Same run, 224x224, batch 1, one thread (benchmarks/results/zoo_litert.md), int8 vs fp32 on
LiteRT: MobileNetV2 1.02x -> 1.51x (with :mod:`.litert_layout`), MobileNetV3-small
0.42x -> 1.01x; ResNets stay at 6.1-6.3x.
"""

from __future__ import annotations

from typing import Any

import torch

NAME = "modelpress_missing_ops"
PREMISE = "modelpress_int8_inputs"  # node meta: the inputs its annotation assumes int8
aten = torch.ops.aten

PADS = (aten.constant_pad_nd.default, aten.pad.default)
ADDS = (aten.add.Tensor, aten.add_.Tensor)
MULS = (aten.mul.Tensor, aten.mul_.Tensor)
CATS = (aten.cat.default, aten.concat.default)
POOLS = (
    aten.max_pool2d.default,
    aten.adaptive_avg_pool2d.default,
    aten.avg_pool2d.default,
    aten.mean.dim,
)
RELUS = (aten.relu.default, aten.relu_.default)
HARD_ACTIVATIONS = (aten.hardsigmoid.default, aten.hardswish.default, aten.hardswish_.default)
# ops whose output shares their input's parameters once annotated (by litert-torch's
# ``propagate_annotation`` at the end, or by this module): int8 in, int8 out
SHAPE_OPS = (
    aten.hardtanh.default,
    aten.hardtanh_.default,
    aten.mean.default,
    aten.permute.default,
    aten.permute_copy.default,
    aten.squeeze.dim,
    aten.squeeze_copy.dim,
    aten.view.default,
    aten.view_copy.default,
    aten.slice_copy.Tensor,
    aten.flatten.using_ints,
)


def static_ops(base: list[str]) -> list[str]:
    """``base`` (litert-torch's ``STATIC_OPS``) with :func:`annotate` registered and placed
    last, so that it sees every annotation litert-torch made."""
    from litert_torch.quantize.pt2e_quantizer_utils import OP_TO_ANNOTATOR

    OP_TO_ANNOTATOR.setdefault(NAME, annotate)
    return [*(op for op in base if op != NAME), NAME]


def annotate(graph_module: Any, config: Any, filter_fn: Any = None) -> list:
    """One pass in topological order (so every producer is settled before its readers)."""
    if config is None or config.input_activation is None:  # dynamic: weights only
        return []
    done = []
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or _annotated(node) or not _float(node):
            continue
        if filter_fn is not None and not filter_fn(node):
            continue
        handler = HANDLERS.get(node.target)
        if handler is not None and handler(node, config):
            done.append([node])
    return done


def _annotated(node: Any) -> bool:
    ann = node.meta.get("quantization_annotation")
    return ann is not None and ann._annotated


def _float(node: Any) -> bool:
    if node.op == "get_attr":  # a scalar operand made a constant by the quantizer
        return True
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.is_floating_point()


def _int8_out(node: Any) -> bool:
    """Whether ``node``'s output is int8 once annotated: its own output annotation, or that of
    the op before a chain of shape-only ops, or a constant."""
    seen = 0
    while seen < 64:
        if node.op == "get_attr":
            return True
        if _annotated(node) and node.meta["quantization_annotation"].output_qspec is not None:
            return True
        if node.op != "call_function" or node.target not in SHAPE_OPS or not node.args:
            return False
        node = node.args[0]
        seen += 1
    return False


def _qa(**kwargs: Any) -> Any:
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    return QuantizationAnnotation(_annotated=True, **kwargs)


def _needs_int8(node: Any, inputs: list) -> None:
    """Record that ``node``'s annotation holds only while ``inputs`` come out int8."""
    node.meta[PREMISE] = list(inputs)


def drop_stale(graph_module: Any) -> int:
    """Remove the annotations whose int8 inputs are gone: after annotations were removed from
    some nodes (modules kept in float), an ``add`` or a ReLU annotated here, or an op sharing its
    input's parameters, would otherwise quantize a float tensor (the outlier activation the
    float module was kept for). Topological order, so a removal reaches every reader. Returns
    the number removed."""
    removed = 0
    for node in graph_module.graph.nodes:
        if not _annotated(node):
            continue
        premise = node.meta.get(PREMISE)
        if premise is None and node.target in SHAPE_OPS and node.args:
            premise = [node.args[0]] if isinstance(node.args[0], torch.fx.Node) else []
        if premise and not all(_int8_out(a) for a in premise):
            node.meta.pop("quantization_annotation", None)
            node.meta.pop(PREMISE, None)
            removed += 1
    return removed


def _shared(source: Any, node: Any) -> Any:
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    return SharedQuantizationSpec((source, node))


def _relu(node: Any, config: Any) -> bool:
    """ReLU of an int8 tensor, with its own output parameters: sharing its input's would keep
    the negative half of the range that ReLU drops (a transformer's FFN pre-activation is mostly
    negative: sharing cost our trained PatchEncoder 0.83 points at LiteRT int8)."""
    source = node.args[0] if node.args else None
    if not isinstance(source, torch.fx.Node) or not _int8_out(source):
        return False
    _needs_int8(node, [source])
    node.meta["quantization_annotation"] = _qa(
        input_qspec_map={source: config.input_activation}, output_qspec=config.output_activation
    )
    return True


def _share_input(node: Any, config: Any) -> bool:
    """Pooling and zero padding of an int8 tensor: output shares the input's parameters
    (symmetric int8 has zero point 0, so padded zeros are exact). A pad
    is annotated whatever its input (transformers' MobileNetV2 pads TF-style before every
    strided depthwise conv, its first one on the model's input); without it the model ran 0.91x
    its fp32 speed at int8 with 58 TRANSPOSE ops."""
    source = node.args[0] if node.args else None
    if not isinstance(source, torch.fx.Node):
        return False
    if node.target in PADS:  # also on the model's input, so that int8 I/O starts before it
        mode, value = _pad_mode_and_value(node)
        if mode != "constant" or value not in (None, 0, 0.0):
            return False
    elif not _int8_out(source):
        return False
    else:
        _needs_int8(node, [source])
    node.meta["quantization_annotation"] = _qa(
        input_qspec_map={source: config.input_activation}, output_qspec=_shared(source, node)
    )
    return True


def _pad_mode_and_value(node: Any) -> tuple[str, Any]:
    if node.target == aten.constant_pad_nd.default:
        return "constant", node.args[2] if len(node.args) > 2 else node.kwargs.get("value", 0)
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
    return mode, value


def _binary(node: Any, config: Any) -> bool:
    """``add`` / ``mul`` of two int8 tensors (or of one and a constant)."""
    inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
    if len(inputs) != 2 or not all(_float(a) and _int8_out(a) for a in inputs):
        return False
    _needs_int8(node, inputs)
    qspec = {a: config.input_activation for a in inputs}
    relu = _only_relu_reader(node) if node.target in ADDS else None
    if relu is None:
        node.meta["quantization_annotation"] = _qa(
            input_qspec_map=qspec, output_qspec=config.output_activation
        )
        return True
    # add + ReLU as one int8 op (TFLite's ADD with a fused ReLU): nothing quantized between
    node.meta["quantization_annotation"] = _qa(input_qspec_map=qspec)
    relu.meta["quantization_annotation"] = _qa(output_qspec=config.output_activation)
    _needs_int8(relu, inputs)
    return True


def _only_relu_reader(node: Any) -> Any:
    users = list(node.users)
    if len(users) == 1 and users[0].target in RELUS and not _annotated(users[0]):
        return users[0]
    return None


def _cat(node: Any, config: Any) -> bool:
    """``cat`` of int8 tensors: every input and the output share the first input's parameters."""
    inputs = node.args[0]
    if not inputs or not all(isinstance(a, torch.fx.Node) and _int8_out(a) for a in inputs):
        return False
    _needs_int8(node, inputs)
    first = inputs[0]
    shared = _shared(first, node)
    node.meta["quantization_annotation"] = _qa(
        input_qspec_map={first: config.input_activation, **{a: shared for a in inputs[1:]}},
        output_qspec=shared,
    )
    return True


HANDLERS = {
    **dict.fromkeys(PADS + POOLS, _share_input),
    **dict.fromkeys(RELUS, _relu),
    **dict.fromkeys(ADDS + MULS, _binary),
    **dict.fromkeys(CATS, _cat),
}


def hard_activations_as_int8_ops(graph_module: Any) -> int:
    """Rewrite ``hardsigmoid(x)`` as ``hardtanh(x + 3, 0, 6) * 1/6`` and ``hardswish(x)`` as
    ``x * hardsigmoid(x)`` (their definitions) in the exported graph: ops that XNNPACK runs in
    int8 (ADD with a fused RELU6, MUL). Returns the number rewritten.

    - litert-torch lowers ``hardsigmoid`` to float ops, so MobileNetV3's squeeze-excitation gates
      ran in float between a DEQUANTIZE and a QUANTIZE each;
    - TFLite's int8 HARD_SWISH is not taken by the XNNPACK delegate, which split MobileNetV3-small
      into 20 delegate partitions around 19 reference-kernel HARD_SWISH ops.

    The constants are tensors of the input's rank (shape 1, 1, ...), not scalars: a 0-d operand
    makes litert-torch's layout pass keep the op in NCHW between two TRANSPOSEs."""
    graph = graph_module.graph
    done = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in HARD_ACTIVATIONS:
            continue
        x = node.args[0]
        with graph.inserting_before(node):
            gate = _gate(graph_module, node, x)
            out = gate
            if node.target != aten.hardsigmoid.default:
                out = _like(graph.call_function(aten.mul.Tensor, (x, gate)), node)
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        done += 1
    if done:
        graph.lint()
        graph_module.recompile()
    return done


def _gate(graph_module: Any, node: Any, x: Any) -> Any:
    """``hardtanh(x + 3, 0, 6) * 1/6`` before ``node``, with ``x``'s rank constants."""
    graph = graph_module.graph
    val = x.meta["val"]
    three = _constant(graph_module, "three", 3.0, val)
    sixth = _constant(graph_module, "sixth", 1.0 / 6.0, val)
    shifted = _like(graph.call_function(aten.add.Tensor, (x, three)), node)
    clipped = _like(graph.call_function(aten.hardtanh.default, (shifted, 0.0, 6.0)), node)
    return _like(graph.call_function(aten.mul.Tensor, (clipped, sixth)), node)


def _constant(graph_module: Any, name: str, value: float, like: torch.Tensor) -> Any:
    attr = f"_modelpress_{name}_{like.dim()}d"
    if not hasattr(graph_module, attr):
        graph_module.register_buffer(attr, torch.full((1,) * like.dim(), value, dtype=like.dtype))
    node = graph_module.graph.get_attr(attr)
    node.meta["val"] = like.fake_mode.from_tensor(getattr(graph_module, attr))
    return node


def _like(new: Any, node: Any) -> Any:
    import copy

    new.meta = copy.copy(node.meta)
    return new
