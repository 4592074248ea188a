"""One way to keep libraries quiet: their logging, their Python warnings, and what their native
(C++) code prints on file descriptors 1 and 2.

- :func:`quiet_logger`: a logger (the root one by default) at ERROR for a block, Python warnings
  optionally ignored too: ONNX Runtime's quantization tools, the ONNX exporter, torchao;
- :func:`quiet`: everything, native output included (litert-torch, ai-edge-quantizer and the
  LiteRT interpreter print from C++); what was printed can be kept in a list.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_logger(name: str | None = None, *, warnings_too: bool = False) -> Iterator[None]:
    """Raise a logger (the root logger by default) to ERROR for the duration of a block;
    ``warnings_too``: ignore Python warnings inside it as well."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            if warnings_too:
                warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def quiet(sink: list[str] | None = None) -> Iterator[None]:
    """Silence Python and native (C++) output; what was printed is appended to ``sink``."""
    env_key = "LITERT_TORCH_SHOW_PROGRESS"
    old_env = os.environ.get(env_key)
    os.environ[env_key] = "n"
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            root.setLevel(logging.ERROR)
            with (
                warnings.catch_warnings(),
                contextlib.redirect_stdout(_FdWriter(1)),
                contextlib.redirect_stderr(_FdWriter(2)),
            ):
                warnings.simplefilter("ignore")
                yield
        finally:
            root.setLevel(level)
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if old_env is None:
                os.environ.pop(env_key, None)
            else:
                os.environ[env_key] = old_env
            if sink is not None:
                tmp.seek(0)
                sink.append(tmp.read().decode("utf-8", "replace"))


class _FdWriter:
    """A text stream onto a raw fd (pytest and rich may have replaced sys.stdout)."""

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, text: str) -> int:
        os.write(self.fd, text.encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:  # a logging handler created inside quiet() may hold us
        pass
