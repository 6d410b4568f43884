"""Draw parameters and data from a model's prior predictive, then condition on the data."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ppltk._rng import pyro_seed
from ppltk.errors import ModelStructureError

__all__ = ["UnobserveMessenger", "unobserve", "simulate_prior", "condition_on", "latent_sites"]


class UnobserveMessenger(Messenger):
    """Sample the named observed sites from their distribution instead of observing them.

    Like :class:`pyro.poutine.UnconditionMessenger`, restricted to ``names``: other observed
    sites (``pyro.factor``, ``pyro.deterministic``, covariates) are left as they are. Applying it
    twice equals applying it once; a site observed with ``obs=None`` is already sampled.
    """

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = frozenset(names)

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] in self.names and msg["is_observed"]:
            msg["is_observed"] = False
            msg["infer"]["was_observed"] = True
            msg["value"] = None
            msg["done"] = False


def unobserve(fn: Callable[..., Any], names: Sequence[str]) -> Callable[..., Any]:
    """Return ``fn`` with the sites ``names`` sampled from the model (see :class:`UnobserveMessenger`)."""
    return UnobserveMessenger(names)(fn)


def latent_sites(trace: poutine.Trace, observed: Sequence[str]) -> dict[str, torch.Tensor]:
    """Values of the unobserved sample sites of ``trace`` (trace order), less ``observed``."""
    return {
        name: site["value"].detach()
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
        and name not in observed
    }


def simulate_prior(
    model: Callable[..., Any],
    args: tuple,
    kwargs: dict[str, Any],
    observed: Sequence[str],
    seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    r"""Draw :math:`\theta \sim p(\theta)` and :math:`y \sim p(y \mid \theta)` by running the model.

    Returns ``(latents, data)``: the latent sites' values and the simulated values of the
    ``observed`` sites. The draw uses Pyro's global RNG inside :func:`ppltk._rng.pyro_seed`, so it
    is a deterministic function of ``seed`` and leaves the caller's RNG state untouched.
    """
    with pyro_seed(seed):
        trace = poutine.trace(unobserve(model, observed)).get_trace(*args, **kwargs)
    missing = [name for name in observed if name not in trace.nodes]
    if missing:
        sites = [
            n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
        ]
        raise ModelStructureError(
            f"Expected `observed` sites {list(observed)} in the model, but {missing} are not "
            f"among its sample sites {sites}"
        )
    data = {name: trace.nodes[name]["value"].detach() for name in observed}
    return latent_sites(trace, observed), data


def condition_on(
    model: Callable[..., Any], data: dict[str, torch.Tensor], kwargs: dict[str, Any] | None = None
) -> Callable[..., Any]:
    """``model`` with its keyword arguments bound and the ``data`` sites observed (picklable)."""
    bound = functools.partial(model, **kwargs) if kwargs else model
    return poutine.condition(bound, data=data)
