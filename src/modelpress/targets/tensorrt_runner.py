"""Runs a deserialized TensorRT engine: one CUDA stream, buffers made once per batch size.

Every step of a call is queued on the runner's own stream, in order: the host-to-device copies
of the inputs (from page-locked host buffers), ``execute_async_v3``, and the device-to-host copy
of the logits; then the host waits for that stream alone. Nothing runs on the default stream, so
a copy can never race the engine. The device and page-locked host buffers of a batch size are
allocated on its first call and reused (a call allocates nothing).

Two timings, both for the same engine and batch:

- end to end (:meth:`TrtRunner.prepare`): host array in, host logits out, copies included:
  comparable with ONNX Runtime and LiteRT, which also start and end in host memory;
- device compute only (:meth:`TrtRunner.prepare_compute`): CUDA events around
  ``execute_async_v3`` on the stream, inputs already on the device.

Needs the ``tensorrt`` package and torch with CUDA (torch provides the device memory and the
stream); both are checked by :class:`~modelpress.targets.tensorrt.TensorRTTarget` before a runner
is made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.base import InputSpec
from ..errors import BuildError
from ..feeds import graph_feeds
from .base import Runner


@dataclass
class _Buffers:
    """The device and page-locked host tensors of one batch size."""

    host_in: dict[str, Any]
    dev_in: dict[str, Any]
    dev_out: Any
    host_out: Any


def torch_dtype(trt_dtype: Any) -> Any:
    """The torch dtype of a TensorRT tensor type (the engine's I/O types)."""
    import tensorrt as trt
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT8: torch.int8,
        trt.DataType.BOOL: torch.bool,
    }
    if hasattr(trt.DataType, "INT64"):
        table[trt.DataType.INT64] = torch.int64
    if trt_dtype not in table:
        raise BuildError(
            f"tensorrt engine has an input or output of type {trt_dtype}, not supported"
        )
    return table[trt_dtype]


class TrtRunner(Runner):
    def __init__(self, engine: Any, input_spec: InputSpec, device: int):
        super().__init__(input_spec, "tensorrt")
        import tensorrt as trt
        import torch

        self.torch = torch
        self.device = torch.device("cuda", device)
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = engine.get_tensor_mode
        self.inputs = [n for n in names if mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: torch_dtype(engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream(device=self.device)
        self.max_batch = int(engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0])
        self._buffers: dict[int, _Buffers] = {}
        self._bound = 0  # the batch size whose shapes and addresses the context holds

    # -- buffers ---------------------------------------------------------------------------------
    def _feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return graph_feeds(x, self.inputs, self.input_spec.names, "tensorrt engine")

    def _buffers_for(self, feeds: dict[str, np.ndarray]) -> _Buffers:
        """This batch size's buffers, made on its first call; the context bound to them."""
        torch = self.torch
        batch = len(next(iter(feeds.values())))
        buf = self._buffers.get(batch)
        if buf is None:
            host_in, dev_in = {}, {}
            for name, value in feeds.items():
                shape, dtype = tuple(value.shape), self.dtypes[name]
                host_in[name] = torch.empty(shape, dtype=dtype, pin_memory=True)
                dev_in[name] = torch.empty(shape, dtype=dtype, device=self.device)
                self.context.set_input_shape(name, shape)
            out = self.outputs[0]
            shape = tuple(self.context.get_tensor_shape(out))
            dev_out = torch.empty(shape, dtype=self.dtypes[out], device=self.device)
            host_out = torch.empty(shape, dtype=self.dtypes[out], pin_memory=True)
            buf = self._buffers[batch] = _Buffers(host_in, dev_in, dev_out, host_out)
            self._bound = 0
        if self._bound != batch:
            for name, tensor in buf.dev_in.items():
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            self.context.set_tensor_address(self.outputs[0], buf.dev_out.data_ptr())
            self._bound = batch
        return buf

    # -- calls -----------------------------------------------------------------------------------
    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BuildError("tensorrt: execute_async_v3 failed")

    def _run_chunk(self, x: np.ndarray) -> np.ndarray:
        """Host to host: inputs copied in, the engine run, logits copied out, all on one stream."""
        feeds = self._feeds(x)
        buf = self._buffers_for(feeds)
        for name, value in feeds.items():
            buf.host_in[name].numpy()[...] = value  # numpy casts to the engine's input type
        with self.torch.cuda.stream(self.stream):
            for name, dev in buf.dev_in.items():
                dev.copy_(buf.host_in[name], non_blocking=True)
            self._execute()
            buf.host_out.copy_(buf.dev_out, non_blocking=True)
        self.stream.synchronize()
        return buf.host_out.numpy().astype(np.float32, copy=True)

    def _run(self, x: np.ndarray) -> np.ndarray:
        step = self.max_batch
        return np.concatenate([self._run_chunk(x[i : i + step]) for i in range(0, len(x), step)])

    def prepare(self, x: np.ndarray) -> Callable[[], np.ndarray]:
        """End to end, host to host: the benchmark's timed call on a fixed, checked batch."""
        x = self.check_input(x)
        self._run(x)  # buffers made before the timed loop
        return functools.partial(self._run, x)

    def prepare_compute(self, x: np.ndarray) -> Callable[[], float]:
        """A call that runs the engine once on ``x`` (already on the device) and returns the
        device time of that run in milliseconds (CUDA events on the runner's stream)."""
        x = self.check_input(x)
        if len(x) > self.max_batch:
            raise BuildError(
                f"tensorrt: batch {len(x)} is over the engine's max_batch {self.max_batch}"
            )
        self._run_chunk(x)  # loads x into this batch size's device buffers
        feeds = self._feeds(x)
        start = self.torch.cuda.Event(enable_timing=True)
        end = self.torch.cuda.Event(enable_timing=True)

        def compute_ms() -> float:
            self._buffers_for(feeds)  # bound to this batch size (no copy, no allocation)
            start.record(self.stream)
            self._execute()
            end.record(self.stream)
            end.synchronize()
            return float(start.elapsed_time(end))

        return compute_ms

    def close(self) -> None:
        self.stream.synchronize()
        self._buffers.clear()
        self.context = None
