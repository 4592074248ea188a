"""benchmarks/machine.py: the header every benchmark results file starts with."""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

import pytest

from modelpress.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
ADJECTIVES = ("quiet", "busy", "idle", "noisy", "shared", "loaded")


def _load_helper():
    spec = importlib.util.spec_from_file_location("benchmarks_machine", BENCHMARKS / "machine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


machine = _load_helper()


def test_header_has_command_machine_and_load_numbers():
    with machine.measuring("/somewhere/benchmarks/prune.py", ["--runs", "20", "a b"], 0.05) as m:
        time.sleep(0.3)
    lines = m.header_lines()
    text = "\n".join(lines)
    assert lines[0] == "- Command: `python benchmarks/prune.py --runs 20 'a b'`"
    assert re.search(r"- Run: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d to .* UTC \(0\.\d s wall\)", text)
    assert "usable of" in text and "torch " in text and "numpy " in text
    load = next(line for line in lines if line.startswith("- Load while measuring"))
    found = re.search(
        r": (\d+\.\d\d) at start, (\d+\.\d\d) at end; mean (\d+\.\d\d) and max (\d+\.\d\d) "
        r"over (\d+) samples taken every 0.05 s$",
        load,
    )
    assert found, load
    samples = m.sampler.samples
    assert len(samples) >= 2  # the background thread sampled during the run
    assert found.group(4) == f"{max(samples):.2f}" and found.group(5) == str(len(samples))
    others = next(line for line in lines if line.startswith("- Other processes running"))
    assert re.search(r": \d+( \(.*\))? at start, \d+( \(.*\))? at end$", others), others
    own_words = "\n".join(lines[:-1]) + others.split(":")[0]  # not the other processes' names
    for word in ADJECTIVES:  # numbers only: the reader judges the load
        assert word not in own_words.lower(), word


def test_command_defaults_to_sys_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["benchmarks/litert.py", "--models", "resnet8"])
    assert machine.measuring().command == "python benchmarks/litert.py --models resnet8"
    assert machine.measuring(argv=[]).command == "python benchmarks/litert.py"


def test_sampler_stops_cleanly_without_waiting_out_its_interval():
    m = machine.measuring("x.py", [], interval_s=30.0).start()
    assert m.sampler.running
    start = time.perf_counter()
    m.finish()
    assert not m.sampler.running
    assert time.perf_counter() - start < 5.0  # stop wakes the thread instead of sleeping 30 s
    assert len(m.sampler.samples) == 1  # the sample taken at start


def test_sampler_stops_when_the_measured_code_raises():
    with pytest.raises(ValueError), machine.measuring("x.py", [], interval_s=0.05) as m:
        raise ValueError("measurement failed")
    assert not m.sampler.running


def test_header_before_finish_is_an_error():
    m = machine.measuring("x.py", []).start()
    try:
        with pytest.raises(ConfigError, match="finish"):
            m.header_lines()
    finally:
        m.finish()
    with pytest.raises(ConfigError, match="interval"):
        machine.LoadSampler(0)


def _stat(proc: Path, pid: int, tid: int, name: str, state: str) -> None:
    task = proc / str(pid) / "task" / str(tid)
    task.mkdir(parents=True)
    (task / "stat").write_text(f"{tid} ({name}) {state} 1 2 3 4\n")


def test_running_processes_counts_other_processes_with_a_running_thread(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "stat").write_text("1 (x) S\n")
    _stat(tmp_path, 100, 100, "trainer", "S")
    _stat(tmp_path, 100, 101, "trainer", "R")  # a worker thread running: the process counts
    _stat(tmp_path, 200, 200, "cc1 (odd) name", "R")
    _stat(tmp_path, 300, 300, "sleeper", "S")
    _stat(tmp_path, os.getpid(), os.getpid(), "me", "R")  # this process is left out
    assert machine.running_processes(tmp_path) == ["cc1 (odd) name", "trainer"]
    assert machine.running_processes(tmp_path / "missing") is None


def test_benchmark_scripts_write_their_files_with_the_header_and_no_adjectives():
    scripts = sorted(p for p in BENCHMARKS.glob("*.py") if p.name != "machine.py")
    assert {"baselines.py", "gate_aa_ab.py", "harness_overhead.py", "run.py"} <= {
        p.name for p in scripts
    }
    for script in scripts:
        source = script.read_text()
        if "benchmarks/results/" not in source and '"results"' not in source:
            continue  # not a results writer
        assert "measuring(" in source, script.name
        assert '"--out"' in source, script.name
        # machine.write_results writes the header and the file atomically
        writes = "header_lines()" in source and "atomic_write_text(" in source
        assert writes or "write_results(" in source, script.name
        for phrase in ("quiet", "shared with other jobs", "no other jobs"):
            assert phrase not in source.lower(), (script.name, phrase)


def test_write_results_puts_title_header_and_body_in_one_file(tmp_path, capsys):
    with machine.measuring("/somewhere/benchmarks/x.py", ["--fast"], 0.05) as m:
        pass
    out = tmp_path / "deep" / "x.md"
    text = machine.write_results(out, "Title", m, ["| a |", "| b |"])
    assert out.read_text() == text and text.endswith("| b |\n")
    lines = text.splitlines()
    assert lines[0] == "# Title" and lines[2] == "- Command: `python benchmarks/x.py --fast`"
    assert lines[-3:] == ["", "| a |", "| b |"] and "# Title" in capsys.readouterr().out
    assert not list(out.parent.glob("*.tmp*"))  # written atomically, nothing left beside it
