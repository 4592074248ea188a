"""Exit codes of the command line, and what an unexpected exception leaves behind.

``guarded(call, error_log)`` runs one command and turns whatever it raises into an exit code and
ONE line on stderr (codes in :mod:`modelpress.errors`): a :class:`ModelPressError` exits with its
class's ``exit_code`` (2 for the user's input, 1 for something that failed), Ctrl-C with 130, and
any other exception is an internal error (3) whose traceback goes to a file, never the terminal.

>>> guarded(lambda: 0, lambda: Path("runs/error.log"))
0
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, ModelPressError, one_line

DEFAULT_ERROR_LOG = Path("runs") / "error.log"
_MAX_MESSAGE = 400  # characters of an exception's message on the terminal; the log has it all


def exit_status(exc: SystemExit) -> int:
    """The exit code a ``SystemExit`` carries (argparse: 2 for usage errors, 0 for --help)."""
    if exc.code is None or isinstance(exc.code, int):
        return int(exc.code or 0)
    print(f"modelpress: error: {one_line(exc.code)}", file=sys.stderr)
    return 2


def _short(exc: BaseException) -> str:
    text = one_line(exc) or "(no message)"
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _report(exc: BaseException) -> str:
    head = (
        f"modelpress internal error, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        f"command: {' '.join(sys.argv)}\ncwd: {os.getcwd()}\npython: {sys.version.split()[0]}\n\n"
    )
    return head + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def write_traceback(exc: BaseException, error_log: Callable[[], Path]) -> str:
    """Write ``exc``'s traceback to ``error_log()``, else runs/error.log, else a temp file; return
    where it went (or why it went nowhere)."""
    from .fsutil import atomic_write_text

    text = _report(exc)
    candidates: list[Path] = []
    # the log's own place may not be knowable (an unreadable recipe): then fall back
    with contextlib.suppress(Exception):
        candidates.append(Path(error_log()))
    candidates.append(DEFAULT_ERROR_LOG)
    for dest in candidates:
        try:
            return str(atomic_write_text(dest, text))
        except (OSError, ValueError):
            continue
    try:
        fd, name = tempfile.mkstemp(prefix="modelpress-error-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return name
    except OSError as exc2:
        return f"nowhere (no writable place: {one_line(exc2)})"


def guarded(call: Callable[[], int], error_log: Callable[[], Path]) -> int:
    """Run ``call`` and return its exit code, or the code of what it raised (one stderr line)."""
    try:
        return call()
    except ModelPressError as exc:
        line = f"modelpress: error: {one_line(exc)}"
        cause = exc.__cause__
        if exc.exit_code == 1 and cause is not None and not isinstance(cause, ModelPressError):
            # a step crashed and was reported as failed: keep its traceback for the bug report
            line += f" (traceback: {write_traceback(exc, error_log)})"
        print(line, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("modelpress: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `modelpress models | head`: the reader left, nothing went wrong
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        where = write_traceback(exc, error_log)
        print(
            f"modelpress: internal error: {type(exc).__name__}: {_short(exc)}; "
            f"the full traceback is in {where}; please report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def parse_and_run(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    command: Callable[[argparse.Namespace], int],
    error_log: Callable[[argparse.Namespace], Path],
) -> int:
    """Parse ``argv`` and run ``command(args)`` under :func:`guarded`: the one place a command
    line turns into an exit code (argparse's usage errors 2, ``--help`` 0)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
        return exit_status(exc)
    return guarded(lambda: command(args), lambda: error_log(args))


def standalone(
    prog: str, doc: str | None, configure, command, argv: list[str] | None = None
) -> int:
    """``python -m modelpress.<module>``: one subcommand outside the ``modelpress`` command, with
    the same one-line errors and exit codes as the ``modelpress`` command."""
    parser = argparse.ArgumentParser(
        prog=prog, description=(doc or "").splitlines()[0] if doc else None
    )
    configure(parser)
    return parse_and_run(parser, argv, command, lambda _args: DEFAULT_ERROR_LOG)
