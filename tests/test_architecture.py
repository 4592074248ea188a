"""The package's layers, read from its source: every import of every module (those inside
functions too) goes down the layers or stays in its own, and no group of modules imports itself
in a circle. Imports under ``if TYPE_CHECKING:`` are left out: they never run (annotations only).

The layers, top to bottom (docs/architecture.md says what each does):
cli -> run -> measure -> compress -> targets -> core (train, checkpoint, export, validation, ...)
-> models / data -> base (errors, files, the artifact record).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "modelpress"

LAYERS = {  # module (or package prefix) -> rank; a module takes the longest prefix listed
    "modelpress.cli": 8,
    "modelpress.__main__": 8,
    "modelpress.run": 7,
    "modelpress.measure": 6,
    "modelpress.devices": 6,  # where measurements run: beside measure, which drives them
    "modelpress.devices.runner": 1,  # the runner that travels imports nothing of modelpress
    "modelpress.compress": 5,
    "modelpress.targets": 4,
    "modelpress.models": 2,
    "modelpress.data": 2,
    "modelpress": 3,  # the core modules at the package's top level
    **dict.fromkeys(
        (
            "modelpress.errors",
            "modelpress.fsutil",
            "modelpress.exits",
            "modelpress.userinput",
            "modelpress.yamlfile",
            "modelpress.artifact",
            "modelpress.feeds",
            "modelpress.quiet",
        ),
        1,
    ),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def rank(module: str) -> int:
    if module == "modelpress":
        return 0
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None)
        if isinstance(node, ast.If) and getattr(test, "id", getattr(test, "attr", "")) == (
            "TYPE_CHECKING"
        ):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def imports_of(module: str) -> set[str]:
    """Every modelpress module that ``module`` imports, wherever the import statement is."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("modelpress"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if not target.startswith("modelpress"):
                continue
            for alias in node.names:  # `from . import x`: x may be a module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_sits_in_a_layer():
    assert "modelpress.run.pipeline" in GRAPH and "modelpress.measure.bench" in GRAPH
    assert {rank(m) for m in GRAPH} <= {0, 1, 2, 3, 4, 5, 6, 7, 8}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down_the_layers(module):
    upward = sorted(d for d in GRAPH[module] if rank(d) > rank(module))
    assert not upward, f"{module} (layer {rank(module)}) imports a layer above: {upward}"


def test_no_import_circles():
    """Tarjan's strongly connected components: any component of two or more is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_walker_sees_imports_inside_functions_and_skips_type_checking():
    """Guards for the test itself: run/steps.py imports the gate's formatting inside finish(), and
    run/byo.py names Pipeline for its annotations only."""
    steps = (PACKAGE / "run" / "steps.py").read_text()
    assert "    from ..measure.gate_format import" in steps  # indented: inside a function
    assert "modelpress.measure.gate_format" in GRAPH["modelpress.run.steps"]
    assert "modelpress.run.pipeline" not in GRAPH["modelpress.run.byo"]
    assert rank("modelpress.run.steps") > rank("modelpress.measure.gate") > rank("modelpress.train")


def test_old_import_paths_are_aliases_of_the_moved_modules():
    import importlib

    from modelpress.pipeline import RunOutcome, run
    from modelpress.results import load_results

    from modelpress.measure import results as moved
    from modelpress.run import execute, state

    assert importlib.import_module("modelpress.results") is moved
    assert load_results is moved.load_results and moved.__spec__.name == moved.__name__
    assert run is execute.run and RunOutcome is state.RunOutcome
