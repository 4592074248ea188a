"""Baseline training on digits: every registry model, 3 seeds, test accuracy and wall time.

    python benchmarks/baselines.py [--seeds 0 1 2]     -> benchmarks/results/baselines.md

Each model trains with its recommended schedule (modelpress.baselines.fit), torch using the
machine's default thread count; the wall time is the trainer's own (data loading excluded).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

TARGETS = {"cnn": 98.5, "rnn": 96.0, "attention": 97.0}  # issue 2: test accuracy floors, %


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    import torch

    from modelpress.baselines import fit
    from modelpress.data import load_dataset
    from modelpress.models import MODELS

    start = time.perf_counter()
    rows = []
    for name, entry in MODELS.items():
        data = load_dataset("digits", view=entry.input_kinds[0])
        accs, secs = [], []
        for seed in args.seeds:
            result = fit(name, data, seed=seed)
            accs.append(100 * result.test_accuracy)
            secs.append(result.seconds)
            print(f"{name} seed {seed}: {accs[-1]:.2f} % in {secs[-1]:.1f} s", flush=True)
        mean, std = statistics.mean(accs), statistics.pstdev(accs)
        floor = TARGETS[entry.family]
        rows.append(
            f"| {name} | {entry.family} | {mean:.2f} +- {std:.2f} | {min(accs):.2f} | {floor:.1f} "
            f"| {'yes' if mean >= floor else 'NO'} | {max(secs):.1f} | {'yes' if max(secs) <= 60 else 'NO'} |"
        )
    lines = [
        "# Baselines on digits (test split, 360 images)",
        "",
        f"- Command: `python benchmarks/baselines.py --seeds {' '.join(map(str, args.seeds))}` "
        f"({time.perf_counter() - start:.0f} s wall)",
        f"- Machine: {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"{platform.platform()}, {datetime.now(timezone.utc):%Y-%m-%d}",
        "- Each model: its recommended schedule (`modelpress.baselines.fit`), early stopping on val, "
        "seeds as listed; accuracy is mean +- population std over seeds",
        "",
        "| model | family | test accuracy % | worst seed % | target % | met | slowest train s | <= 60 s |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    out = Path(__file__).resolve().parent / "results" / "baselines.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
