"""YAML files the user writes (recipes, gate policies), read with one-line, located errors.

:func:`load_yaml` refuses what ``yaml.safe_load`` would crash on or silently accept: bytes that
are not UTF-8 (named by byte offset and line), invalid YAML (line), a key given twice in one
mapping (both lines), and nesting too deep to parse. It returns the data and a :class:`LineMap`,
which finds the line of a key path such as ``("models", "cnn", "train")`` for later errors.

>>> data, lines = load_yaml(Path("recipes/digits.yaml"))        # doctest: +SKIP
>>> lines.line(("models", "cnn"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError, ModelPressError, one_line


class LineMap:
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
                and 0 <= key < len(node.value)
            ):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def decode_utf8(
    raw: bytes,
    path: Path,
    error: type[ModelPressError] = ConfigError,
    hint: str = "save the file as UTF-8 text",
) -> str:
    """``raw`` as text (a UTF-8 BOM is allowed), or ``error`` naming the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(
            f"{path}:{line}: byte offset {exc.start} (0x{raw[exc.start]:02x}) is not UTF-8: {hint}"
        ) from exc


def _yaml_problem(exc: Exception, text: str) -> tuple[int | None, str]:
    """(line, one-line description) of a PyYAML error."""
    import yaml

    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (NUL, ...)
        line = text[: exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return line, f"character offset {exc.position}: {exc.reason} (#x{code:04x})"
    mark = getattr(exc, "problem_mark", None)
    words = [w for w in (getattr(exc, "context", None), getattr(exc, "problem", None)) if w]
    return (mark.line + 1 if mark else None), one_line(", ".join(words) or exc)


def _duplicate_key(root: Any) -> tuple[tuple, int, int] | None:
    """(key path, first line, second line) of the first key given twice in one mapping."""
    import yaml

    stack, seen = [(root, ())], set()
    while stack:
        node, path = stack.pop()
        if node is None or id(node) in seen:  # aliases point at nodes already walked
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    line = k.start_mark.line + 1
                    if (k.tag, k.value) in first:
                        return (*path, k.value), first[(k.tag, k.value)], line
                    first[(k.tag, k.value)] = line
                stack.append((v, (*path, getattr(k, "value", "?"))))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, (*path, i)) for i, v in enumerate(node.value))
    return None


def load_yaml(
    path: str | Path, error: type[ConfigError] = ConfigError, what: str = ""
) -> tuple[Any, LineMap]:
    """Parse one YAML document; every problem is one ``error`` line naming ``path`` (prefixed by
    ``what``, e.g. "policy ") and the line."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what}{path}: {one_line(exc)}") from exc
    text = decode_utf8(raw, path, error)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters here, before parsing
        root = loader.get_single_node()
        dup = _duplicate_key(root)
        if dup is not None:
            loc, first, second = dup
            raise error(
                f"{what}{path}:{second}: {'.'.join(map(str, loc))}: duplicate key (first given "
                f"on line {first}); keep one"
            )
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc, text)
        where = f"{path}:{line}" if line else str(path)
        raise error(f"{what}{where}: not valid YAML: {problem}") from exc
    except RecursionError as exc:
        raise error(f"{what}{path}: nested too deeply to parse; flatten it") from exc
    except (ValueError, OverflowError) as exc:  # e.g. a date like 2024-02-30 that does not exist
        raise error(f"{what}{path}: a value cannot be read: {one_line(exc)}") from exc
    finally:
        if loader is not None:
            loader.dispose()
    return data, LineMap(root)
