"""Per-layer localisation of int8 divergence for ONNX Runtime QDQ artifacts.

Runs the int8 QDQ graph and its float twin (saved at build time with the same tensor names)
with every intermediate tensor exposed as a graph output, on the same inputs. For each float
tensor it takes the value that really flows on in the int8 graph (the dequantized one where the
tensor was quantized) and scores it with a *channel-wise* SQNR: the mean over channels of each
channel's SQNR, so a tensor whose small channels were wiped out by one outlier channel's range
scores low even though its total energy looks fine. Each node is then ranked by the SQNR it
*lost* relative to its inputs, which names the layer that broke the model, not merely the last.

>>> report = localize(int8_artifact, data.calibration(64))         # doctest: +SKIP
>>> report.summary()
'onnxruntime int8: most divergent layers: blocks.1.act/Relu (0.4 dB), ...'
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..artifact import Artifact
from ..errors import ConfigError
from ..validate import LayerDivergence, LocalisationReport, sqnr_db

SQNR_CAP_DB = 60.0  # a tensor this clean (or exact, like the graph input) counts as clean


NOT_FLOAT = (
    "QuantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "Shape",
    "Size",
)


def _expose_all(model_path: Path, dest: Path) -> list[str]:
    """Copy of the model with every float node output added as a graph output."""
    import onnx

    from ..export import check_external_data

    check_external_data(model_path)  # before onnx reads any external data file
    proto = onnx.load(str(model_path))
    present = {o.name for o in proto.graph.output}
    # only float tensors: (dynamic) quantize, integer matmul / conv and shape ops yield others
    try:
        inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
        types = {v.name: v.type.tensor_type.elem_type for v in inferred}
    except Exception:  # a contrib op shape inference does not know: fall back on the op types
        types = {}
    names = [
        o
        for n in proto.graph.node
        if n.op_type not in NOT_FLOAT
        for o in n.output
        if o and o not in present and types.get(o, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT
    ]
    for name in names:
        proto.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    onnx.save(proto, str(dest))
    return names


def _activations(model_path: Path, x: np.ndarray, tmp: Path) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    exposed = tmp / f"exposed_{model_path.name}"
    _expose_all(model_path, exposed)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(exposed), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    from ..feeds import derive_numpy

    # a model with derived inputs (attention_mask, ...) takes them after the data's own
    feeds = {
        i.name: derive_numpy(i.name, x) if k else x for k, i in enumerate(session.get_inputs())
    }
    values = session.run(None, feeds)
    return {
        n: v for n, v in zip(names, values) if isinstance(v, np.ndarray) and v.dtype == np.float32
    }


def channel_sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean over channels (axis 1 of 4-D tensors, else the last axis) of per-channel SQNR."""
    if reference.ndim < 2:
        return min(sqnr_db(reference, test), SQNR_CAP_DB)
    axis = 1 if reference.ndim == 4 else reference.ndim - 1
    ref = np.moveaxis(reference, axis, 0).reshape(reference.shape[axis], -1).astype(np.float64)
    tst = np.moveaxis(test, axis, 0).reshape(test.shape[axis], -1).astype(np.float64)
    scores = [min(sqnr_db(r, t), SQNR_CAP_DB) for r, t in zip(ref, tst) if np.any(r)]
    return float(np.mean(scores)) if scores else SQNR_CAP_DB


ACTIVATIONS = ("Relu", "Clip", "Sigmoid", "Tanh", "Gelu", "LeakyRelu", "HardSwish")
COMPUTE = ("Conv", "Gemm", "MatMul", "LSTM", "GRU", "ConvTranspose")


def _layer_name(node, producer: dict, fallback: str) -> str:
    """The node's module-scoped name; an activation is named with the layer that feeds it
    (``blocks.1.conv1.1/Conv+Relu``), since its output is that layer's quantized output."""
    name = node.name or fallback
    if node.op_type in ACTIVATIONS and node.input and node.input[0] in producer:
        src = producer[node.input[0]]
        if src.op_type in COMPUTE:
            return f"{src.name}+{node.op_type}"
    return name


def localize(art: Artifact, x: np.ndarray) -> LocalisationReport:
    """Rank the layers of an ORT int8 (QDQ) artifact by the divergence they introduce on ``x``."""
    import onnx

    ref_name = art.meta.get("float_reference")
    if art.format != "onnx" or not ref_name or Path(str(ref_name)).name != ref_name:
        raise ConfigError(
            "localisation needs an onnxruntime int8 artifact built by modelpress (with its float twin)"
        )
    reference = Path(art.path).parent / ref_name
    if not reference.is_file():
        raise ConfigError(
            f"the float twin {reference} of {art.path} is missing; rebuild the int8 artifact"
        )
    with tempfile.TemporaryDirectory() as tmp:
        float_acts = _activations(reference, x, Path(tmp))
        quant_acts = _activations(Path(art.path), x, Path(tmp))
    flowing = {
        n: quant_acts.get(f"{n}_DequantizeLinear_Output", quant_acts.get(n)) for n in float_acts
    }
    score = {
        n: channel_sqnr_db(float_acts[n], q)
        for n, q in flowing.items()
        if q is not None and q.shape == float_acts[n].shape
    }
    graph = onnx.load(str(reference), load_external_data=False).graph
    producer = {o: node for node in graph.node for o in node.output}

    def upstream(tensor: str, depth: int = 0) -> float:
        """Score of a tensor, or of the nearest scored tensors it was computed from."""
        if tensor in score:
            return score[tensor]
        node = producer.get(tensor)
        if node is None or depth > 50:
            return SQNR_CAP_DB  # a graph input or a weight: exact
        return min((upstream(i, depth + 1) for i in node.input if i), default=SQNR_CAP_DB)

    report = LocalisationReport(target="onnxruntime", precision=art.meta.get("precision", "int8"))
    for node in graph.node:
        outs = [o for o in node.output if o in score]
        if not outs:
            continue
        worst = min(outs, key=lambda o: score[o])
        in_score = min((upstream(i) for i in node.input if i), default=SQNR_CAP_DB)
        report.layers.append(
            LayerDivergence(
                layer=_layer_name(node, producer, worst),
                sqnr_db=score[worst],
                op=node.op_type,
                max_abs_diff=float(np.abs(float_acts[worst] - flowing[worst]).max()),
                sqnr_drop_db=max(0.0, in_score - score[worst]),
            )
        )
    if not report.layers:
        report.notes.append("no intermediate tensor of the float twin was found in the int8 graph")
    return report
