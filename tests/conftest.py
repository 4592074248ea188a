from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

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
