"""Zero padding in NHWC for litert-torch's layout pass, so that no transposes wrap it.

litert-torch 0.10 converts NCHW models to TFLite's NHWC with a pass that moves every op it has a
rewriter for into NHWC; an op without one keeps NCHW and gets a TRANSPOSE before and after it.
``aten.constant_pad_nd`` has none, so transformers' MobileNetV2 (a TF-style pad before every
strided depthwise conv) had 17 pads each between two transposes, at fp32 and at int8. With the
rewriter below the pads are NHWC, the converter folds them into the convolutions, and one
TRANSPOSE (the input's) is left. With the int8 annotations of :mod:`.litert_annotators`,
MobileNetV2 at LiteRT int8 went from 1.02x to 1.51x its fp32 speed (224x224, batch 1, one
thread; benchmarks/results/zoo_litert.md).

:func:`register` adds it to the pass's rewriter registry (``layout_rewrite.rewriters``, the
table the pass looks ops up in); where a litert-torch release moved that table it returns a
reason instead, and conversion goes on without it.
"""

from __future__ import annotations

import torch

aten = torch.ops.aten


def nhwc_constant_pad(x: torch.Tensor, pad: list[int], value: float = 0.0) -> torch.Tensor:
    """``constant_pad_nd`` with NCHW ``pad`` (last dim first: W, H, C, N pairs) applied to the
    NHWC tensor ``x`` (last dim first: C, W, H, N pairs)."""
    full = [*pad, *[0] * (8 - len(pad))]
    w, h, c, n = full[0:2], full[2:4], full[4:6], full[6:8]
    return aten.constant_pad_nd.default(x, [*c, *w, *h, *n], value)


def _rewrite(node: torch.fx.Node) -> None:
    node.target = nhwc_constant_pad


def register() -> str | None:
    """Register the NHWC rewrite of ``constant_pad_nd``; ``None`` when done, else why not."""
    try:
        from litert_torch._convert.fx_passes.optimize_layout_transposes_pass import (
            layout_rewrite,
        )

        table = layout_rewrite.rewriters
    except (ImportError, AttributeError) as exc:
        return f"pads keep NCHW (litert-torch's layout rewriter table not found: {exc})"
    if aten.constant_pad_nd.default not in table:
        table.register(aten.constant_pad_nd.default)(_rewrite)
    return None
