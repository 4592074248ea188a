"""The modelpress metadata inside a ``.tflite`` file: the flatbuffer's ``metadata`` entry
``modelpress`` holds the JSON (input spec, preprocessing, labels, lineage, I/O quantization)
and a SHA-256 over the whole file, so a deployed file alone says what it is and whether it is
intact. Reading needs no runtime and no torch (a tiny reader of the TFLite schema); writing uses
ai_edge_litert's flatbuffer object API.

>>> read_meta("out/resnet8.int8.tflite")["precision"]                     # doctest: +SKIP
'int8'
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, BuildError
from ..fsutil import atomic_write_bytes

META_NAME = "modelpress"  # name of the flatbuffer metadata entry that holds our JSON
DIGEST_PLACEHOLDER = "0" * 64
DIGEST_AT = len('{"digest": "')  # the digest is the JSON's first value


def read_meta(path: str | os.PathLike[str], verify: bool = True) -> dict[str, Any]:
    """The modelpress metadata embedded in a ``.tflite`` file; checks the file's digest.

    Raises :class:`ArtifactError` for a missing, truncated or edited file, or one that modelpress
    did not write.

    >>> read_meta("out/resnet8.int8.tflite")["precision"]                 # doctest: +SKIP
    'int8'
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"TFLite model {path} does not exist; build it with the litert target")
    data = path.read_bytes()
    try:
        span = metadata_span(data)
    except (struct.error, IndexError, ValueError) as exc:
        raise ArtifactError(
            f"TFLite model {path} is truncated or not a TFLite flatbuffer ({exc}); rebuild it"
        ) from exc
    if span is None:
        raise ArtifactError(
            f"TFLite model {path} has no modelpress metadata; build it with the litert target"
        )
    start, end = span
    try:
        meta = json.loads(data[start:end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            f"TFLite model {path}: its metadata is corrupt ({exc}); rebuild it"
        ) from exc
    if verify and meta.get("digest") != file_digest(data, start):
        raise ArtifactError(
            f"TFLite model {path} failed its digest check: the file was truncated, edited or "
            "corrupted; rebuild it with the litert target"
        )
    return meta


def file_digest(data: bytes | bytearray, meta_start: int) -> str:
    """SHA-256 of the whole file with the digest in the metadata JSON replaced by zeros."""
    lo = meta_start + DIGEST_AT
    body = bytes(data[:lo]) + DIGEST_PLACEHOLDER.encode() + bytes(data[lo + 64 :])
    return hashlib.sha256(body).hexdigest()


def metadata_span(data: bytes | bytearray) -> tuple[int, int] | None:
    """(start, end) byte offsets of the ``modelpress`` metadata buffer, or None if absent.

    A tiny reader of the TFLite schema (Model.buffers = field 4, Model.metadata = field 6;
    Metadata{name, buffer}; Buffer{data, offset, size}) so that reading needs no runtime.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("no TFL3 file identifier")
    root = _u32(data, 0)
    meta_vec = _field(data, root, 6)
    if meta_vec is None:
        return None
    for entry in _table_vector(data, meta_vec):
        name_pos = _field(data, entry, 0)
        if name_pos is None or _string(data, name_pos) != META_NAME:
            continue
        buf_pos = _field(data, entry, 1)
        index = _u32(data, buf_pos) if buf_pos is not None else 0
        buffers = list(_table_vector(data, _field(data, root, 4)))
        return _buffer_span(data, buffers[index])
    return None


def _u32(data: bytes | bytearray, pos: int) -> int:
    return struct.unpack_from("<I", data, pos)[0]


def _field(data: bytes | bytearray, table: int, index: int) -> int | None:
    """Absolute position of field ``index`` of the table at ``table`` (None if unset)."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    if 4 + 2 * index >= struct.unpack_from("<H", data, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _table_vector(data: bytes | bytearray, pos: int | None) -> Iterator[int]:
    if pos is None:
        return
    vec = pos + _u32(data, pos)
    for i in range(_u32(data, vec)):
        elem = vec + 4 + 4 * i
        yield elem + _u32(data, elem)


def _string(data: bytes | bytearray, pos: int) -> str:
    start = pos + _u32(data, pos)
    return bytes(data[start + 4 : start + 4 + _u32(data, start)]).decode("utf-8", "replace")


def _buffer_span(data: bytes | bytearray, buffer: int) -> tuple[int, int]:
    data_pos = _field(data, buffer, 0)
    if data_pos is not None:
        vec = data_pos + _u32(data, data_pos)
        start, end = vec + 4, vec + 4 + _u32(data, vec)
    else:  # large models keep buffers after the flatbuffer: Buffer.offset / Buffer.size
        off_pos, size_pos = _field(data, buffer, 1), _field(data, buffer, 2)
        if off_pos is None or size_pos is None:
            raise ValueError("metadata buffer has neither data nor offset")
        start = struct.unpack_from("<Q", data, off_pos)[0]
        end = start + struct.unpack_from("<Q", data, size_pos)[0]
    if end > len(data):
        raise ValueError("metadata buffer runs past the end of the file")
    return start, end


def write_with_meta(data: bytes, meta: dict[str, Any], dest: Path) -> Path:
    """Embed ``meta`` (plus a SHA-256 over the whole file) and write ``dest`` atomically."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    body = {k: v for k, v in meta.items() if k != "digest"}
    text = json.dumps({"digest": DIGEST_PLACEHOLDER, **body}, default=str)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.metadata = [m for m in (model.metadata or []) if _name(m.name) != META_NAME]
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name, entry.buffer = META_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    out = bytearray(flatbuffer_utils.convert_object_to_bytearray(model))
    span = metadata_span(out)
    if span is None:  # pragma: no cover - we just wrote it
        raise BuildError(f"litert: could not embed metadata in {dest}")
    lo = span[0] + DIGEST_AT
    out[lo : lo + 64] = file_digest(out, span[0]).encode()
    return atomic_write_bytes(dest, bytes(out))


def _name(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)
