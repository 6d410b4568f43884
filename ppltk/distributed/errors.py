"""Errors of the distributed layer (subclasses of the shared :mod:`ppltk.errors` classes)."""

from __future__ import annotations

from ppltk.errors import PpltkError

__all__ = ["DistributedError"]


class DistributedError(PpltkError, RuntimeError):
    """A distributed run could not deliver every work unit exactly once."""
