"""Compression passes: each takes a model artifact and a typed config, returns a new artifact
plus a record. See :mod:`modelpress.compress.base` for the contract."""
