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
quantize: {max_drop: 0.5, max_tries: 4}   # int8 accuracy budget (a model may override: quantize:)
gates: gates.yaml          # or an inline policy
```

Every section maps 1:1 onto a typed config of the Python API (DataConfig, TrainConfig,
DistillConfig, PruneConfig, QATConfig, SparsityConfig, the targets' configs, BenchSettings,
gate Policy); an unknown key or value fails with the valid choices and the line it is on.
Every malformed recipe is a one-line :class:`RecipeError` (CLI exit 2) naming the file, the line
and the key path, before any work starts: bytes that are not UTF-8, invalid or duplicate YAML,
wrong types (no coercion: ``epochs: "3"`` is refused), numbers that are not finite or beyond
2**31-1, empty sections, and names that become paths (``name:``, model labels) that are not
plain file names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..compress.registry import PASSES as PASS_REGISTRY
from ..errors import ConfigError, one_line
from ..feeds import names_problem
from ..userinput import (
    NAME_RULE,
    key_path,
    name_problem,
    path_problem,
)
from ..yamlfile import LineMap

PASSES = tuple(PASS_REGISTRY)  # the pass names a recipe may use (compress/registry.py)
KNOWN_TARGETS = ("torch", "onnxruntime", "litert", "tensorrt")
MAX_WIDTH = 16.0  # width multiplier of a registry model; wider is a typo, not a model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputSection(_Strict):
    kind: Literal["image", "sequence", "tokens"]
    shape: list[int] = Field(min_length=1, max_length=4)
    dtype: Literal["float32", "int64"] = "float32"
    # the model's inputs: the data's array first, then inputs derived from it (feeds.py)
    names: list[str] = Field([], max_length=8)

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(d < 1 for d in v):
            raise ValueError(f"every dimension of one sample is >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _derivable(self) -> InputSection:
        problem = names_problem(self.names, self.kind)
        if problem:
            raise ValueError(problem)
        return self

    def config(self) -> dict[str, Any]:
        """As a cache key: ``names`` only when given (keys of one-input models do not change)."""
        return self.model_dump(exclude=set() if self.names else {"names"})


class TeacherSection(_Strict):
    model: str | None = None  # registry name, trained here
    width: float = Field(1.0, gt=0.0, le=MAX_WIDTH)
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
    precisions: list[str] = Field(["fp32"], min_length=1)
    options: dict[str, Any] = {}  # the target's config (threads, calibration, ...)
    # which of a model's artifacts this target builds: its float baseline, its compressed chain
    variants: list[Literal["baseline", "compressed"]] = Field(
        ["baseline", "compressed"], min_length=1
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_options(cls, data: Any) -> Any:
        """Allow target options next to precisions: {precisions: [...], threads: 2}."""
        if isinstance(data, dict):
            own = ("precisions", "options", "variants")
            opts = {k: v for k, v in data.items() if k not in own}
            nested = data.get("options", {})
            if opts and isinstance(nested, dict):
                data = {
                    **{k: data[k] for k in own if k in data},
                    "precisions": data.get("precisions", ["fp32"]),
                    "options": {**nested, **opts},
                }
        return data


class QuantizeSection(_Strict):
    """The int8 accuracy budget (run/int8_fallback.py): every int8 build is validated on its
    runtime; over ``max_drop`` points below its float model, the layers that diverge are kept
    in float, one more per try, until it is within budget or ``max_tries`` rebuilds are spent."""

    enabled: bool = True
    max_drop: float = Field(0.5, ge=0.0, le=100.0)  # accuracy points vs the float model
    max_tries: int = Field(4, ge=0, le=64)  # rebuilds; 0: validate and mark only
    strategy: Literal["one_at_a_time", "bisect"] = "one_at_a_time"
    # an artifact no mix brings within budget: marked "over budget" (exit code unchanged), or
    # also fail the run (exit code 1), as a gate would
    over_budget: Literal["mark", "fail"] = "mark"


class ModelSection(_Strict):
    """One model to ship: a registry model trained here, a user factory + weights, or an .onnx."""

    model: str | None = None  # registry name
    factory: str | None = None  # "package.module:function" building an nn.Module
    kwargs: dict[str, Any] = {}
    weights: str | None = None  # .safetensors, or .pt loaded with weights_only=True
    onnx: str | None = None  # a ready ONNX file (torch passes are skipped)
    output: str | int | None = None  # factory model: the logits in its output (key or index)
    input: InputSection | None = None  # required for factory / onnx models
    view: Literal["image", "sequence", "tokens"] | None = None  # the data view to feed it
    width: float = Field(1.0, gt=0.0, le=MAX_WIDTH)
    options: dict[str, Any] = {}  # registry config overrides (hidden_size: 32, ...)
    train: dict[str, Any] = {}  # TrainConfig overrides
    teacher: TeacherSection | None = None
    passes: list[dict[str, Any]] | None = None  # overrides the recipe-wide passes
    targets: dict[str, TargetSection] | None = None  # overrides the recipe-wide targets
    quantize: QuantizeSection | None = None  # overrides the recipe-wide int8 budget

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        given = [k for k in ("model", "factory", "onnx") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of model:, factory: or onnx: (got {given or 'none'})"
            )
        if (self.factory or self.onnx) and self.input is None:
            raise ValueError("a factory: or onnx: model needs input: {kind, shape, dtype}")
        if self.output is not None and not self.factory:
            raise ValueError("output: applies to a factory: model (which part of its output)")
        if self.factory and ":" not in self.factory:
            raise ValueError(f"factory {self.factory!r} must look like package.module:function")
        return self

    @property
    def source(self) -> str:
        return "registry" if self.model else "factory" if self.factory else "onnx"


class SearchSection(_Strict):
    max_drop: float = Field(1.0, ge=0.0, le=100.0)  # accuracy-drop budget, points vs float
    objective: Literal["latency", "bytes"] = "latency"
    target: Literal["torch", "onnxruntime", "litert", "tensorrt"] = "onnxruntime"
    batch: int = Field(32, ge=1, le=65536)
    prune_ratios: list[float] = Field([0.0, 0.3, 0.5, 0.7], min_length=1)
    precisions: list[str] = Field(["fp32", "int8"], min_length=1)
    keep_float: list[int] = Field([0], min_length=1)  # most sensitive layers kept in float
    models: list[str] | None = Field(None, min_length=1)  # recipe models to search (None: all)
    workers: int = Field(2, ge=1, le=1024)
    recovery_epochs: int = Field(8, ge=0)

    @field_validator("prune_ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= r < 1.0 for r in v):
            raise ValueError(f"pruning ratios are fractions in [0, 1), got {v}")
        return v

    @field_validator("keep_float")
    @classmethod
    def _counts(cls, v: list[int]) -> list[int]:
        if any(k < 0 for k in v):
            raise ValueError(f"layer counts are >= 0, got {v}")
        return v


class Recipe(_Strict):
    name: str = "run"  # a plain file name: the run's folder is runs/<name>
    out: str | None = None  # default runs/<name>
    seed: int = Field(0, ge=0)
    data: dict[str, Any] = {"name": "digits"}
    models: dict[str, ModelSection]
    passes: list[dict[str, Any]] = []
    targets: dict[str, TargetSection] = {"onnxruntime": TargetSection()}
    benchmark: dict[str, Any] = {}
    gates: str | dict[str, Any] | None = None
    search: SearchSection | None = None
    quantize: QuantizeSection = QuantizeSection()
    # other devices that measure every artifact too, besides this machine (names of devices_file)
    devices: list[str] = []
    devices_file: str = "devices.yaml"  # relative to the recipe's folder

    @field_validator("devices")
    @classmethod
    def _device_names(cls, v: list[str]) -> list[str]:
        from ..devices.spec import LOCAL

        return [d for d in dict.fromkeys(v) if d != LOCAL]  # this machine always measures

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        problem = name_problem(v)
        if problem:
            raise ValueError(
                f"name {v!r} {problem}: it becomes the folder runs/<name>; {NAME_RULE}"
            )
        return v

    @field_validator("out")
    @classmethod
    def _usable_path(cls, v: str | None) -> str | None:
        problem = None if v is None else path_problem(v)
        if problem:
            raise ValueError(f"out {v!r} {problem}; give the folder to write the run to")
        return v

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
        if not v:
            raise ValueError(f"no targets: name at least one of {list(KNOWN_TARGETS)}")
        return v

    def targets_for(self, label: str) -> dict[str, TargetSection]:
        m = self.models[label]
        return self.targets if m.targets is None else m.targets

    def quantize_for(self, label: str) -> QuantizeSection:
        m = self.models[label]
        return self.quantize if m.quantize is None else m.quantize

    def passes_for(self, label: str) -> list[dict[str, Any]]:
        m = self.models[label]
        return self.passes if m.passes is None else m.passes

    def out_dir(self) -> Path:
        return Path(self.out or Path("runs") / self.name)


# --- YAML with line numbers ----------------------------------------------------------------------


_Lines = LineMap  # the key path -> line map of a recipe (see yamlfile.py)


def _loc_text(loc: tuple) -> str:
    return key_path(loc)


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
    """A recipe problem, with the file, the line and the key path (CLI exit 2)."""


def fail(path: Path, lines: _Lines | None, loc: tuple, message: str) -> RecipeError:
    line = lines.line(loc) if lines else None
    where = f"{path}:{line}" if line else str(path)
    return RecipeError(f"{where}: {_loc_text(loc)}: {one_line(message)}")


def _pydantic_message(err: dict[str, Any], root: type[BaseModel]) -> str:
    """One pydantic error as the recipe's words: unknown keys list the valid ones, a wrong type
    or value shows what was given."""
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(root, loc)
        return f"unknown key {loc[-1]!r}" + (f"; valid keys: {', '.join(valid)}" if valid else "")
    if err["type"] == "missing":
        return f"required: add {loc[-1]}:" if loc else "required"
    msg = err["msg"].removeprefix("Value error, ")
    if not err["type"].startswith("value_error") and "input" in err:
        shown = repr(err["input"])
        msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return msg


def pass_name(entry: dict[str, Any]) -> str:
    return next(iter(entry))


def pass_configs(entry: dict[str, Any]) -> dict[str, Any]:
    """The options of a single-key mapping ``{pass: {options...}}``; ``{pass: }`` has none."""
    name = pass_name(entry)
    return dict(entry[name] or {})
