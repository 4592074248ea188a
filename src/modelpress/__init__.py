"""modelpress: shrink trained PyTorch models and ship them to real runtimes.

Importing the package is cheap and pulls in no runtime (onnxruntime, LiteRT, TensorRT); each
backend is imported inside the functions that use it. The layers are described in
docs/architecture.md.

Modules that moved into ``modelpress.run`` and ``modelpress.measure`` keep their old import paths
as aliases (``modelpress.pipeline`` is ``modelpress.run``, ``modelpress.bench`` is
``modelpress.measure.bench``, ...): the same module objects, resolved on first import.
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_MOVED = {
    "pipeline": "run",  # run(), Pipeline, ModelRun, RunOutcome
    "recipe": "run.recipe",
    "recipe_checks": "run.recipe_checks",
    "run_steps": "run.steps",
    "run_targets": "run.plan",
    "run_parallel": "run.parallel",
    "run_table": "run.table",
    "stages": "run.stages",
    "search": "run.search",
    "byo": "run.byo",
    "bench": "measure.bench",
    "bench_worker": "measure.worker",
    "results": "measure.results",
    "stats": "measure.stats",
    "report": "measure.report",
    "report_plots": "measure.report_plots",
    "report_table": "measure.report_table",
    "gate": "measure.gate",
    "machine": "measure.machine",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``modelpress.<old>`` -> the module at its new place (one object under both names)."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, old = fullname.rpartition(".")
        if head != __name__ or old not in _MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{_MOVED[spec.name.rpartition('.')[2]]}")
        spec.loader_state = module.__spec__  # importing sets the alias's spec on the module
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # give it back its own


sys.meta_path.append(_Alias())
