"""Typed, one-line, actionable errors.

Every error the toolkit raises on purpose derives from :class:`ModelPressError`; the CLI prints
its message on one line and exits with the class's ``exit_code``. A message says what was wrong,
what was expected and what to do.

Exit codes of the ``modelpress`` command (see README.md and docs/ci.md):

- 0: it ran and every gate passed;
- 1: a gate failed, or a model or target failed (:class:`GateFailed`, :class:`BuildError`, the
  pipeline's per-model failures);
- 2: bad usage, configuration or input: a file or value the user gave is wrong
  (:class:`ConfigError`, :class:`DataError`, :class:`CheckpointError`, :class:`ArtifactError`,
  :class:`TargetUnavailable`);
- 3: an internal error (any exception that is not a ``ModelPressError``): a bug to report, with
  the traceback written to a file (``EXIT_INTERNAL``);
- 130: interrupted (Ctrl-C).
"""

from __future__ import annotations


class ModelPressError(Exception):
    """Base class of every error modelpress raises on purpose."""

    exit_code = 1  # something that ran failed; subclasses about the user's input use 2


class ConfigError(ModelPressError):
    """A configuration value, name or file is invalid (unknown model, bad ratio, bad recipe)."""

    exit_code = 2


class DataError(ModelPressError):
    """A data file is missing, truncated or not in the expected format."""

    exit_code = 2


class CheckpointError(ModelPressError):
    """A checkpoint cannot be read, or its config does not match its weights."""

    exit_code = 2


class ArtifactError(ModelPressError):
    """A deployed artifact (.onnx, .tflite, engine) is missing, truncated or corrupt.

    Exit 2: the file was given to modelpress (an artifact it built itself and cannot read back is
    a failed row of the run, not an exception that reaches the command line)."""

    exit_code = 2


class BuildError(ModelPressError):
    """A pass or target could not build its artifact."""


class TargetUnavailable(ModelPressError):
    """A runtime is not installed or cannot run on this machine (install the extra it names)."""

    exit_code = 2


class DeviceError(ModelPressError):
    """A measuring device cannot be reached or used (ssh, adb): its rows say why, others go on."""

    exit_code = 1


class GateFailed(ModelPressError):
    """A CI gate did not pass."""

    exit_code = 1


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message to one line for the terminal."""
    return " ".join(str(text).split())
