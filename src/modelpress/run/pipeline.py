"""The pipeline of one recipe model: its data view, training (or import), teacher and pass chain,
each stage cached in the run's :class:`~.stages.StageCache`; what the chain produced is a
:class:`~.state.ModelRun`. The run as a whole (build, measure, report, gate) is
:func:`modelpress.run.execute.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifact import Artifact
from ..data import DataBundle, DataConfig, load_dataset
from ..errors import ConfigError
from .recipe import Recipe, pass_configs, pass_name
from .stages import StageCache, artifact_from_manifest, artifact_to_manifest
from .state import ModelFailure, ModelRun

if TYPE_CHECKING:
    from ..compress.base import PassResult


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
        self.devices: list = []  # the recipe's other measuring devices (run/remote_steps.py)

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
        from ..baselines import fit, train_config_for, view_for
        from ..checkpoint import save_trained

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
    ) -> PassResult:
        """Pass ``name`` of the registry (:mod:`modelpress.compress.registry`) on ``parent``."""
        from ..compress.base import PassContext
        from ..compress.registry import PassInputs, get_pass

        entry = get_pass(name)  # recipe validation has checked the name
        ctx = PassContext(
            data=run.data,
            out_dir=tmp,
            seed=self.recipe.seed,
            progress=self.progress,
            device=train.get("device", "auto"),
        )
        return entry.run(
            parent, entry.config(opts), ctx, PassInputs(teacher=run.teacher, train=train)
        )

    # -- models ---------------------------------------------------------------------------------
    def model(self, label: str) -> ModelRun:
        from ..models import MODELS

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
            from ..checkpoint import load_checkpoint

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
        from ..models import MODELS

        m = self.recipe.models[label]
        return MODELS[m.model].family if m.source == "registry" and m.model in MODELS else "user"

    def failed_records(self, failure: ModelFailure, labels: list[str]) -> list:
        """Rows for what ``failure`` left unbuilt: ``labels`` x every target and precision."""
        from ..measure.results import Record

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


def _without_device(train: dict[str, Any]) -> dict[str, Any]:
    """A stage's train settings as its cache key: where it computes is not what it computes."""
    return {k: v for k, v in train.items() if k != "device"}
