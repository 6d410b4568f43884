"""Registry of inference methods reachable by name (``ppltk run --method NAME``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ppltk.errors import ArgumentError

# name -> (module, function, fixed keyword arguments)
_REGISTRY: dict[str, tuple[str, str, dict]] = {
    "nuts": ("ppltk.mcmc", "sample", {"kernel": "nuts"}),
    "hmc": ("ppltk.mcmc", "sample", {"kernel": "hmc"}),
    "mh": ("ppltk.mcmc", "sample", {"kernel": "mh"}),
    "smc": ("ppltk.smc", "smc", {}),
    "tempered_smc": ("ppltk.smc", "tempered_smc", {}),
}

MCMC_METHODS = ("nuts", "hmc", "mh")


def method_names() -> list[str]:
    """Names accepted by :func:`get_method`."""
    return sorted(_REGISTRY)


def get_method(name: str) -> tuple[Callable, dict]:
    """The entry point of method ``name`` and the keyword arguments it is called with."""
    if name not in _REGISTRY:
        raise ArgumentError(f"Expected `method` in {method_names()}, but found {name!r}")
    module, function, fixed = _REGISTRY[name]
    try:
        entry = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as error:
        raise ArgumentError(f"Method {name!r} is not available in this build: {error}") from error
    return entry, dict(fixed)
