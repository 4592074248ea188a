"""README.md's "## Python API" example runs as written, on its own, in a fresh folder.

The example trains with the model's recommended schedule and prunes with the default recovery,
which takes minutes. To keep this test to seconds the extracted text is edited by two regular
expressions, each of which must match exactly once (else the test fails and says to update it):

- ``fit(ARGS)`` becomes ``fit(ARGS, epochs=2)``: the same call, a shorter schedule;
- ``PruneConfig(ARGS)`` becomes ``PruneConfig(ARGS, recovery_epochs=1)``.

Nothing else is changed or mocked: the data, the pass, the ONNX Runtime build and the validation
are the real ones.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SHORTER = (
    (re.compile(r"\bfit\(([^()]*)\)"), r"fit(\1, epochs=2)"),
    (re.compile(r"\bPruneConfig\(([^()]*)\)"), r"PruneConfig(\1, recovery_epochs=1)"),
)


def python_api_example(text: str) -> str:
    """The first ```python block of the README's "## Python API" section."""
    section = re.search(r"^## Python API\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, 'README.md has no "## Python API" section'
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.M | re.S)
    assert block, 'README.md\'s "## Python API" section has no ```python block'
    return block.group(1)


def shortened(code: str) -> str:
    for pattern, replacement in SHORTER:
        code, n = pattern.subn(replacement, code)
        assert n == 1, (
            f"{pattern.pattern!r} matched {n} times in the README example: update {__file__}"
        )
    return code


@pytest.mark.usefixtures("one_thread")
def test_python_api_example_runs(tmp_path, monkeypatch, capsys):
    code = shortened(python_api_example(README.read_text(encoding="utf-8")))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md:python-api", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert "accuracy" in printed, printed  # the last line prints the runtime's validation
    assert (tmp_path / "runs" / "gru.safetensors").is_file()
    assert list((tmp_path / "runs").glob("*.onnx")), sorted(p.name for p in tmp_path.rglob("*"))
