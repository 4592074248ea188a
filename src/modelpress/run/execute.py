"""``modelpress run recipe.yaml``: train -> distill -> prune -> quantize -> build per target ->
validate -> benchmark -> report -> gate, every stage cached and resumable (see stages.py).

Failure isolation: a model whose import, training or pass fails, and a target that is
unavailable or fails to build, become results rows (status ``failed`` / ``skipped``) with the
reason, and the rest go on to the report. A pass that fails costs only the model's compressed
rows: its float baseline is still built and measured. The exit code reflects the gates (0 pass,
1 fail); it is at least 1 when a model failed (2 when every model failed on the user's input),
and 1 when no gates are set and nothing at all could be measured.

Devices: every training and pass trains where its ``train: {device: ...}`` says (``auto`` by
default: CUDA when torch sees a GPU); ``run(..., device=)`` (``modelpress run --device``)
overrides them all. The device is where a stage computes, not what: like the thread count it is
not part of a stage's cache key, and the records say where each stage ran.

>>> from modelpress.run import run                                  # doctest: +SKIP
>>> outcome = run("recipes/digits.yaml")
>>> outcome.report_html
PosixPath('runs/digits/report.html')
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .int8_fallback import fails_run
from .parallel import prepare, set_train_threads
from .pipeline import Pipeline
from .plan import benchmark_all
from .recipe_checks import check_devices, load_recipe
from .search import run_search
from .state import ModelFailure, RunOutcome
from .steps import finish


def run(
    recipe_path: str | Path,
    *,
    out: str | Path | None = None,
    use_cache: bool = True,
    log: Callable[[str], None] = print,
    progress: bool = False,
    ray: str | None = None,
    fresh_measurements: bool = False,
    device: str | None = None,
) -> RunOutcome:
    """Run a recipe end to end. Raises ConfigError before any work when the recipe is invalid.

    ``ray``: address of a Ray cluster for the search trials (``auto``, ``local``, host:port).
    ``progress``: epochs and artifacts with an ETA (live bars on a terminal, else plain lines).
    ``fresh_measurements``: measure every artifact now, even where the cache holds a record
    (training and builds stay cached).
    ``device``: train every model and pass there (auto | cpu | cuda | cuda:N), whatever the
    recipe's ``train:`` sections say; checked before any work."""
    start = time.perf_counter()
    recipe, lines = load_recipe(recipe_path)
    check_devices(recipe, Path(recipe_path), lines, device)  # before any output
    out_dir = Path(out) if out else recipe.out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(
        recipe,
        Path(recipe_path),
        out_dir,
        use_cache=use_cache,
        log=log,
        progress=progress,
        fresh_measurements=fresh_measurements,
        device=device,
    )
    from .remote_steps import resolve_devices

    pipe.devices = resolve_devices(pipe)  # a devices typo fails now, not after training
    set_train_threads()
    if use_cache:
        prepare(pipe)
    models, failures, failed_rows = [], [], []
    for label in recipe.models:
        try:
            models.append(pipe.model(label))
        except Exception as exc:  # the model's own failure: rows that say why, the rest go on
            stage = "import" if recipe.models[label].source != "registry" else "train"
            fail = ModelFailure.of(label, stage, exc, out_dir / "error.log")
            pipe.log(f"  [failed] {label}: {fail.message}")
            failures.append(fail)
            passes = recipe.passes_for(label)
            labels = [label] + ([pipe.chain_label(label)] if passes else [])
            failed_rows += pipe.failed_records(fail, labels)
    failures += [run.failure for run in models if run.failure is not None]
    failed_rows += [
        r
        for run in models
        if run.failure
        for r in pipe.failed_records(run.failure, [run.failure.label])
    ]
    results = benchmark_all(pipe, models, failed_rows)
    search = None
    if recipe.search is not None:
        search = run_search(pipe, models, ray=ray)
    outcome = finish(pipe, models, results, search)
    if fails_run(recipe, results.records):  # quantize: {over_budget: fail}
        outcome.exit_code = max(outcome.exit_code, 1)
    outcome.failures = failures
    if failures:
        every_model = len(failures) == len(recipe.models) and not models
        user_input = all(f.exit_code == 2 for f in failures)
        outcome.exit_code = max(outcome.exit_code, 2 if every_model and user_input else 1)
    outcome.seconds = time.perf_counter() - start
    outcome.cache_hits, outcome.cache_misses = pipe.cache.hits, pipe.cache.misses
    return outcome
