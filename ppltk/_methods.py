"""The one registry of inference methods reachable by name.

``ppltk run --method NAME`` (the CLI), :func:`ppltk.calibration.sbc` (MCMC methods) and
:func:`ppltk.distributed.smc_islands` (SMC methods) all look names up here, so a new algorithm
is registered once, with :func:`register_method`. An error raised while importing a method's
module passes through unchanged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ppltk.errors import ArgumentError

__all__ = ["Method", "MCMC_METHODS", "get_method", "method_names", "register_method"]


@dataclass(frozen=True)
class Method:
    """Where a method lives and how it is called: ``module.function(model, *args, **fixed)``;
    ``family`` is ``"mcmc"`` (returns chains) or ``"smc"`` (returns a log-evidence too)."""

    module: str
    function: str
    family: str
    fixed: dict = field(default_factory=dict)


_REGISTRY: dict[str, Method] = {}
_ALIASES: dict[str, str] = {}


def register_method(name: str, module: str, function: str, family: str, **fixed) -> None:
    """Make ``module.function`` reachable as ``name`` (with keyword arguments ``fixed``).

    Families ``"mcmc"`` and ``"smc"`` are inference methods; ``"runner"`` entries are how a
    lower layer reaches an orchestration one by name (e.g. ``ppltk.mcmc.sample(executor=...)``
    hands its chains to ``ppltk.distributed``) without importing it.
    """
    if family not in ("mcmc", "smc", "runner"):
        raise ArgumentError(f"Expected `family` 'mcmc', 'smc' or 'runner', but found {family!r}")
    _REGISTRY[name] = Method(module, function, family, dict(fixed))


for _kernel in ("nuts", "hmc", "mh"):
    register_method(_kernel, "ppltk.mcmc", "sample", "mcmc", kernel=_kernel)
register_method("smc", "ppltk.smc", "smc", "smc")
register_method("tempered_smc", "ppltk.smc", "tempered_smc", "smc")
register_method("distributed_chains", "ppltk.distributed", "sample_chains", "runner")
_ALIASES["tempered"] = "tempered_smc"


def method_names(family: str | None = None) -> list[str]:
    """Registered inference methods (of one ``family`` when given), without aliases."""
    if family is None:
        return sorted(n for n, m in _REGISTRY.items() if m.family != "runner")
    return sorted(n for n, m in _REGISTRY.items() if m.family == family)


MCMC_METHODS = tuple(method_names("mcmc"))


def lookup(name: str, family: str | None = None) -> Method:
    """The :class:`Method` registered as ``name`` (or an alias of it), checked by family."""
    key = _ALIASES.get(name, name)
    method = _REGISTRY.get(key)
    if method is None or (family is not None and method.family != family):
        names = method_names(family) + sorted(
            a for a, n in _ALIASES.items() if family is None or _REGISTRY[n].family == family
        )
        raise ArgumentError(f"Expected `method` in {sorted(names)}, but found {name!r}")
    return method


def get_method(name: str, family: str | None = None) -> tuple[Callable, dict]:
    """The entry point of method ``name`` and the keyword arguments it is called with."""
    method = lookup(name, family)
    entry = getattr(importlib.import_module(method.module), method.function)
    return entry, dict(method.fixed)
