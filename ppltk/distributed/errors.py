"""Errors of the distributed layer (defined in :mod:`ppltk.errors`, re-exported here)."""

from __future__ import annotations

from ppltk.errors import DistributedError

__all__ = ["DistributedError"]
