"""A run of a recipe, end to end: the recipe and its checks, the pipeline of one model (train,
teacher, passes), the steps that build and measure its artifacts, the stage cache, the search,
and bring-your-own models. The top of the package: only the CLI imports it.

>>> from modelpress.run import run                              # doctest: +SKIP
>>> outcome = run("recipes/digits.yaml")
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "run": "execute",
    "Pipeline": "pipeline",
    "ModelRun": "state",
    "ModelFailure": "state",
    "RunOutcome": "state",
}


def __getattr__(name: str) -> Any:
    """``run``, ``Pipeline`` and the run's state types, imported on first use (importing a
    module of this package, the stage cache in a worker say, does not load the whole run)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = list(_LAZY)
