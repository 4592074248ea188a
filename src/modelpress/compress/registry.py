"""The passes by name, as :mod:`modelpress.targets` registers its targets: :data:`PASSES` maps a
recipe's pass name to a factory of its :class:`PassEntry`. Importing this module imports no pass:
each factory imports its pass's module when called.

An entry knows the pass's typed config class (``None``: the pass takes no options) and how to
run it from what a pipeline holds: the parent artifact, the config, the
:class:`~modelpress.compress.base.PassContext` and :class:`PassInputs` (the model's teacher and
the pass's ``train:`` overrides).

Adding a pass: its file in ``compress/``, a factory below and its line in :data:`PASSES`.

>>> entry = get_pass("prune")                                          # doctest: +SKIP
>>> result = entry.run(art, entry.config({"macs_budget": 0.5}), ctx, PassInputs())
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..artifact import Artifact
    from .base import PassContext, PassResult


@dataclass(frozen=True)
class PassInputs:
    """What a pipeline holds for a pass beyond its artifact, config and context."""

    teacher: Artifact | None = None  # the model's teacher checkpoint, if it has one
    train: Mapping[str, Any] = field(default_factory=dict)  # the pass's ``train:`` overrides


PassRunner = Callable[["Artifact", Any, "PassContext", PassInputs], "PassResult"]


@dataclass(frozen=True)
class PassEntry:
    name: str
    config_cls: type | None  # the typed config of the pass's options; None: it takes none
    run: PassRunner  # (parent artifact, config, context, inputs) -> PassResult
    needs_teacher: bool = False  # a recipe must give the model a teacher

    def config(self, options: Mapping[str, Any]) -> Any:
        """The typed config of a recipe's ``options`` (lists become tuples); ``None`` for a pass
        without options. The config's own checks raise ``ConfigError``."""
        if self.config_cls is None:
            if options:
                raise ConfigError(f"pass {self.name} takes no options; remove {sorted(options)}")
            return None
        return self.config_cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
        )


# -- the passes: each factory imports its module, each runner adapts the pipeline's inputs ---------


def _distill() -> PassEntry:
    from .distill import DistillConfig

    return PassEntry("distill", DistillConfig, _run_distill, needs_teacher=True)


def _run_distill(art: Artifact, cfg: Any, ctx: PassContext, given: PassInputs) -> PassResult:
    """Distillation trains with the student's recommended schedule under the pass's overrides."""
    from ..baselines import train_config_for
    from .distill import distill

    train_cfg = train_config_for(art.meta["model"]["name"], **{"seed": ctx.seed, **given.train})
    return distill(given.teacher, art, cfg, ctx, train_cfg)  # type: ignore[arg-type]


def _prune() -> PassEntry:
    from .prune import PruneConfig

    return PassEntry("prune", PruneConfig, _run_prune)


def _run_prune(art: Artifact, cfg: Any, ctx: PassContext, given: PassInputs) -> PassResult:
    """Pruning recovers with the teacher's logits when the model has a teacher."""
    from .distill_features import teacher_for
    from .prune import prune

    teacher = teacher_for(given.teacher, ctx.data) if given.teacher is not None else None
    return prune(art, cfg, ctx, teacher=teacher)


def _sparsity() -> PassEntry:
    from .sparsity import SparsityConfig

    return PassEntry("sparsity", SparsityConfig, _run_sparsity)


def _run_sparsity(art: Artifact, cfg: Any, ctx: PassContext, given: PassInputs) -> PassResult:
    from .sparsity import sparsify

    return sparsify(art, cfg, ctx)


def _qat() -> PassEntry:
    from .quantize import QATConfig

    return PassEntry("qat", QATConfig, _run_qat)


def _run_qat(art: Artifact, cfg: Any, ctx: PassContext, given: PassInputs) -> PassResult:
    """QAT's artifact is a QDQ ONNX graph (so it ends a chain)."""
    from .quantize import qat

    return qat(art, cfg, ctx)


def _fp16() -> PassEntry:
    return PassEntry("fp16", None, _run_fp16)


def _run_fp16(art: Artifact, cfg: Any, ctx: PassContext, given: PassInputs) -> PassResult:
    from .quantize import to_fp16

    return to_fp16(art, ctx)


PASSES: dict[str, Callable[[], PassEntry]] = {  # in the order error messages list them
    "distill": _distill,
    "prune": _prune,
    "sparsity": _sparsity,
    "qat": _qat,
    "fp16": _fp16,
}


def get_pass(name: str) -> PassEntry:
    """The entry of pass ``name`` (its module imported now)."""
    if name not in PASSES:
        raise ConfigError(f"unknown pass {name!r}; known: {', '.join(PASSES)}")
    return PASSES[name]()
