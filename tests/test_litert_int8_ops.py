"""What a LiteRT int8 graph computes in int8, and in one XNNPACK partition
(targets/litert_annotators.py, targets/litert_layout.py): residual adds, squeeze-excitation,
hard-swish and zero pads, which litert-torch 0.10 left in float or wrapped in transposes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from modelpress.data import InputSpec
from modelpress.targets.litert import LiteRTTarget
from modelpress.targets.litert_layout import nhwc_constant_pad

BUILDABLE = LiteRTTarget().availability().ok and LiteRTTarget().converter_availability("int8").ok
needs_litert = pytest.mark.skipif(
    not BUILDABLE, reason="needs the LiteRT extra: pip install -e '.[tflite]'"
)
pytestmark = [pytest.mark.tflite, pytest.mark.usefixtures("one_thread")]
SPEC = InputSpec("image", (3, 16, 16), "float32")


class MobileBlock(nn.Module):
    """The MobileNet ops litert-torch left in float or wrapped in transposes: a TF-style zero pad
    before a strided conv, hard-swish, a squeeze-excitation gate (mean, hard-sigmoid, mul), a
    residual add followed by a ReLU, global pooling; ``masked`` adds a tensor made from the
    input itself (like an additive attention mask), which must stay float."""

    def __init__(self, masked: bool = False):
        super().__init__()
        self.masked = masked
        self.stem = nn.Conv2d(3, 16, 3, stride=2)
        self.squeeze = nn.Conv2d(16, 8, 1)
        self.excite = nn.Conv2d(8, 16, 1)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.hardswish(self.stem(nn.functional.pad(x, (0, 1, 0, 1))))
        gate = nn.functional.hardsigmoid(
            self.excite(torch.relu(self.squeeze(y.mean((2, 3), keepdim=True))))
        )
        y = y * gate
        y = torch.relu(self.conv(y) + y)
        if self.masked:
            y = y + torch.where(x[:, :1, ::2, ::2] < 0, -100.0, 0.0)
        return self.head(y.mean((2, 3)))


def _build(tmp_path, model):
    """int8 TFLite of ``model`` (float input and output), its interpreter and the calibration."""
    from ai_edge_litert.interpreter import Interpreter

    from modelpress.targets.litert_quant import convert, set_interface

    calib = np.random.default_rng(0).standard_normal((64, *SPEC.shape), dtype=np.float32)
    data, _ = convert(model.eval(), SPEC, "int8", calib, observer="minmax")
    data, _ = set_interface(data, float_io=True)
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return data, interpreter, calib


def _ops(interpreter) -> Counter:
    return Counter(op["op_name"] for op in interpreter._get_ops_details())


def _predict(interpreter, x: np.ndarray) -> np.ndarray:
    rows = []
    for sample in x:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    return np.stack(rows)


@needs_litert
def test_mobilenet_ops_run_in_int8_in_one_xnnpack_partition(tmp_path):
    from modelpress.targets.litert_quant import float_ops

    torch.manual_seed(0)
    model = MobileBlock()
    data, interpreter, calib = _build(tmp_path, model)
    assert float_ops(data) == {}, float_ops(data)
    ops = _ops(interpreter)
    # hard-swish as ADD(+RELU6)/MUL, which XNNPACK takes in int8: TFLite's int8 HARD_SWISH it
    # does not, and split the graph into one delegate partition per HARD_SWISH
    assert "HARD_SWISH" not in ops and ops["DELEGATE"] == 1, ops
    # the pad is NHWC and folded into the conv; the transposes left are the input's (NCHW ->
    # NHWC) and the one before the last mean, whose 2-D output has no NHWC form
    assert "PAD" not in ops and ops["TRANSPOSE"] == 2, ops
    with torch.no_grad():
        ref = model(torch.from_numpy(calib[:16])).numpy()
    out = _predict(interpreter, calib[:16])
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()


def _annotated_adds(ops: list[str] | None) -> list[str]:
    """The ``add`` nodes of MobileBlock(masked=True) that litert-torch's quantizer annotates
    for static int8, with its own STATIC_OPS or with ``ops``."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )

    from modelpress.targets.litert_annotators import static_ops

    torch.manual_seed(0)
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.STATIC_OPS = static_ops(PT2EQuantizer.STATIC_OPS) if ops is None else ops
    model = MobileBlock(masked=True).eval()
    graph = torch.export.export(model, (torch.randn(2, *SPEC.shape),)).module()
    graph = quantizer.annotate(quantizer.transform_for_annotation(graph))
    users = {n.name: [u.target for u in n.users] for n in graph.graph.nodes}
    return [
        "residual" if torch.ops.aten.relu.default in users[n.name] else "mask"
        for n in graph.graph.nodes
        if n.target == torch.ops.aten.add.Tensor and "quantization_annotation" in n.meta
    ]


@needs_litert
def test_the_residual_add_is_int8_and_an_add_of_a_tensor_made_from_the_input_is_not():
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer

    # litert-torch alone annotates neither (its add annotator needs source_fn_stack, which
    # torch.export's non-strict mode does not record): when this fails, it does, and
    # litert_annotators can go
    assert _annotated_adds(list(PT2EQuantizer.STATIC_OPS)) == []
    assert _annotated_adds(None) == ["residual"]


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.integers(1, 4),
    data=st.data(),
)
def test_nhwc_pad_pads_the_nchw_dims_it_was_given(pairs, data):
    pad = data.draw(st.lists(st.integers(0, 3), min_size=2 * pairs, max_size=2 * pairs))
    value = data.draw(st.sampled_from([0.0, 1.5]))
    x = torch.randn(2, 3, 4, 5)
    want = nn.functional.pad(x, pad, value=value)
    got = nhwc_constant_pad(x.permute(0, 2, 3, 1), pad, value).permute(0, 3, 1, 2)
    assert torch.equal(got, want)


def test_hard_activations_are_rewritten_into_the_same_function():
    from modelpress.targets.litert_annotators import hard_activations_as_int8_ops

    torch.manual_seed(0)
    model = MobileBlock().eval()
    x = torch.randn(4, *SPEC.shape) * 4
    graph = torch.export.export(model, (x,)).module()
    assert hard_activations_as_int8_ops(graph) == 2
    targets = {n.target for n in graph.graph.nodes if n.op == "call_function"}
    assert torch.ops.aten.hardswish.default not in targets
    assert torch.ops.aten.hardsigmoid.default not in targets
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=1e-5, atol=1e-5)


@needs_litert
def test_an_unrolled_int8_gru_has_an_int8_cell(tmp_path):
    """litert-torch's quantizer leaves nn.GRU float; ``rnn: unrolled`` unrolls it into Linear
    layers first, so its per-step FULLY_CONNECTED ops are int8. ``auto`` keeps the native layer
    (unrolled int8 files are not smaller, and slower at small sizes: rnn_int8.md)."""
    from modelpress.checkpoint import save_checkpoint
    from modelpress.errors import BuildError, ConfigError
    from modelpress.models import create_model

    spec = InputSpec("sequence", (6, 8), "float32")
    torch.manual_seed(0)
    model = create_model("gru", input_spec=spec, num_classes=10, hidden_size=16).eval()
    ckpt = save_checkpoint(
        tmp_path / "gru.safetensors", model, input_spec=spec,
        labels=[str(i) for i in range(10)], preprocessing={},
    )  # fmt: skip
    calib = np.random.default_rng(0).standard_normal((32, 6, 8), dtype=np.float32)
    built = {}
    for rnn in ("unrolled", "auto"):
        target = LiteRTTarget(observer="minmax", rnn=rnn)
        built[rnn] = target.build(ckpt, "int8", calib, tmp_path / rnn)
    unrolled, auto = (built[k].meta for k in ("unrolled", "auto"))
    assert unrolled["build"]["rnn"] == "unrolled" and auto["build"]["rnn"] == "native"
    assert "FULLY_CONNECTED" not in unrolled["quantization"]["float_ops"], unrolled
    assert "FULLY_CONNECTED" in auto["quantization"]["float_ops"], auto["quantization"]
    with torch.no_grad():
        ref = model(torch.from_numpy(calib[:8])).numpy()
    out = LiteRTTarget().load(built["unrolled"]).predict(calib[:8])
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()
    with pytest.raises(ConfigError, match="rnn must be auto, native or unrolled"):
        LiteRTTarget(rnn="fused")
    with pytest.raises(BuildError, match="dynamic_int8 of an unrolled GRU/LSTM does not load"):
        LiteRTTarget(rnn="unrolled").build(ckpt, "dynamic_int8", None, tmp_path / "dyn")
    assert not (tmp_path / "dyn").exists() or not any((tmp_path / "dyn").iterdir())
