"""Recipe files: one YAML that describes a whole run, validated with line-and-key errors.

```yaml
name: digits
data: {name: digits, seed: 0, calibration: 256}
models:
  cnn: {model: resnet8, teacher: {model: resnet8, width: 2.0}}
  rnn: {model: gru}
passes:                     # applied in order to every model (a model may override: passes:)
  - distill: {temperature: 4.0, alpha: 0.9, train: {epochs: 30}}
  - prune: {macs_budget: 0.5, recovery: kd, recovery_epochs: 15}
targets:
  onnxruntime: {precisions: [fp32, int8], threads: 2}
  litert: {precisions: [fp32, int8]}
benchmark: {batch_sizes: [1, 32], min_calls: 100, min_seconds: 1.0}
gates: gates.yaml          # or an inline policy
```

Every section maps 1:1 onto a typed config of the Python API (DataConfig, TrainConfig,
DistillConfig, PruneConfig, QATConfig, SparsityConfig, the targets' configs, BenchSettings,
gate Policy); an unknown key or value fails with the valid choices and the line it is on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, one_line

PASSES = ("distill", "prune", "sparsity", "qat", "fp16")
KNOWN_TARGETS = ("torch", "onnxruntime", "litert", "tensorrt")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSection(_Strict):
    kind: Literal["image", "sequence", "tokens"]
    shape: list[int]
    dtype: Literal["float32", "int64"] = "float32"


class TeacherSection(_Strict):
    model: str | None = None  # registry name, trained here
    width: float = 1.0
    options: dict[str, Any] = {}
    train: dict[str, Any] = {}
    checkpoint: str | None = None  # or an existing modelpress checkpoint

    @model_validator(mode="after")
    def _one_source(self) -> TeacherSection:
        if (self.model is None) == (self.checkpoint is None):
            raise ValueError(
                "a teacher needs exactly one of model: (a registry name) or checkpoint: (a path)"
            )
        return self


class TargetSection(_Strict):
    precisions: list[str] = ["fp32"]
    options: dict[str, Any] = {}  # the target's config (threads, calibration, ...)

    @model_validator(mode="before")
    @classmethod
    def _flat_options(cls, data: Any) -> Any:
        """Allow target options next to precisions: {precisions: [...], threads: 2}."""
        if isinstance(data, dict):
            opts = {k: v for k, v in data.items() if k not in ("precisions", "options")}
            if opts:
                data = {
                    "precisions": data.get("precisions", ["fp32"]),
                    "options": {**data.get("options", {}), **opts},
                }
        return data


class ModelSection(_Strict):
    """One model to ship: a registry model trained here, a user factory + weights, or an .onnx."""

    model: str | None = None  # registry name
    factory: str | None = None  # "package.module:function" building an nn.Module
    kwargs: dict[str, Any] = {}
    weights: str | None = None  # .safetensors, or .pt loaded with weights_only=True
    onnx: str | None = None  # a ready ONNX file (torch passes are skipped)
    input: InputSection | None = None  # required for factory / onnx models
    view: Literal["image", "sequence", "tokens"] | None = None  # the data view to feed it
    width: float = 1.0
    options: dict[str, Any] = {}  # registry config overrides (hidden_size: 32, ...)
    train: dict[str, Any] = {}  # TrainConfig overrides
    teacher: TeacherSection | None = None
    passes: list[dict[str, Any]] | None = None  # overrides the recipe-wide passes
    targets: dict[str, TargetSection] | None = None  # overrides the recipe-wide targets

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        given = [k for k in ("model", "factory", "onnx") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of model:, factory: or onnx: (got {given or 'none'})"
            )
        if (self.factory or self.onnx) and self.input is None:
            raise ValueError("a factory: or onnx: model needs input: {kind, shape, dtype}")
        if self.factory and ":" not in self.factory:
            raise ValueError(f"factory {self.factory!r} must look like package.module:function")
        return self

    @property
    def source(self) -> str:
        return "registry" if self.model else "factory" if self.factory else "onnx"


class SearchSection(_Strict):
    max_drop: float = Field(1.0, ge=0.0, le=100.0)  # accuracy-drop budget, points vs float
    objective: Literal["latency", "bytes"] = "latency"
    target: str = "onnxruntime"
    batch: int = Field(32, ge=1)
    prune_ratios: list[float] = [0.0, 0.3, 0.5, 0.7]
    precisions: list[str] = ["fp32", "int8"]
    keep_float: list[int] = [0]  # how many of the most sensitive layers stay float
    models: list[str] | None = None  # which recipe models to search (default: all)
    workers: int = Field(2, ge=1)
    recovery_epochs: int = Field(8, ge=0)


class Recipe(_Strict):
    name: str = "run"
    out: str | None = None  # default runs/<name>
    seed: int = 0
    data: dict[str, Any] = {"name": "digits"}
    models: dict[str, ModelSection]
    passes: list[dict[str, Any]] = []
    targets: dict[str, TargetSection] = {"onnxruntime": TargetSection()}
    benchmark: dict[str, Any] = {}
    gates: str | dict[str, Any] | None = None
    search: SearchSection | None = None

    @field_validator("models")
    @classmethod
    def _some_models(cls, v: dict[str, ModelSection]) -> dict[str, ModelSection]:
        if not v:
            raise ValueError("the recipe names no models")
        return v

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, v: dict[str, TargetSection]) -> dict[str, TargetSection]:
        unknown = sorted(set(v) - set(KNOWN_TARGETS))
        if unknown:
            raise ValueError(f"unknown target(s) {unknown}; valid: {list(KNOWN_TARGETS)}")
        return v

    def targets_for(self, label: str) -> dict[str, TargetSection]:
        m = self.models[label]
        return self.targets if m.targets is None else m.targets

    def passes_for(self, label: str) -> list[dict[str, Any]]:
        m = self.models[label]
        return self.passes if m.passes is None else m.passes

    def out_dir(self) -> Path:
        return Path(self.out or Path("runs") / self.name)


# --- YAML with line numbers ----------------------------------------------------------------------


class _Lines:
    """Map a key path (from pydantic or our own checks) to the line it is on in the YAML."""

    def __init__(self, root: Any):
        self.root = root

    def line(self, path: tuple) -> int | None:
        import yaml

        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for key in path:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == str(key)), None)
                if match is None:
                    return line
                node, line = match[1], match[0].start_mark.line + 1  # the line of the key
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(key, int)
                and key < len(node.value)
            ):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _loc_text(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<top level>"


def _inner_model(ann: Any) -> tuple[type[BaseModel] | None, bool]:
    """(pydantic model inside an annotation, whether it sits in a dict/list container)."""
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, False
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    for arg in args:
        inner, _ = _inner_model(arg)
        if inner is not None:
            return inner, origin in (dict, list)
    return None, False


def _valid_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed where an extra key was found (walks the recipe models along ``loc``)."""
    cls: type[BaseModel] | None = root
    parts = list(loc[:-1])
    while parts and cls is not None:
        field = cls.model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        cls, contained = _inner_model(field.annotation)
        if contained and parts:
            parts.pop(0)  # the dict key or list index
    return sorted(cls.model_fields) if cls is not None else []


class RecipeError(ConfigError):
    """A recipe problem, with the file and line."""


def fail(path: Path, lines: _Lines | None, loc: tuple, message: str) -> RecipeError:
    line = lines.line(loc) if lines else None
    where = f"{path}:{line}" if line else str(path)
    return RecipeError(f"{where}: {_loc_text(loc)}: {one_line(message)}")


def load_recipe(path: str | Path) -> tuple[Recipe, _Lines]:
    """Parse and structurally validate a recipe; semantic checks happen in :func:`check_recipe`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist; see recipes/digits.yaml for an example")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(
            f"{where}: not valid YAML: {one_line(getattr(exc, 'problem', exc))}"
        ) from exc
    lines = _Lines(root)
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with at least models:")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            valid = _valid_keys(Recipe, loc)
            msg = f"unknown key {loc[-1]!r}" + (
                f"; valid keys: {', '.join(valid)}" if valid else ""
            )
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "literal_error":
                msg = f"{msg} (got {err.get('input')!r})"
        raise fail(path, lines, loc, msg) from exc
    check_recipe(recipe, path, lines)
    return recipe, lines


# --- semantic checks: build every typed config once, so errors surface before any work ---------


def _build(cls: type, values: dict[str, Any], path: Path, lines: _Lines, loc: tuple) -> Any:
    if not isinstance(values, dict):
        raise fail(path, lines, loc, f"expected a mapping of {cls.__name__} fields")
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise fail(
            path,
            lines,
            (*loc, unknown[0]),
            f"unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}",
        )
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except ConfigError as exc:
        raise fail(path, lines, loc, str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise fail(path, lines, loc, f"invalid value: {exc}") from exc


def pass_name(entry: dict[str, Any]) -> str:
    return next(iter(entry))


def pass_configs(entry: dict[str, Any]) -> dict[str, Any]:
    """The single-key mapping ``{pass: {options...}}`` as (name, options); options may be None."""
    name = pass_name(entry)
    return dict(entry[name] or {})


def check_pass(entry: Any, path: Path, lines: _Lines, loc: tuple) -> None:
    from .compress.distill import DistillConfig
    from .compress.prune import PruneConfig
    from .compress.quantize import QATConfig
    from .compress.sparsity import SparsityConfig
    from .train import TrainConfig

    if not isinstance(entry, dict) or len(entry) != 1:
        raise fail(path, lines, loc, f"a pass is a one-key mapping, one of {', '.join(PASSES)}")
    name = pass_name(entry)
    if name not in PASSES:
        raise fail(
            path, lines, (*loc, name), f"unknown pass {name!r}; valid passes: {', '.join(PASSES)}"
        )
    opts = pass_configs(entry)
    train = opts.pop("train", {})
    classes = {
        "distill": DistillConfig,
        "prune": PruneConfig,
        "qat": QATConfig,
        "sparsity": SparsityConfig,
    }
    if name in classes:
        _build(classes[name], opts, path, lines, (*loc, name))
    elif opts:
        raise fail(path, lines, (*loc, name), f"pass {name} takes no options")
    if train:
        _build(TrainConfig, train, path, lines, (*loc, name, "train"))


def check_recipe(recipe: Recipe, path: Path, lines: _Lines) -> None:
    """Build every config the run will need, so a bad value fails now with its line."""
    from .bench import BenchSettings
    from .data import DataConfig
    from .models import MODELS
    from .train import TrainConfig

    data = {k: v for k, v in recipe.data.items() if k != "calibration"}
    _build(DataConfig, data, path, lines, ("data",))
    calib = recipe.data.get("calibration", 256)
    if not isinstance(calib, int) or calib < 1:
        raise fail(
            path,
            lines,
            ("data", "calibration"),
            f"calibration must be a positive sample count, got {calib!r}",
        )
    for label, m in recipe.models.items():
        loc = ("models", label)
        if m.model and m.model not in MODELS:
            raise fail(
                path,
                lines,
                (*loc, "model"),
                f"unknown model {m.model!r}; known: {', '.join(MODELS)}",
            )
        if m.teacher and m.teacher.model and m.teacher.model not in MODELS:
            raise fail(
                path,
                lines,
                (*loc, "teacher", "model"),
                f"unknown model {m.teacher.model!r}; known: {', '.join(MODELS)}",
            )
        _build(TrainConfig, m.train, path, lines, (*loc, "train"))
        passes = recipe.passes_for(label)
        base = (*loc, "passes") if m.passes is not None else ("passes",)
        for i, entry in enumerate(passes):
            check_pass(entry, path, lines, (*base, i))
            if pass_name(entry) == "distill" and m.teacher is None and m.source != "onnx":
                raise fail(
                    path,
                    lines,
                    (*base, i, "distill"),
                    f"distill needs a teacher: add models.{label}.teacher",
                )
    _check_targets(recipe.targets, path, lines, ("targets",))
    for label, m in recipe.models.items():
        if m.targets is not None:
            _check_targets(m.targets, path, lines, ("models", label, "targets"))
    bench = {k: v for k, v in recipe.benchmark.items()}
    _build(BenchSettings, bench, path, lines, ("benchmark",))
    _check_gates(recipe, path, lines)


def _check_targets(
    targets: dict[str, TargetSection], path: Path, lines: _Lines, loc: tuple
) -> None:
    from .targets import get_target

    unknown = sorted(set(targets) - set(KNOWN_TARGETS))
    if unknown:
        raise fail(
            path,
            lines,
            (*loc, unknown[0]),
            f"unknown target {unknown[0]!r}; valid: {list(KNOWN_TARGETS)}",
        )
    for name, t in targets.items():
        try:
            target = get_target(name, **t.options)
        except ConfigError as exc:
            raise fail(path, lines, (*loc, name), str(exc)) from exc
        except TypeError as exc:
            raise fail(path, lines, (*loc, name), f"unknown option: {exc}") from exc
        bad = [p for p in t.precisions if p not in target.precisions]
        if bad:
            raise fail(
                path,
                lines,
                (*loc, name, "precisions"),
                f"{name} does not build {bad}; valid precisions: {', '.join(target.precisions)}",
            )


def _check_gates(recipe: Recipe, path: Path, lines: _Lines) -> None:
    from .gate import Policy, load_policy

    if recipe.gates is None:
        return
    if isinstance(recipe.gates, str):
        policy_path = (
            (path.parent / recipe.gates)
            if not Path(recipe.gates).is_absolute()
            else Path(recipe.gates)
        )
        if not policy_path.is_file():
            policy_path = Path(recipe.gates)
        try:
            load_policy(policy_path)
        except ConfigError as exc:
            raise fail(path, lines, ("gates",), str(exc)) from exc
        return
    try:
        Policy.model_validate(recipe.gates)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise fail(
            path, lines, ("gates", *err["loc"]), err["msg"].removeprefix("Value error, ")
        ) from exc
