"""The pass registry (compress/registry.py): lazy, the one list of pass names, and each entry
builds its typed config the way the pipeline and the recipe checks use it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelpress.compress.registry import PASSES, PassInputs, get_pass
from modelpress.errors import ConfigError
from modelpress.run import recipe


def test_importing_the_registry_imports_no_pass():
    code = (
        "import sys, modelpress.compress, modelpress.run.recipe\n"
        "print(sorted(m for m in sys.modules if m.startswith('modelpress.compress.')), "
        "'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['modelpress.compress.registry'] False", out.stdout


def test_the_recipe_knows_the_registry_passes_in_order():
    assert recipe.PASSES == tuple(PASSES) == ("distill", "prune", "sparsity", "qat", "fp16")


@pytest.mark.parametrize("name", list(PASSES))
def test_every_entry_names_itself_and_runs(name):
    entry = get_pass(name)
    assert entry.name == name and callable(entry.run)
    assert entry.needs_teacher == (name == "distill")
    assert (entry.config_cls is None) == (name == "fp16")


def test_config_turns_lists_into_tuples_and_keeps_the_configs_checks():
    from modelpress.compress.prune import PruneConfig

    entry = get_pass("prune")
    cfg = entry.config({"macs_budget": 0.5, "ignore": ["fc"]})
    assert isinstance(cfg, PruneConfig) and cfg.macs_budget == 0.5 and cfg.ignore == ("fc",)
    with pytest.raises(ConfigError):
        entry.config({"macs_budget": 1.5})


def test_a_pass_without_options_refuses_some_and_unknown_names_fail():
    assert get_pass("fp16").config({}) is None
    with pytest.raises(ConfigError, match="fp16 takes no options"):
        get_pass("fp16").config({"x": 1})
    with pytest.raises(ConfigError, match="unknown pass 'nope'; known: distill, prune"):
        get_pass("nope")
    assert PassInputs().teacher is None and dict(PassInputs().train) == {}
