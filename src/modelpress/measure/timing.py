"""What every worker mode times and on what: the timing loop, a runner's cheapest call, the
busy-wait slowdown of the gate self-tests, and the batch of real (or synthetic) inputs.

Moved out of :mod:`modelpress.measure.worker` (which re-exports every name) so that the worker's
modes in their own files (:mod:`modelpress.measure.interleave`) use the same code without an
import circle: ``worker -> interleave -> timing``, ``worker -> timing``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# the timing loop lives in the travelling runner: every device times calls with the same code
from ..devices.runner import time_calls  # noqa: F401

Call = Callable[[], Any]  # one prepared call: the runtime on a fixed batch


def slowed(call: Call, extra_ns: int) -> Call:
    """``call`` followed by a busy wait of ``extra_ns`` (a sleep is too coarse for microseconds)."""
    clock = time.perf_counter_ns

    def run() -> Any:
        out = call()
        end = clock() + extra_ns
        while clock() < end:
            pass
        return out

    return run


def fast_call(runner: Any, x: np.ndarray) -> Call:
    """The cheapest correct zero-argument call that runs ``runner`` on the fixed batch ``x``.

    - a runner with ``prepare(x)`` (an optional hook: it returns a zero-argument callable, e.g.
      ``functools.partial(session.run, None, feeds)``) is timed through that;
    - a :class:`~modelpress.targets.base.Runner` whose ``predict`` is the base one is
      ``check_input`` + ``_run``: the (constant) input is checked once, ``_run`` is timed;
    - any other runner is timed through ``predict``.
    """
    from ..targets.base import Runner

    if callable(getattr(runner, "prepare", None)):
        return runner.prepare(x)
    if isinstance(runner, Runner) and type(runner).predict is Runner.predict:
        return functools.partial(runner._run, runner.check_input(x))
    return functools.partial(runner.predict, x)


def batch_of(pool: np.ndarray, batch: int) -> np.ndarray:
    """``batch`` real inputs from ``pool`` (repeated when the pool is smaller)."""
    reps = -(-batch // len(pool))
    return np.ascontiguousarray(np.concatenate([pool] * reps)[:batch])


def load_data(meta: dict[str, Any]):
    """The test split the artifact was trained for (from its metadata), or None."""
    from ..data import DataConfig, load_dataset

    cfg = (meta.get("preprocessing") or {}).get("data_config")
    return load_dataset(DataConfig(**cfg)) if cfg else None


def synthetic_inputs(meta: dict[str, Any], n: int = 64) -> np.ndarray:
    from ..data.base import InputSpec

    spec = InputSpec.from_dict(meta["input_spec"])
    if np.issubdtype(np.dtype(spec.dtype), np.integer):
        return np.ones((n, *spec.shape), dtype=spec.dtype)
    return np.random.default_rng(0).standard_normal((n, *spec.shape)).astype(spec.dtype)
