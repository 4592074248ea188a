"""Typed, one-line, actionable errors.

Every error the toolkit raises on purpose derives from :class:`ModelPressError`; the CLI prints
its message on one line and exits non-zero. A message says what was wrong, what was expected and
what to do.
"""

from __future__ import annotations


class ModelPressError(Exception):
    """Base class of every error modelpress raises on purpose."""

    exit_code = 1


class ConfigError(ModelPressError):
    """A configuration value, name or file is invalid (unknown model, bad ratio, bad recipe)."""

    exit_code = 2


class DataError(ModelPressError):
    """A data file is missing, truncated or not in the expected format."""


class CheckpointError(ModelPressError):
    """A checkpoint cannot be read, or its config does not match its weights."""


class ArtifactError(ModelPressError):
    """A deployed artifact (.onnx, .tflite, engine) is missing, truncated or corrupt."""


class BuildError(ModelPressError):
    """A pass or target could not build its artifact."""


class TargetUnavailable(ModelPressError):
    """A runtime is not installed or cannot run on this machine."""


class GateFailed(ModelPressError):
    """A CI gate did not pass."""


def one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message to one line for the terminal."""
    return " ".join(str(text).split())
