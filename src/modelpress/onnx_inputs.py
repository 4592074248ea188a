"""Check a user's ``.onnx`` file against the recipe's ``input:`` before anything is built.

An ONNX file states its inputs: names, element types and dimensions (a number, or a symbol for
a dynamic axis). modelpress feeds it batches of the data's samples, validates in batches of up
to 256 and benchmarks several batch sizes, so the file must take any batch size and samples of
the shape and type ``input:`` declares. Anything else fails here, in one line, instead of deep
inside a runtime.

>>> check_onnx_input("model.onnx", (1, 28, 28), "float32", "models.mine")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

_ELEM = {1: "float32", 7: "int64", 6: "int32", 10: "float16", 11: "float64", 9: "bool"}


def _dims(value_info) -> list[int | str]:
    """Each dimension: its size, or its symbol ('?' when unnamed)."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def graph_inputs(path: str | Path) -> list[tuple[str, str, list[int | str]]]:
    """(name, element type, dims) of every real input (initializers listed as inputs excluded)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [
        (i.name, _ELEM.get(i.type.tensor_type.elem_type, "other"), _dims(i))
        for i in graph.input
        if i.name not in weights
    ]


def check_onnx_input(
    path: str | Path, shape: tuple[int, ...], dtype: str, where: str, count: int = 1
) -> None:
    """Raise ConfigError unless ``path`` takes ``count`` input(s), the first of one sample shape
    ``shape`` and type ``dtype`` with a dynamic batch dimension."""
    inputs = graph_inputs(path)
    if len(inputs) != count:
        names = [name for name, _, _ in inputs]
        raise ConfigError(
            f"{where}: {Path(path).name} has {len(inputs)} input(s) {names}; input: declares "
            f"{count}; declare each input, or export the model with {count}"
        )
    name, elem, dims = inputs[0]
    declared = f"input: {{shape: {list(shape)}, dtype: {dtype}}}"
    if len(dims) != len(shape) + 1:
        raise ConfigError(
            f"{where}: ONNX input {name!r} has dims {dims}, {declared} means "
            f"[batch, {', '.join(map(str, shape))}]; fix input: or the export"
        )
    if isinstance(dims[0], int):
        raise ConfigError(
            f"{where}: ONNX input {name!r} has a fixed batch dimension {dims[0]} ({dims}); "
            "modelpress validates and benchmarks several batch sizes: export it with a dynamic "
            "batch axis (torch.onnx.export dynamic_shapes / dynamic_axes={'input': {0: 'batch'}})"
        )
    fixed = [(i, d, s) for i, (d, s) in enumerate(zip(dims[1:], shape), 1) if isinstance(d, int)]
    wrong = [(i, d, s) for i, d, s in fixed if d != s]
    if wrong:
        i, d, s = wrong[0]
        raise ConfigError(
            f"{where}: ONNX input {name!r} is {dims} but {declared} (dimension {i}: {d} in the "
            f"file, {s} declared); fix input: or the data's resize:"
        )
    if elem != dtype:
        raise ConfigError(
            f"{where}: ONNX input {name!r} takes {elem} but {declared}; set input.dtype: {elem} "
            "if the data provides it, or re-export the model"
        )
