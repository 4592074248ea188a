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

>>> from modelpress.pipeline import run                                  # doctest: +SKIP
>>> outcome = run("recipes/digits.yaml")
>>> outcome.report_html
PosixPath('runs/digits/report.html')
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifact import Artifact
from .data import DataBundle, DataConfig, load_dataset
from .errors import ConfigError, ModelPressError, one_line
from .recipe import Recipe, load_recipe, pass_configs, pass_name
from .stages import StageCache, artifact_from_manifest, artifact_to_manifest


@dataclass
class ModelRun:
    """What one recipe model became: its float baseline, the compressed chain, their records."""

    label: str
    family: str
    data: DataBundle
    baseline: Artifact
    teacher: Artifact | None = None
    compressed: Artifact | None = None  # the last torch artifact of the pass chain
    qdq: Artifact | None = None  # a QAT QDQ ONNX artifact, when the chain has qat
    chain: list[str] = field(default_factory=list)
    pass_records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failure: ModelFailure | None = None  # the pass chain failed: its rows are failed records

    @property
    def compressed_label(self) -> str:
        return f"{self.label}+{'+'.join(self.chain)}" if self.chain else self.label


@dataclass(frozen=True)
class ModelFailure:
    """Why a model (``label``: its results label) got no artifact from ``stage``."""

    label: str
    stage: str  # import | train | teacher | <pass name>
    reason: str
    exit_code: int = 1  # 2: the user's input was wrong (ModelPressError.exit_code)

    @classmethod
    def of(cls, label: str, stage: str, exc: BaseException, log: Path) -> ModelFailure:
        """The failure ``exc``; an unexpected one (not a ModelPressError) also leaves its
        traceback in ``log`` for a bug report."""
        if isinstance(exc, ModelPressError):
            return cls(label, stage, one_line(exc) or type(exc).__name__, exc.exit_code)
        from .exits import write_traceback

        where = write_traceback(exc, lambda: log)
        return cls(label, stage, f"{type(exc).__name__}: {one_line(exc)} (traceback: {where})")

    @property
    def message(self) -> str:
        return f"{self.stage} failed: {self.reason}"


@dataclass
class RunOutcome:
    results_path: Path
    report_md: Path
    report_html: Path
    exit_code: int
    models: list[ModelRun]
    failures: list[ModelFailure] = field(default_factory=list)
    gate_summary: str = ""
    junit: Path | None = None
    seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0


class Pipeline:
    def __init__(
        self,
        recipe: Recipe,
        recipe_path: Path,
        out_dir: Path,
        *,
        use_cache: bool = True,
        log: Callable[[str], None] = print,
        progress: bool = False,
        fresh_measurements: bool = False,
        device: str | None = None,
    ):
        self.recipe = recipe
        self.device = device  # overrides the train device of every model and pass (None: no)
        self.recipe_path = recipe_path
        self.out = out_dir
        self.log = log
        self.progress = progress
        self.fresh_measurements = fresh_measurements  # measure again, whatever the cache holds
        self.cache = StageCache(out_dir / "cache", log=log, enabled=use_cache)
        self._data: dict[str, DataBundle] = {}

    # -- data -----------------------------------------------------------------------------------
    def data(self, view: str) -> DataBundle:
        if view not in self._data:
            cfg = {k: v for k, v in self.recipe.data.items() if k != "calibration"}
            self._data[view] = load_dataset(DataConfig(**{**cfg, "view": view}))
        return self._data[view]

    @property
    def trust(self) -> dict[str, list[str]]:
        """What a worker process needs to rebuild this recipe's own models: the factories, and
        the recipe's folder (appended to sys.path there) only when there is a factory."""
        factories = sorted({m.factory for m in self.recipe.models.values() if m.factory})
        folders = [str(self.recipe_path.parent.resolve())] if factories else []
        return {"pythonpath": folders, "factories": factories}

    @property
    def calibration(self) -> int:
        return int(self.recipe.data.get("calibration", 256))

    # -- training -------------------------------------------------------------------------------
    def train(
        self, label: str, name: str, width: float, options: dict, train: dict, view: str | None
    ) -> Artifact:
        from .baselines import fit, train_config_for, view_for
        from .checkpoint import save_trained

        data_cfg = view_for(
            name, DataConfig(**{k: v for k, v in self.recipe.data.items() if k != "calibration"})
        )
        data = self.data(view or data_cfg.view)
        overrides = self.train_overrides({"seed": self.recipe.seed, **train})
        config = {
            "model": name,
            "width": width,
            "options": options,
            "train": _without_device(overrides),
            "data": data.preprocessing.get("data_config"),
        }

        def build(tmp: Path) -> dict[str, Any]:
            result = fit(
                name, data, width=width, model_options=options, progress=self.progress, **overrides
            )
            metrics = {"test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy}
            record = {**train_config_for(name, **overrides).to_dict(), **result.summary()}
            art = save_trained(
                tmp / f"{label}.safetensors",
                result.model,
                data,
                metrics=metrics,
                train=record,
                lineage=[{"stage": "train", "model": name, "width": width}],
            )
            return {
                "artifact": artifact_to_manifest(art, tmp),
                "test_accuracy": result.test_accuracy,
                "seconds": result.seconds,
            }

        folder, manifest = self.cache.run(
            "train", self.cache.key("train", "", config), build, label
        )
        return artifact_from_manifest(manifest["artifact"], folder)

    def train_overrides(self, train: dict[str, Any]) -> dict[str, Any]:
        """A ``train:`` section of the recipe with the run's device override applied."""
        return train if self.device is None else {**train, "device": self.device}

    # -- passes ---------------------------------------------------------------------------------
    def apply_pass(self, run: ModelRun, entry: dict[str, Any]) -> None:
        name = pass_name(entry)
        opts = pass_configs(entry)
        train = self.train_overrides(opts.pop("train", None) or {})
        if run.qdq is not None:
            raise ConfigError(
                f"models.{run.label}: qat must be the last pass (its output is an ONNX graph)"
            )
        parent = run.compressed or run.baseline
        key = self.cache.key(
            name,
            parent.id,
            {
                "options": opts,
                "train": _without_device(train),
                "teacher": run.teacher.id if run.teacher else None,
                "seed": self.recipe.seed,
            },
        )

        def build(tmp: Path) -> dict[str, Any]:
            result = self._pass_fn(name, opts, train, run, parent, tmp)
            return {
                "artifact": artifact_to_manifest(result.artifact, tmp),
                "record": result.record.to_dict(),
            }

        folder, manifest = self.cache.run(name, key, build, run.label)
        art = artifact_from_manifest(manifest["artifact"], folder)
        run.pass_records.append(manifest["record"])
        run.chain.append(name)
        if art.format == "onnx":
            run.qdq = art
        else:
            run.compressed = art

    def _pass_fn(
        self, name: str, opts: dict, train: dict, run: ModelRun, parent: Artifact, tmp: Path
    ):
        from .compress.base import PassContext

        ctx = PassContext(
            data=run.data,
            out_dir=tmp,
            seed=self.recipe.seed,
            progress=self.progress,
            device=train.get("device", "auto"),
        )
        tuple_opts = {k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()}
        if name == "distill":
            from .baselines import train_config_for
            from .compress.distill import DistillConfig, distill

            model_name = parent.meta["model"]["name"]
            train_cfg = train_config_for(model_name, **{"seed": self.recipe.seed, **train})
            return distill(run.teacher, parent, DistillConfig(**tuple_opts), ctx, train_cfg)
        if name == "prune":
            from .compress.distill_features import teacher_for
            from .compress.prune import PruneConfig, prune

            teacher = teacher_for(run.teacher, run.data) if run.teacher is not None else None
            return prune(parent, PruneConfig(**tuple_opts), ctx, teacher=teacher)
        if name == "qat":
            from .compress.quantize import QATConfig, qat

            return qat(parent, QATConfig(**tuple_opts), ctx)
        if name == "fp16":
            from .compress.quantize import to_fp16

            return to_fp16(parent, ctx)
        if name == "sparsity":
            from .compress.sparsity import SparsityConfig, sparsify

            return sparsify(parent, SparsityConfig(**tuple_opts), ctx)
        raise ConfigError(f"unknown pass {name!r}")  # recipe validation makes this unreachable

    # -- models ---------------------------------------------------------------------------------
    def model(self, label: str) -> ModelRun:
        from .models import MODELS

        m = self.recipe.models[label]
        self.log(f"[model] {label}")
        if m.source != "registry":
            from .byo import import_model

            return import_model(self, label, m)
        base = self.train(label, m.model, m.width, m.options, m.train, m.view)
        data = self.data(base.meta["input_spec"]["kind"])
        run = ModelRun(label=label, family=MODELS[m.model].family, data=data, baseline=base)
        self.run_chain(run, m)
        return run

    def run_chain(self, run: ModelRun, m) -> None:
        """Teacher and passes of ``run``; a failure becomes ``run.failure`` (its compressed rows
        fail with the reason) and the float baseline goes on alone."""
        passes = self.recipe.passes_for(run.label)
        stage = "teacher"
        try:
            if m.teacher is not None:
                run.teacher = self.teacher(run.label, m)
            for entry in passes:
                stage = pass_name(entry)
                self.apply_pass(run, entry)
        except Exception as exc:
            if self.cache.dry:
                raise  # a readiness probe (run_parallel): the real walk reports it
            intended = self.chain_label(run.label)
            run.failure = ModelFailure.of(intended, stage, exc, self.out / "error.log")
            run.chain, run.compressed, run.qdq, run.pass_records = [], None, None, []
            run.notes.append(f"{intended}: {run.failure.message}")
            self.log(f"  [failed] {intended}: {run.failure.message}")

    def teacher(self, label: str, m) -> Artifact:
        t = m.teacher
        if t.checkpoint:
            from .checkpoint import load_checkpoint

            return load_checkpoint(t.checkpoint).artifact
        return self.train(f"{label}-teacher", t.model, t.width, t.options, t.train, None)

    # -- targets --------------------------------------------------------------------------------
    def source_for(
        self, run: ModelRun, variant: str, target: str, precision: str
    ) -> Artifact | None:
        """Which artifact a target builds from: QDQ from QAT for ORT qdq / TensorRT int8."""
        if variant == "baseline":
            return run.baseline
        if run.qdq is not None and (
            (target == "onnxruntime" and precision == "qdq")
            or (target == "tensorrt" and precision == "int8")
        ):
            return run.qdq
        return run.compressed

    def chain_label(self, label: str) -> str:
        """The results label of ``label``'s compressed chain as the recipe asks for it."""
        return "+".join([label, *(pass_name(e) for e in self.recipe.passes_for(label))])

    def family_of(self, label: str) -> str:
        from .models import MODELS

        m = self.recipe.models[label]
        return MODELS[m.model].family if m.source == "registry" and m.model in MODELS else "user"

    def failed_records(self, failure: ModelFailure, labels: list[str]) -> list:
        """Rows for what ``failure`` left unbuilt: ``labels`` x every target and precision."""
        from .results import Record

        model = failure.label.split("+")[0]
        return [
            Record(
                model=label,
                family=self.family_of(model),
                target=target,
                precision=precision,
                status="failed",
                reason=failure.message,
            )
            for label in labels
            for target, section in self.recipe.targets_for(model).items()
            if ("baseline" if label == model else "compressed") in section.variants
            for precision in section.precisions
        ]

    def variants(self, run: ModelRun) -> list[tuple[str, str]]:
        """(variant, results label) pairs: the float baseline, and the compressed chain if any."""
        out = [("baseline", run.label)]
        if run.chain:
            out.append(("compressed", run.compressed_label))
        return out


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
    from .run_steps import finish
    from .run_targets import benchmark_all

    start = time.perf_counter()
    recipe, lines = load_recipe(recipe_path)
    from .recipe_checks import check_devices

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
    from .run_parallel import prepare, set_train_threads

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
        from .search import run_search

        search = run_search(pipe, models, ray=ray)
    outcome = finish(pipe, models, results, search)
    outcome.failures = failures
    if failures:
        every_model = len(failures) == len(recipe.models) and not models
        user_input = all(f.exit_code == 2 for f in failures)
        outcome.exit_code = max(outcome.exit_code, 2 if every_model and user_input else 1)
    outcome.seconds = time.perf_counter() - start
    outcome.cache_hits, outcome.cache_misses = pipe.cache.hits, pipe.cache.misses
    return outcome


def _without_device(train: dict[str, Any]) -> dict[str, Any]:
    """A stage's train settings as its cache key: where it computes is not what it computes."""
    return {k: v for k, v in train.items() if k != "device"}
