"""benchmarks/zoo.py: the zoo at real input sizes, in its smallest configuration (``--quick``,
one CNN and the BERT-like, ONNX Runtime only), and its targets' verdicts on known timings."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the zoo needs transformers (the tflite extra)")

ROOT = Path(__file__).resolve().parents[1]
P50 = r"\d+\.\d{3}"


@pytest.fixture(scope="module")
def quick_page(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("zoo") / "zoo.md"
    args = ["--quick", "--models", "resnet18,bert_mini", "--runtimes", "onnxruntime"]
    args += ["--batches", "1,8", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "zoo.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out.read_text()


def table_row(page: str, *cells: str) -> list[str]:
    """The cells of the one table row that starts with ``cells``."""
    rows = [line for line in page.splitlines() if line.startswith("| " + " | ".join(cells) + " |")]
    assert len(rows) == 1, (cells, rows)
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_quick_run_says_it_is_a_smoke_run_and_fails_nothing(quick_page):
    assert (
        "**--quick: tiny models, few rounds; a smoke run, the numbers mean nothing.**" in quick_page
    )
    assert "- Command: `python benchmarks/zoo.py --quick --models resnet18,bert_mini" in quick_page
    failures = quick_page.split("## Failures")[1].split("##")[0]
    assert failures.strip() == "None."


def test_sizes_table_has_every_variant_with_params_macs_bytes_and_a_check(quick_page):
    for model, variants in (
        ("resnet18", ("fp32", "int8", "pruned", "pruned+int8")),
        ("bert_mini", ("fp32", "dynamic_int8", "int8", "pruned", "pruned+dynamic_int8")),
    ):
        rows = {v: table_row(quick_page, model, v) for v in variants}
        params = {v: int(r[2].replace(",", "")) for v, r in rows.items()}
        size = {v: int(r[4].split(" ")[0].replace(",", "")) for v, r in rows.items()}
        assert params["pruned"] < params["fp32"] == params[variants[1]]  # int8: same model
        assert size["pruned"] < size["fp32"] and size[variants[1]] < 0.6 * size["fp32"]
        assert float(rows["fp32"][5]) < 1e-4  # the fp32 artifact computes what torch does


def test_latency_table_has_p50_and_ratios_for_every_cell(quick_page):
    ort = quick_page.split("## ONNX Runtime (CPU EP)")[1].split("## Failures")[0]
    for batch in ("1", "8"):
        base = table_row(ort, "bert_mini", "1", batch, "fp32")
        assert re.fullmatch(P50, base[4]) and base[5] == "-"
        int8 = table_row(ort, "resnet18", "1", batch, "int8")
        assert re.fullmatch(r"\d+\.\d\dx \[\d+\.\d\d, \d+\.\d\d\]", int8[5])
        pruned = table_row(ort, "resnet18", "1", batch, "pruned+int8")
        assert re.fullmatch(r"\d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\] vs int8", pruned[6])


def test_targets_section_states_each_target_with_a_number_or_why_not(quick_page):
    targets = quick_page.split("## Targets")[1].split("## Sizes")[0]
    resnet = table_row(targets, "ResNet int8 >= 2.0x fp32", "onnxruntime", "resnet18", "1")
    bert = table_row(targets, "BERT-mini dynamic int8 >= 2.0x fp32", "onnxruntime", "bert_mini")
    efficiency = table_row(targets, "MAC -> latency efficiency of pruning >= 0.8, CNNs")
    for row in (resnet, bert, efficiency):
        assert re.match(r"\d+\.\d\dx? \[", row[4]) and row[5].split(" (")[0] in ("met", "not met")
    litert = table_row(targets, "int8 >= 2x fp32 for the CNNs", "litert")
    assert litert[5].startswith("not measured")  # LiteRT was not in this run


@pytest.fixture
def zoo(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("zoo")


def test_verdicts_follow_the_measured_ratio_and_its_interval(zoo):
    cfg = zoo.Settings(("resnet18",), ("onnxruntime",), (1,), (1,), 3, 0.0, True)
    res = zoo.Result("resnet18", zoo.Row("resnet18"))
    res.row.variants = {"dense": zoo_variant(200), "pruned": zoo_variant(100)}  # MACs / 2
    steady = [1.0 + 0.001 * (i % 5) for i in range(200)]
    res.times[("onnxruntime", 1, 1)] = {
        "fp32": [10 * t for t in steady],
        "int8": [4 * t for t in steady],  # 2.5x: met
        "pruned": [6.4 * t for t in steady],  # 1.5625x / 2 = 0.78: not met
        "pruned+int8": [3.0 * t for t in steady],  # 3.33x: not met
    }
    rows = "\n".join(zoo.goal_rows([res], cfg))
    assert table_row(rows, "ResNet int8 >= 2.0x fp32", "onnxruntime", "resnet18")[5] == "met"
    assert table_row(rows, "MAC -> latency efficiency of pruning >= 0.8, CNNs")[4].startswith(
        "0.78 ["
    )
    assert table_row(rows, "MAC -> latency efficiency of pruning >= 0.8, CNNs")[5] == "not met"
    assert table_row(rows, "pruned (0.5 MACs) + int8 >= 3.5x fp32, CNNs")[5] == "not met"
    assert "not measured" in table_row(rows, "MobileNetV2 int8 >= 1.6x fp32")[5]


def zoo_variant(macs: int):
    from zoo_prune import Variant

    return Variant(model=None, params=1, macs=macs)


# published sizes at 224x224 (torchvision's model tables): params, MACs of one image; the
# builders that are new for this benchmark (bottleneck ResNet, plain-torch MobileNetV3-small)
PUBLISHED = {
    "resnet50": (25_557_032, 4.089e9),
    "mobilenetv3_small": (2_542_856, 0.0565e9),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_full_size_models_are_the_architectures_they_are_named_after(zoo, name):
    import torch
    import zoo_nets  # tests/ is on sys.path under pytest

    from modelpress.metrics import count_macs, count_params

    arch = zoo.MODELS[name]
    torch.manual_seed(0)
    model = getattr(zoo_nets, arch.builder)(**arch.full.kwargs).eval()
    params, macs = PUBLISHED[name]
    assert count_params(model) == params
    example = torch.as_tensor(zoo.sample(arch.full, 1, seed=0))
    assert count_macs(model, example) == pytest.approx(macs, rel=0.01)
