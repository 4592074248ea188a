"""Train registry models on a data set and describe them: the toolkit's first citizens.

>>> from modelpress.baselines import fit
>>> from modelpress.data import load_dataset
>>> result = fit("gru", load_dataset("digits", view="sequence"), epochs=3)   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .checkpoint import save_trained
from .data import DataBundle, DataConfig, load_dataset
from .errors import ConfigError
from .metrics import count_macs, count_params
from .models import MODELS, create_model, get_entry
from .train import TrainConfig, TrainResult, dist_info, seed_everything, train

DEFAULT_VIEWS = {"image": "image", "sequence": "sequence", "tokens": "tokens"}


def train_config_for(name: str, **overrides: Any) -> TrainConfig:
    """The model's recommended TrainConfig with ``overrides`` (None values ignored) on top; a
    user's (factory) model has no recommendation: TrainConfig's defaults."""
    valid = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown training option(s) {unknown}; valid: {sorted(valid)}")
    defaults = MODELS[name].train_defaults if name in MODELS else {}  # a user's model: none
    values = {
        **defaults,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    return TrainConfig(**values)


def view_for(name: str, data_cfg: DataConfig) -> DataConfig:
    """``data_cfg`` with the view the model needs, when the user did not pick one."""
    if data_cfg.view is not None:
        return data_cfg
    from .data import DATASETS

    offered = DATASETS[data_cfg.name].views
    view = next((k for k in get_entry(name).input_kinds if k in offered), None)
    if view is None:
        raise ConfigError(
            f"model {name!r} takes {get_entry(name).input_kinds} input; dataset {data_cfg.name!r} offers {offered}"
        )
    return DataConfig(**{**data_cfg.to_dict(), "view": view})


def fit(
    name: str,
    data: DataBundle,
    *,
    width: float = 1.0,
    model_options: dict[str, Any] | None = None,
    progress: bool = False,
    **train_overrides: Any,
) -> TrainResult:
    """Seed, build registry model ``name`` for ``data`` and train it with its recommended settings."""
    cfg = train_config_for(name, **train_overrides)
    seed_everything(cfg.seed)
    model = model_for_data(name, data, width=width, **(model_options or {}))
    return train(model, data, cfg, progress=progress)


def model_for_data(name: str, data: DataBundle, *, width: float = 1.0, **options: Any):
    """A fresh registry model ``name`` shaped for ``data`` (input spec, classes, vocabulary)."""
    vocab = data.preprocessing.get("vocab")
    return create_model(
        name,
        input_spec=data.input_spec,
        num_classes=data.num_classes,
        width=width,
        vocab_size=len(vocab["words"]) if vocab else None,
        **options,
    )


@dataclass
class BaselineRow:
    model: str
    family: str
    test_accuracy: float
    params: int
    macs: int
    bytes: int
    train_seconds: float
    path: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def describe(name: str, result: TrainResult, data: DataBundle, path: Path) -> BaselineRow:
    example = torch.as_tensor(data.test.x[:1])
    return BaselineRow(
        model=name,
        family=MODELS[name].family,
        test_accuracy=result.test_accuracy,
        params=count_params(result.model),
        macs=count_macs(result.model, example),
        bytes=path.stat().st_size,
        train_seconds=result.seconds,
        path=str(path),
    )


def train_and_save(
    name: str,
    data_cfg: DataConfig,
    out: Path,
    *,
    progress: bool = False,
    width: float = 1.0,
    model_options: dict[str, Any] | None = None,
    **train_overrides: Any,
) -> tuple[TrainResult, BaselineRow | None, DataBundle]:
    """Train ``name`` and, on rank 0, save ``out`` (a .safetensors checkpoint)."""
    data = load_dataset(view_for(name, data_cfg))
    result = fit(
        name, data, width=width, model_options=model_options, progress=progress, **train_overrides
    )
    if dist_info()[0] != 0:
        return result, None, data
    metrics = {"test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy}
    train_record = {**train_config_for(name, **train_overrides).to_dict(), **result.summary()}
    save_trained(
        out,
        result.model,
        data,
        metrics=metrics,
        train=train_record,
        lineage=[{"stage": "train", "model": name, "width": width}],
    )
    return result, describe(name, result, data, out), data


def train_baselines(
    data_cfg: DataConfig,
    names: list[str],
    out_dir: Path,
    *,
    progress: bool = False,
    **train_overrides: Any,
) -> list[BaselineRow]:
    """Train every model in ``names`` on ``data_cfg`` and save each under ``out_dir``."""
    rows = []
    for name in names:
        get_entry(name)
        _, row, _ = train_and_save(
            name, data_cfg, out_dir / f"{name}.safetensors", progress=progress, **train_overrides
        )
        if row is not None:
            rows.append(row)
    return rows
