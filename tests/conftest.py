from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
