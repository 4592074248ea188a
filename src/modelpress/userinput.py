"""Checks on values a user writes in a file: names that become paths, numbers, field types.

Each check returns a problem (a short phrase) or None, so the caller can raise its own typed,
located error (a recipe names the file, line and key path).

>>> name_problem("cnn"), name_problem("../x")
(None, "contains a path separator '/'")
>>> number_problem(float("inf"))
'is not a finite number'
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from collections.abc import Iterator
from typing import Any

MAX_NAME = 64
MAX_NUMBER = 2**31 - 1  # no count, size, seed or setting in a recipe needs more
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
NAME_RULE = f"use 1-{MAX_NAME} letters, digits, '_', '-' or '.' (not first)"


def name_problem(value: object, chain_separator: bool = False) -> str | None:
    """Why ``value`` cannot be a file or folder name (None: it can); ``chain_separator``: it is
    a model label, where '+' joins the passes of a results label (``cnn+distill+prune``)."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a name"
    if not value:
        return "is empty"
    if value in (".", ".."):
        return "is a relative folder ('.' or '..')"
    if len(value) > MAX_NAME:
        return f"is {len(value)} characters long; at most {MAX_NAME}"
    for bad, why in (("/", "a path separator '/'"), ("\\", "a path separator '\\'")):
        if bad in value:
            return f"contains {why}"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character (NUL, tab, newline, ...)"
    if value.startswith("-"):
        return "starts with '-' (it would read as a command-line option)"
    if chain_separator and "+" in value:
        return "contains '+', which joins a model and its passes in results labels"
    if not _NAME.fullmatch(value):
        bad = next((c for c in value[1:] if not _NAME.fullmatch("a" + c)), value[0])
        return f"contains {bad!r}"
    return None


def key_path(loc: tuple | list) -> str:
    """``models.cnn.train`` from a key path; odd keys (control characters, spaces at the ends,
    very long) are shown quoted and cut, so the path stays on one line."""
    parts = []
    for part in loc:
        text = str(part)
        if not isinstance(part, int) and not (text and text.isprintable() and text == text.strip()):
            text = repr(part)
        parts.append(text if len(text) <= 40 else text[:37] + "...")
    return ".".join(parts) or "<top level>"


def path_problem(value: object) -> str | None:
    """Why ``value`` cannot be a path the user chose (None: it can be)."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not a path"
    if not value.strip():
        return "is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "contains a control character (NUL, tab, newline, ...)"
    return None


def _show(value: int | float) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"a number of {len(str(abs(int(value))))} digits"


def number_problem(value: object) -> str | None:
    """Why ``value`` (a number read from a file) is unusable: not finite or out of range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if abs(value) > MAX_NUMBER:
        return f"is {_show(value)}; numbers here are at most {MAX_NUMBER:,} in size"
    return None


def walk(data: Any, skip: tuple[str, ...] = ()) -> Iterator[tuple[tuple, Any]]:
    """Every (key path, value) under ``data`` (mappings and lists), each container once (YAML
    aliases share them); top-level keys in ``skip`` are left out."""
    stack: list[tuple[tuple, Any]] = [((), data)]
    seen: set[int] = set()
    while stack:
        loc, value = stack.pop()
        yield loc, value
        if isinstance(value, dict | list):
            if id(value) in seen:
                continue
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend(((*loc, k), v) for k, v in items if not (not loc and k in skip))


def first_bad_number(data: Any, skip: tuple[str, ...] = ()) -> tuple[tuple, str] | None:
    """(key path, problem) of a number under ``data`` that :func:`number_problem` refuses (the
    first in key-path order, so the same file always names the same key)."""
    bad = [(loc, p) for loc, v in walk(data, skip) if (p := number_problem(v)) is not None]
    return min(bad, key=lambda item: [str(part) for part in item[0]]) if bad else None


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> type hint of a dataclass (empty where the hints cannot be resolved)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a hint names something only imported for type checkers: skip the check
        return {}
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name in hints}


@functools.cache
def _adapter(hint: Any):
    from pydantic import TypeAdapter

    return TypeAdapter(hint)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def type_problem(hint: Any, value: Any) -> str | None:
    """Why ``value`` (from YAML/JSON, lists for tuples) does not fit ``hint`` exactly (no
    coercion: "3" is not an int, 2.5 is not an int, true is not a number)."""
    from pydantic import ValidationError

    try:
        _adapter(hint).validate_python(_tuples(value), strict=True)
    except ValidationError:
        name = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        shown = repr(value)
        return f"expected {name}, got {shown if len(shown) <= 60 else shown[:57] + '...'}"
    except Exception:  # a hint pydantic cannot check: leave it to the config's own validation
        return None
    return None
