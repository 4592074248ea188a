"""Loading a recipe (:func:`load_recipe`): its schema (recipe.py), then semantic checks: every
typed config the run will need is built once, now, so a bad value fails with its file, line and
key path before any training starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError, one_line
from ..userinput import NAME_RULE, field_types, first_bad_number, name_problem, type_problem
from ..yamlfile import load_yaml
from .recipe import (
    KNOWN_TARGETS,
    PASSES,
    ModelSection,
    Recipe,
    RecipeError,
    TargetSection,
    _Lines,
    _pydantic_message,
    fail,
    pass_configs,
    pass_name,
)


def _kind(value: Any) -> str:
    shown = one_line(repr(value))
    return "nothing" if value is None else f"{type(value).__name__} {shown[:40]}"


def check_fields(cls: type, values: dict[str, Any], path: Path, lines: _Lines, loc: tuple) -> None:
    """Refuse keys that are not fields of dataclass ``cls`` and values of the wrong type."""
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise fail(
            path,
            lines,
            (*loc, unknown[0]),
            f"unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}",
        )
    _check_types(field_types(cls), values, path, lines, loc)


def _check_types(
    types: dict[str, Any], values: dict[str, Any], path: Path, lines: _Lines, loc: tuple
) -> None:
    for key, value in values.items():
        problem = type_problem(types[key], value) if key in types else None
        if problem:
            raise fail(path, lines, (*loc, key), problem)


def _build(cls: type, values: Any, path: Path, lines: _Lines, loc: tuple) -> Any:
    if not isinstance(values, dict):
        raise fail(
            path, lines, loc, f"expected a mapping of {cls.__name__} fields, got {_kind(values)}"
        )
    check_fields(cls, values, path, lines, loc)
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except ConfigError as exc:
        raise fail(path, lines, loc, str(exc)) from exc
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise fail(path, lines, loc, f"invalid value: {exc}") from exc


def check_pass(entry: Any, path: Path, lines: _Lines, loc: tuple) -> None:
    from ..compress.registry import get_pass
    from ..train import TrainConfig

    if not isinstance(entry, dict) or len(entry) != 1:
        raise fail(path, lines, loc, f"a pass is a one-key mapping, one of {', '.join(PASSES)}")
    name = pass_name(entry)
    if name not in PASSES:
        raise fail(
            path, lines, (*loc, name), f"unknown pass {name!r}; valid passes: {', '.join(PASSES)}"
        )
    if entry[name] is not None and not isinstance(entry[name], dict):
        raise fail(
            path,
            lines,
            (*loc, name),
            f"the options of pass {name} are a mapping of its settings (or nothing), "
            f"got {_kind(entry[name])}",
        )
    opts = pass_configs(entry)
    has_train, train = "train" in opts, opts.pop("train", None)
    config_cls = get_pass(name).config_cls
    if config_cls is not None:
        _build(config_cls, opts, path, lines, (*loc, name))
    elif opts:
        raise fail(path, lines, (*loc, name), f"pass {name} takes no options")
    if has_train:
        _build(TrainConfig, train, path, lines, (*loc, name, "train"))


def check_recipe(recipe: Recipe, path: Path, lines: _Lines) -> None:
    """Build every config the run will need, so a bad value fails now with its line."""
    from ..measure.bench import BenchSettings

    _check_data(recipe, path, lines)
    for label, m in recipe.models.items():
        _check_model(recipe, label, m, path, lines)
    _check_targets(recipe.targets, path, lines, ("targets",))
    for label, m in recipe.models.items():
        if m.targets is not None:
            _check_targets(m.targets, path, lines, ("models", label, "targets"))
    _build(BenchSettings, dict(recipe.benchmark), path, lines, ("benchmark",))
    _check_search(recipe, path, lines)
    _check_gates(recipe, path, lines)


def _check_data(recipe: Recipe, path: Path, lines: _Lines) -> None:
    from ..data import DataConfig

    data = {k: v for k, v in recipe.data.items() if k != "calibration"}
    cfg = _build(DataConfig, data, path, lines, ("data",))
    if cfg.seed < 0:
        raise fail(path, lines, ("data", "seed"), f"a seed is >= 0, got {cfg.seed}")
    if cfg.root is not None and not Path(cfg.root).exists():
        raise fail(
            path,
            lines,
            ("data", "root"),
            f"{cfg.root} does not exist (relative paths start in the current folder); "
            f"point root at the {cfg.name} files",
        )
    calib = recipe.data.get("calibration", 256)
    if isinstance(calib, bool) or not isinstance(calib, int) or calib < 1:
        raise fail(
            path,
            lines,
            ("data", "calibration"),
            f"calibration must be a positive sample count, got {calib!r}",
        )


def _exists(path: Path, lines: _Lines, loc: tuple, value: str, base: Path | None) -> None:
    """A file the recipe names must exist (``base``: the folder relative paths start in)."""
    file = Path(value)
    if base is not None and not file.is_absolute():
        file = base / file
    if not file.is_file():
        raise fail(path, lines, loc, f"{file} does not exist or is not a file")


def _check_registry(
    name: str, options: dict, train: dict, path: Path, lines: _Lines, loc: tuple
) -> None:
    """A registry model (student or teacher): known name, valid options and train overrides."""
    from ..models import MODELS
    from ..train import TrainConfig

    if name not in MODELS:
        raise fail(
            path, lines, (*loc, "model"), f"unknown model {name!r}; known: {', '.join(MODELS)}"
        )
    check_fields(MODELS[name].config_cls, options, path, lines, (*loc, "options"))
    _build(TrainConfig, train, path, lines, (*loc, "train"))


def _check_model(recipe: Recipe, label: str, m: ModelSection, path: Path, lines: _Lines) -> None:
    from ..compress.registry import get_pass
    from ..train import TrainConfig

    loc = ("models", label)
    problem = name_problem(label, chain_separator=True)
    if problem:
        raise fail(
            path,
            lines,
            loc,
            f"model label {label!r} {problem}: labels become file and folder names and results "
            f"labels; {NAME_RULE}",
        )
    if m.model:
        _check_registry(m.model, m.options, m.train, path, lines, loc)
    else:
        _build(TrainConfig, m.train, path, lines, (*loc, "train"))
    for key in ("weights", "onnx"):
        if getattr(m, key):
            _exists(path, lines, (*loc, key), getattr(m, key), path.parent)
    t = m.teacher
    if t is not None and t.model:
        _check_registry(t.model, t.options, t.train, path, lines, (*loc, "teacher"))
    elif t is not None:
        _exists(path, lines, (*loc, "teacher", "checkpoint"), t.checkpoint, None)
    base = (*loc, "passes") if m.passes is not None else ("passes",)
    for i, entry in enumerate(recipe.passes_for(label)):
        check_pass(entry, path, lines, (*base, i))
        name = pass_name(entry)
        if get_pass(name).needs_teacher and m.teacher is None and m.source != "onnx":
            raise fail(
                path,
                lines,
                (*base, i, name),
                f"{name} needs a teacher: add models.{label}.teacher",
            )


def _check_targets(
    targets: dict[str, TargetSection], path: Path, lines: _Lines, loc: tuple
) -> None:
    if not targets:
        raise fail(path, lines, loc, f"no targets: name at least one of {list(KNOWN_TARGETS)}")
    unknown = sorted(set(targets) - set(KNOWN_TARGETS))
    if unknown:
        raise fail(
            path,
            lines,
            (*loc, unknown[0]),
            f"unknown target {unknown[0]!r}; valid: {list(KNOWN_TARGETS)}",
        )
    for name, t in targets.items():
        _check_precisions(name, t.options, t.precisions, path, lines, (*loc, name))


def _check_precisions(
    name: str, options: dict, precisions: list[str], path: Path, lines: _Lines, loc: tuple
) -> None:
    """Target ``name`` accepts ``options`` and builds every one of ``precisions``."""
    from ..targets import get_target

    cfg = getattr(get_target(name), "cfg", None)  # the defaults: which config, which types
    if dataclasses.is_dataclass(cfg):
        check_fields(type(cfg), options, path, lines, loc)
    try:
        target = get_target(name, **options)
    except ConfigError as exc:
        raise fail(path, lines, loc, str(exc)) from exc
    except TypeError as exc:
        raise fail(path, lines, loc, f"unknown option: {exc}") from exc
    except (ValueError, ArithmeticError) as exc:
        raise fail(path, lines, loc, f"invalid option: {exc}") from exc
    bad = [p for p in precisions if p not in target.precisions]
    if bad:
        raise fail(
            path,
            lines,
            (*loc, "precisions"),
            f"{name} does not build {bad}; valid precisions: {', '.join(target.precisions)}",
        )


def _check_search(recipe: Recipe, path: Path, lines: _Lines) -> None:
    s = recipe.search
    if s is None:
        return
    unknown = [label for label in s.models or [] if label not in recipe.models]
    if unknown:
        raise fail(
            path,
            lines,
            ("search", "models"),
            f"no recipe model is labelled {unknown[0]!r}; models: {', '.join(recipe.models)}",
        )
    options = recipe.targets[s.target].options if s.target in recipe.targets else {}
    _check_precisions(s.target, options, s.precisions, path, lines, ("search",))


def _check_gates(recipe: Recipe, path: Path, lines: _Lines) -> None:
    from ..measure.gate import Policy, load_policy

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


def check_devices(recipe: Recipe, path: Path, lines: _Lines, override: str | None = None) -> None:
    """Every train device the run will use exists on this machine (``override``: the one
    device of ``run --device``, which replaces the recipe's); a ConfigError with the line if not.

    Not part of :func:`check_recipe`: a recipe written for a GPU is valid on a laptop, where
    ``--device cpu`` runs it."""
    from ..compute import resolve_device

    if override is not None:
        resolve_device(override)
        return
    for loc, train in _train_sections(recipe):
        try:
            resolve_device(train.get("device", "auto"))
        except ConfigError as exc:
            raise fail(path, lines, (*loc, "device"), str(exc)) from exc


def _train_sections(recipe: Recipe) -> list[tuple[tuple, dict[str, Any]]]:
    """(key path, mapping) of every ``train:`` section: models, teachers, passes."""
    found: list[tuple[tuple, dict[str, Any]]] = []

    def passes(base: tuple, entries: list[dict[str, Any]]) -> None:
        for i, entry in enumerate(entries):
            train = pass_configs(entry).get("train")
            if isinstance(train, dict):
                found.append(((*base, i, pass_name(entry), "train"), train))

    passes(("passes",), recipe.passes)
    for label, m in recipe.models.items():
        found.append((("models", label, "train"), m.train))
        if m.teacher is not None:
            found.append((("models", label, "teacher", "train"), m.teacher.train))
        passes(("models", label, "passes"), m.passes or [])
    return found


def load_recipe(path: str | Path) -> tuple[Recipe, _Lines]:
    """Parse and validate a recipe (structure: the schema of recipe.py; then the
    semantics: :func:`check_recipe`);
    every problem is one :class:`RecipeError` line with the file, line and key path."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; see recipes/digits.yaml for an example")
    data, lines = load_yaml(path, RecipeError)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise fail(path, lines, (), f"the file is {kind}; a recipe is a mapping with models:")
    bad = first_bad_number(data, skip=("gates",))  # gates: a policy, validated as one below
    if bad is not None:
        raise fail(path, lines, bad[0], bad[1])
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise fail(path, lines, tuple(err["loc"]), _pydantic_message(err, Recipe)) from exc
    check_recipe(recipe, path, lines)
    return recipe, lines
