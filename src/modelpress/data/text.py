"""Text classification from a CSV/TSV file (label, text) or an aclImdb-style folder.

A word-level vocabulary is fitted on the train split only and saved with the model, so the
deployed artifact tokenises exactly as training did.

Accepted layouts for ``root``:
- ``reviews.csv`` / ``reviews.tsv``: one file, columns ``label`` and ``text`` (header row
  optional: without it the first column is the label and the second the text), or any header
  with the columns named by ``text_column`` / ``label_column`` (see :mod:`.columns`);
- a folder with ``train.csv`` (or ``.tsv``) and optionally ``test.csv``;
- an aclImdb-style folder: ``train/<class>/*.txt`` and ``test/<class>/*.txt`` (``unsup`` is ignored).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .columns import check_labels_are_labels, pick_columns

PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"[a-z0-9']+")
_HTML = re.compile(r"<[^>]+>")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; HTML tags (``<br />`` in IMDB) are dropped."""
    return _TOKEN.findall(_HTML.sub(" ", text.lower()))


class Vocabulary:
    """Word -> id map. Id 0 pads, id 1 stands for any word not seen in training.

    >>> v = Vocabulary.fit(["a good film", "a bad film"], max_size=10)
    >>> v.encode("a good plot", max_len=4).tolist()
    [2, 5, 1, 0]
    """

    def __init__(self, words: list[str]):
        if words[:2] != [PAD, UNK]:
            raise DataError(
                "vocabulary must start with <pad>, <unk>; the saved vocabulary is corrupt"
            )
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    @classmethod
    def fit(cls, texts: Iterable[str], max_size: int = 20000, min_freq: int = 1) -> Vocabulary:
        counts = Counter(tok for t in texts for tok in tokenize(t))
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w)
        )
        return cls([PAD, UNK] + ranked[: max(0, max_size - 2)])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_len: int) -> np.ndarray:
        ids = [self.index.get(tok, 1) for tok in tokenize(text)][:max_len]
        return np.array(ids + [0] * (max_len - len(ids)), dtype=np.int64)

    def encode_many(self, texts: Iterable[str], max_len: int) -> np.ndarray:
        return (
            np.stack([self.encode(t, max_len) for t in texts])
            if texts
            else np.zeros((0, max_len), np.int64)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"words": self.words}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocabulary:
        return cls(list(d["words"]))


def _decode(path: Path) -> str:
    """The file as UTF-8 text (a BOM is allowed), or a DataError naming the first bad byte."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    from ..yamlfile import decode_utf8

    return decode_utf8(
        raw, path, DataError, "expected a UTF-8 CSV/TSV with label,text: save it as UTF-8"
    )


def _read_table(
    path: Path, text_column: str | None = None, label_column: str | None = None
) -> tuple[list[str], list[str]]:
    delim = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delim)
    rows: list[tuple[int, list[str]]] = []  # (line the row ends on, cells)
    try:
        rows = [(reader.line_num, r) for r in reader if r]
    except csv.Error as exc:  # an unclosed quote, a field over csv.field_size_limit(), ...
        raise DataError(
            f"{path}:{reader.line_num}: {exc}; expected a CSV/TSV with label,text"
        ) from exc
    if not rows:
        raise DataError(f"{path} is empty; expected rows of label,text")
    li, ti, has_header = pick_columns(path, [r for _, r in rows], text_column, label_column)
    first = rows[0][1]
    rows = rows[1:] if has_header else rows
    if not rows:
        raise DataError(f"{path} has a header and no rows; expected rows of label,text")
    for k, (line, r) in enumerate(rows, start=1):
        if len(r) <= max(li, ti):
            raise DataError(
                f"{path}:{line}: row {k} has {len(r)} column(s); expected label and text"
            )
        if not r[li].strip():
            raise DataError(f"{path}:{line}: row {k} has an empty label; give every row a label")
    labels = [r[li].strip() for _, r in rows]
    check_labels_are_labels(path, labels, first if has_header else None, first, li)
    return labels, [r[ti] for _, r in rows]


def _read_folder_split(folder: Path) -> tuple[list[str], list[str]]:
    labels, texts = [], []
    for cls_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "unsup"):
        for f in sorted(cls_dir.glob("*.txt")):
            labels.append(cls_dir.name)
            texts.append(f.read_text(encoding="utf-8", errors="replace"))
    if not texts:
        raise DataError(f"no <class>/*.txt files under {folder}; expected an aclImdb-style layout")
    return labels, texts


def load_text_raw(
    root: str | Path, text_column: str | None = None, label_column: str | None = None
):
    """(train_labels, train_texts, test_labels | None, test_texts | None) from ``root``;
    ``text_column`` / ``label_column`` name the CSV/TSV header's columns."""
    root = Path(root)
    cols = {"text_column": text_column, "label_column": label_column}
    if root.is_file():
        return (*_read_table(root, **cols), None, None)
    if not root.is_dir():
        raise DataError(
            f"text data {root} does not exist: give a .csv/.tsv file or an aclImdb-style folder"
        )
    for ext in (".csv", ".tsv"):
        if (root / f"train{ext}").is_file():
            test = root / f"test{ext}"
            test_part = _read_table(test, **cols) if test.is_file() else (None, None)
            return (*_read_table(root / f"train{ext}", **cols), *test_part)
    if (root / "train").is_dir():
        if text_column or label_column:
            raise DataError(
                f"{root} is a train/<class>/*.txt folder, which has no columns; remove "
                "text_column: / label_column: (they name the columns of a CSV/TSV file)"
            )
        test_part = _read_folder_split(root / "test") if (root / "test").is_dir() else (None, None)
        return (*_read_folder_split(root / "train"), *test_part)
    raise DataError(f"{root} holds no train.csv/train.tsv and no train/<class>/ folders")
