"""Compression passes: each takes a model artifact and a typed config, returns a new artifact
plus a record. See :mod:`modelpress.compress.base` for the contract and
:mod:`modelpress.compress.registry` for the passes by name (importing it imports no pass)."""

from .registry import PASSES, PassEntry, PassInputs, get_pass

__all__ = ["PASSES", "PassEntry", "PassInputs", "get_pass"]
