"""Which CSV/TSV columns hold the label and the text, and a check that the labels are labels.

Rules, in order:
1. ``text_column`` / ``label_column`` given: the first row is a header that must name them
   (exact, else case-insensitive); the one not given is ``text`` / ``label`` when the header has
   it, or the other column of a two-column header.
2. A header with ``label`` and ``text`` columns: those.
3. Otherwise no header: the first column is the label, the second the text; a first row that
   looks like a header (its first cell is nobody else's label while the labels repeat) fails.

Whatever the columns, a label column where most values occur once (sentences, ids) fails: every
sentence would become its own class.

>>> pick_columns("r.csv", [["Text", "Label"], ["fine", "pos"]], None, None)
(1, 0, True)
>>> pick_columns("r.csv", [["reviews", "sentiment"], ["a dull film", "neg"]], "reviews", None)
(1, 0, True)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import DataError, one_line

SETTING = "set text_column: and label_column: in data: to the columns that hold them"


def _shown(cells: list[str]) -> str:
    return ", ".join(repr(one_line(c)[:40]) for c in cells)


def _find(path: Path | str, head: list[str], name: str, what: str) -> int:
    if name in head:
        return head.index(name)
    low = [c.lower() for c in head]
    if name.lower() in low:
        return low.index(name.lower())
    raise DataError(
        f"{path}: {what} {name!r} is not a column of the header ({_shown(head)}); "
        f"set {what}: to one of them"
    )


def _other(path: Path | str, head: list[str], known: int, default: str, what: str) -> int:
    """The column ``what`` was not given for: ``default`` by name, or the other of two."""
    low = [c.lower() for c in head]
    if default in low and low.index(default) != known:
        return low.index(default)
    if len(head) == 2:
        return 1 - known
    raise DataError(
        f"{path}: the header ({_shown(head)}) has no {default!r} column; set {what}: too"
    )


def pick_columns(
    path: Path | str, rows: list[list[str]], text_column: str | None, label_column: str | None
) -> tuple[int, int, bool]:
    """(label column, text column, whether the first row is a header) for a table's ``rows``."""
    head = [c.strip() for c in rows[0]]
    if text_column or label_column:
        ti = _find(path, head, text_column, "text_column") if text_column else None
        li = _find(path, head, label_column, "label_column") if label_column else None
        if ti is None:
            ti = _other(path, head, li, "text", "text_column")  # type: ignore[arg-type]
        if li is None:
            li = _other(path, head, ti, "label", "label_column")
        if li == ti:
            raise DataError(
                f"{path}: text_column and label_column both name column {head[li]!r}; "
                f"the header has {_shown(head)}: {SETTING}"
            )
        return li, ti, True
    low = [c.lower() for c in head]
    if "label" in low and "text" in low:
        return low.index("label"), low.index("text"), True
    if _looks_like_header(rows):
        raise DataError(
            f"{path}: the first row ({_shown(head)}) looks like a header but names no 'label' "
            f"and 'text' columns; {SETTING} (or, if it is data, give that class more rows)"
        )
    return 0, 1, False


def _mostly_unique(values: list[str]) -> bool:
    counts = Counter(values)
    singles = sum(1 for c in counts.values() if c == 1)
    return len(values) >= 4 and singles > len(values) / 2


def _looks_like_header(rows: list[list[str]]) -> bool:
    """The first cell is no other row's first cell, while those repeat (they are labels)."""
    rest = [r[0].strip() for r in rows[1:] if r]
    return len(rest) >= 3 and rows[0][0].strip() not in rest and not _mostly_unique(rest)


def check_labels_are_labels(
    path: Path | str, labels: list[str], header: list[str] | None, first_row: list[str], li: int
) -> None:
    """DataError when most labels occur once: the label column holds text (or ids)."""
    if not _mostly_unique(labels):
        return
    distinct = len(set(labels))
    if header is None:
        raise DataError(
            f"{path}: with no 'label','text' header column {li + 1} is the label, but it has "
            f"{distinct} distinct values in {len(labels)} rows, so every row would be its own "
            f"class; if the first row ({_shown(first_row)}) is a header, {SETTING}; if not, "
            "put the label column first"
        )
    raise DataError(
        f"{path}: label column {header[li].strip()!r} has {distinct} distinct values in "
        f"{len(labels)} rows (e.g. {one_line(labels[0])[:40]!r}), so every row would be its own "
        f"class; the header has {_shown(header)}: {SETTING}"
    )
