"""The ``modelpress`` command. Thin: parse arguments, build configs, call the Python API.

Exit codes: 0 ran and the gates passed, 1 a gate (or a model or target) failed, 2 bad usage,
configuration or input, 3 an internal error, 130 interrupted. Every error prints ONE line on
stderr (``modelpress: error: ...``); an internal error's traceback goes to ``error.log`` in the
run's out folder (``modelpress run``) or to ``runs/error.log`` (see exits.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .exits import DEFAULT_ERROR_LOG, exit_status, guarded, parse_and_run, standalone  # noqa: F401


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", help="dataset name (see `modelpress datasets`)")
    p.add_argument("--root", help="file or folder of a dataset read from disk")
    p.add_argument("--view", help="image | sequence | tokens (default: what the model takes)")
    p.add_argument("--resize", type=int, help="square image side, e.g. 32")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the train/val/test split")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--patience", type=int)
    p.add_argument("--seed", type=int, help="training seed (init, shuffling, augmentation)")
    p.add_argument("--max-seconds", type=float, help="stop after the epoch that crosses this time")
    _device_arg(p, "where to train")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _device_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--device",
        metavar="auto|cpu|cuda[:N]",
        help=f"{what}: auto (the default: CUDA when torch sees a GPU), cpu, cuda or cuda:N",
    )


def _train_overrides(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "lr": a.lr,
        "patience": a.patience,
        "seed": a.seed,
        "max_seconds": a.max_seconds,
        "device": a.device,
    }


def _data_config(a: argparse.Namespace):
    from .data import DataConfig

    return DataConfig(name=a.data, root=a.root, view=a.view, resize=a.resize, seed=a.data_seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelpress", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one registry model and save a checkpoint")
    p.add_argument("--model", required=True, help="registry name (see `modelpress models`)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (teacher/student)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="model config field"
    )
    p.add_argument(
        "--out", type=Path, help="checkpoint path (default runs/<data>/<model>.safetensors)"
    )
    _data_args(p)
    _train_args(p)

    p = sub.add_parser("baselines", help="train the baseline of every family and print a table")
    p.add_argument("--models", default="resnet8,mobilenet,gru,lstm,vit,transformer")
    p.add_argument("--out", type=Path, help="folder (default runs/<data>/baselines)")
    _data_args(p)
    _train_args(p)

    p = sub.add_parser("eval", help="evaluate a checkpoint on the test split of its data set")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--root", help="where the data set lives now, if it moved")

    p = sub.add_parser("info", help="print a checkpoint's metadata as JSON")
    p.add_argument("checkpoint", type=Path)

    p = sub.add_parser(
        "run", help="run a recipe end to end (train, compress, build, benchmark, report, gate)"
    )
    p.add_argument("recipe", type=Path)
    p.add_argument(
        "--out", type=Path, help="output folder (default: the recipe's out:, or runs/<name>)"
    )
    p.add_argument("--no-cache", action="store_true", help="redo every stage")
    p.add_argument(
        "--ray", metavar="ADDRESS", help="run search trials on this Ray cluster ('auto', 'local')"
    )
    p.add_argument(
        "--progress",
        action="store_true",
        help="epochs and artifacts with an ETA (the default; plain lines when not a terminal)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars or lines")
    p.add_argument(
        "--remeasure",
        action="store_true",
        help="measure every artifact again (training and builds stay cached)",
    )
    _device_arg(p, "where every model and pass trains, whatever the recipe says")

    from .measure import bench, compare, gate, gate_interleaved, report

    bench.configure_parser(
        sub.add_parser("bench", help="benchmark checkpoints on targets (fresh process each)")
    )
    gate.configure_parser(
        sub.add_parser("gate", help="check results against a policy (exit 0 pass, 1 fail, 2 usage)")
    )
    report.configure_parser(
        sub.add_parser("report", help="markdown + HTML report of a results file")
    )
    p = sub.add_parser("compare", help="results of several devices and runs side by side")
    compare.configure_parser(p)
    gate_interleaved.add_arguments(p)  # compare --interleave BASE NEW: a live A/B measurement

    sub.add_parser("models", help="list registry models")
    sub.add_parser("datasets", help="list datasets")
    return parser


def cmd_train(a: argparse.Namespace) -> int:
    from .baselines import train_and_save
    from .train import dist_info, init_distributed

    distributed = init_distributed(a.device)
    try:
        out = a.out or Path("runs") / a.data / f"{a.model}.safetensors"
        result, row, _ = train_and_save(
            a.model,
            _data_config(a),
            out,
            progress=not a.no_progress,
            width=a.width,
            model_options=_parse_set(a.set),
            **_train_overrides(a),
        )
        if dist_info()[0] == 0 and row is not None:
            print(
                f"{a.model}: test accuracy {row.test_accuracy:.4f}, {row.params:,} params, "
                f"{row.macs:,} MACs, {row.bytes:,} bytes, {result.seconds:.1f} s "
                f"on {result.world_size} process(es) -> {out}"
            )
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def cmd_baselines(a: argparse.Namespace) -> int:
    from .baselines import train_baselines
    from .measure.report_table import print_baselines

    names = [n.strip() for n in a.models.split(",") if n.strip()]
    out = a.out or Path("runs") / a.data / "baselines"
    rows = train_baselines(
        _data_config(a), names, out, progress=not a.no_progress, **_train_overrides(a)
    )
    from .fsutil import atomic_write_text

    summary = out / "baselines.json"
    atomic_write_text(summary, json.dumps([r.to_dict() for r in rows], indent=2))
    print_baselines(rows, title=f"Baselines on {a.data} (test split)")
    print(f"checkpoints and {summary.name} written to {out}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .data import DataConfig, load_dataset
    from .train import evaluate

    ckpt = load_checkpoint(a.checkpoint)
    data_cfg = dict(ckpt.meta.preprocessing.get("data_config") or {})
    if not data_cfg:
        raise ConfigError(f"{a.checkpoint} does not record its data set; evaluate it from Python")
    if a.root:
        data_cfg["root"] = a.root
    data = load_dataset(DataConfig(**data_cfg))
    res = evaluate(ckpt.model, data.test)
    print(
        json.dumps(
            {
                "checkpoint": str(a.checkpoint),
                "test_accuracy": res["accuracy"],
                "test_loss": res["loss"],
            }
        )
    )
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from .checkpoint import read_meta

    meta, _ = read_meta(a.checkpoint)
    body = meta.model_dump()
    vocab = body["preprocessing"].get("vocab")
    if vocab:  # a vocabulary can hold 20k words: show its size, not its words
        body["preprocessing"]["vocab"] = {"size": len(vocab["words"])}
    print(json.dumps(body, indent=2))
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from .models import MODELS

    for name, e in MODELS.items():
        print(f"{name:12s} {e.family:10s} input: {', '.join(e.input_kinds)}")
    return 0


def cmd_datasets(a: argparse.Namespace) -> int:
    from .data import DATASETS

    for name, e in DATASETS.items():
        where = "local files (--root)" if e.needs_root else "bundled"
        print(f"{name:14s} views: {', '.join(e.views):16s} {where}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from .run.execute import run

    outcome = run(
        a.recipe,
        out=a.out,
        use_cache=not a.no_cache,
        progress=not a.no_progress,
        ray=a.ray,
        fresh_measurements=a.remeasure,
        device=a.device,
    )
    print(f"results: {outcome.results_path}")
    print(f"report:  {outcome.report_html}  (and {outcome.report_md.name})")
    if outcome.gate_summary:
        print(f"gates:   {outcome.gate_summary} (JUnit: {outcome.junit})")
    for fail in outcome.failures:  # the run went on without them; say so last, where it is seen
        print(f"failed:  {fail.label}: {fail.message}", file=sys.stderr)
    print(
        f"wall time {outcome.seconds:.1f} s; stages cached {outcome.cache_hits}, run {outcome.cache_misses}"
    )
    return outcome.exit_code


def _delegate(module: str, fn: str):
    def call(a: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(f".{module}", __package__), fn)(a)

    return call


COMPARE_MODES = {  # compare: results side by side, or (--interleave) two artifacts timed now
    False: ("measure.compare", "cmd_compare"),
    True: ("measure.gate_interleaved", "cmd_interleave"),
}

COMMANDS = {
    "train": cmd_train,
    "baselines": cmd_baselines,
    "eval": cmd_eval,
    "info": cmd_info,
    "models": cmd_models,
    "datasets": cmd_datasets,
    "run": cmd_run,
    "bench": _delegate("bench", "cmd_bench"),
    "gate": _delegate("gate", "cmd_gate"),
    "report": _delegate("report", "cmd_report"),
    "compare": lambda a: _delegate(*COMPARE_MODES[bool(a.interleave)])(a),
}


def error_log_for(a: argparse.Namespace) -> Path:
    """Where an internal error's traceback goes: the run's out folder for ``run`` (``--out``,
    else the recipe's ``out:`` or ``runs/<name>``), else runs/error.log."""
    if a.command != "run":
        return DEFAULT_ERROR_LOG
    if a.out is not None:
        return Path(a.out) / "error.log"
    from .run.recipe_checks import load_recipe

    return load_recipe(a.recipe)[0].out_dir() / "error.log"


def main(argv: list[str] | None = None) -> int:
    """The ``modelpress`` command. Returns the exit code: 0 ran and gates passed, 1 a gate (or a
    model or target) failed, 2 bad usage, configuration or input, 3 internal error, 130 Ctrl-C."""
    return parse_and_run(build_parser(), argv, lambda a: COMMANDS[a.command](a), error_log_for)


if __name__ == "__main__":
    sys.exit(main())
