from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from modelpress.measure.results import (
    Environment,
    Latency,
    Record,
    Results,
    Validation,
    new_results,
)

# Under pytest-xdist (`make test` runs two workers) the workers share the cores between them.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))
if _WORKERS > 1:  # the CLI runs the tests start inherit it
    os.environ.setdefault("MODELPRESS_TRAIN_THREADS", str(torch.get_num_threads()))
# `modelpress run` prepares models in parallel processes by default; the tests' recipes are tiny,
# so starting processes costs more than it saves. tests/test_run_parallel.py turns it on.
os.environ.setdefault("MODELPRESS_JOBS", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def digits_image():
    from modelpress.data import load_dataset

    return load_dataset("digits", view="image")


@pytest.fixture(scope="session")
def digits_sequence():
    from modelpress.data import load_dataset

    return load_dataset("digits", view="sequence")


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m modelpress ARGS`` in a subprocess and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "modelpress", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


TEST_EPOCHS = {"resnet8": 6, "mobilenet": 8, "gru": 12, "lstm": 12, "vit": 15, "transformer": 12}


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """``trained_checkpoint(name)`` -> (Artifact, DataBundle): a briefly trained registry model
    saved as a checkpoint, cached for the session (shared by the target tests)."""
    from modelpress.baselines import fit
    from modelpress.checkpoint import save_trained
    from modelpress.data import load_dataset
    from modelpress.models import MODELS

    cache: dict = {}
    folder = tmp_path_factory.mktemp("trained")

    def get(name: str):
        if name not in cache:
            data = load_dataset("digits", view=MODELS[name].input_kinds[0])
            result = fit(name, data, epochs=TEST_EPOCHS[name], seed=0)
            cache[name] = (save_trained(folder / f"{name}.safetensors", result.model, data), data)
        return cache[name]

    return get


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy machine."""
    with torch_threads(1):
        yield


# --- results files: records to report, tabulate and gate ------------------------------------------

ENV = Environment(
    cpu_model="Test CPU",
    logical_cores=2,
    usable_cores=2,
    platform="linux",
    python="3.11",
    versions={"numpy": np.__version__},
)


def latency(batch: int, median_us: float, seed: int, n: int = 600, spread: float = 0.15) -> Latency:
    """A latency row of ``n`` lognormal call times around ``median_us`` microseconds."""
    us = median_us * np.random.default_rng(seed).lognormal(0.0, spread, n)
    p50, p90, p99 = np.percentile(us, [50, 90, 99]) / 1e3
    return Latency(
        batch=batch,
        calls=n,
        seconds=float(us.sum() / 1e6),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=float(us.mean() / 1e3),
        min_ms=float(us.min() / 1e3),
        throughput_sps=float(batch * n / (us.sum() / 1e6)),
        samples_us=us.tolist(),
    )


def make_record(
    model="resnet8",
    target="onnxruntime",
    precision="int8",
    *,
    status="ok",
    reason="",
    accuracy=0.95,
    drop=0.5,
    agreement=0.99,
    speed=1.0,
    seed=0,
    family="cnn",
    threads=1,
    size=40_000,
    validation=True,
) -> Record:
    ok = status == "ok"
    val = (
        Validation(
            n=360,
            accuracy=accuracy,
            agreement=agreement,
            reference_accuracy=accuracy + drop / 100,
            accuracy_drop=drop,
        )
        if ok and validation
        else None
    )
    return Record(
        model=model,
        family=family,
        target=target,
        precision=precision,
        status=status,
        reason=reason,
        size_bytes=size,
        threads=threads,
        validation=val,
        load_s=0.01,
        peak_rss_bytes=100 << 20,
        latency=[latency(1, 50 * speed, seed), latency(32, 400 * speed, seed + 1)] if ok else [],
    )


def make_results(*records: Record, env: Environment = ENV) -> Results:
    return new_results(env, list(records), {"batch_sizes": [1, 32]})
