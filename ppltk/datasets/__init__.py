"""Simulators and bundled data sets (no downloads at run time)."""

from __future__ import annotations

import importlib

_LOCATIONS = {
    "simulate_neural_decoding": "ppltk.datasets.neural",
    "simulate_vonmises_neurons": "ppltk.datasets.neural_vonmises",
    "split_digits": "ppltk.datasets.continual_tasks",
    "toy_blob_tasks": "ppltk.datasets.continual_tasks",
}

__all__ = sorted(_LOCATIONS)


def __getattr__(name: str):
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'ppltk.datasets' has no attribute {name!r}")
