r"""Vectorise a model over particles, and collect each particle's observation log-weight."""

from __future__ import annotations

import pyro
import torch
from pyro.poutine.messenger import Messenger

__all__ = [
    "particle_plate",
    "vectorize_particles",
    "LogWeightMessenger",
    "PARTICLE_PLATE",
    "per_particle",
    "site_log_prob",
]

PARTICLE_PLATE = "_ppltk_particles"


def particle_plate(num_particles: int, max_plate_nesting: int = 0) -> pyro.plate:
    """An outermost plate of size ``num_particles`` at dim ``-(max_plate_nesting + 1)``.

    Every sample site inside gets the particle dim as its leftmost batch dim, so one model
    execution runs all particles at once (values shaped ``[N, ..., *event]``). Preserves:
    each particle is an independent execution of the model (plates only declare independence).
    """
    return pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1))


def vectorize_particles(fn, num_particles: int, max_plate_nesting: int = 0):
    """``fn`` run inside :func:`particle_plate`."""

    def wrapped(*args, **kwargs):
        with particle_plate(num_particles, max_plate_nesting):
            return fn(*args, **kwargs)

    return wrapped


def per_particle(log_prob: torch.Tensor, num_particles: int, dim: int) -> torch.Tensor:
    """Sum a site's log-prob over every batch dim right of the particle dim ``dim``: ``[N]``."""
    lp = log_prob.reshape((1,) * max(0, -dim - log_prob.ndim) + log_prob.shape)
    lp = lp.reshape(lp.shape[: lp.ndim + dim + 1] + (-1,)).sum(-1)
    return lp.reshape(lp.shape[-1:]).expand(num_particles)


def site_log_prob(site) -> torch.Tensor | None:
    """A sample site's log-probability times its ``scale``, zero where masked out;
    ``None`` when the whole site is masked (``mask=False``)."""
    mask = site.get("mask")
    if mask is False:
        return None
    lp = site["fn"].log_prob(site["value"]) * site["scale"]
    if mask is not None and mask is not True:
        lp = torch.where(mask, lp, 0.0)
    return lp


class LogWeightMessenger(Messenger):
    r"""Accumulate :math:`\sum_{\text{observed sites}} \text{scale}\cdot\log p(y \mid \cdot)`
    per particle.

    After the run, :attr:`log_weight` is ``[N]``: every observed site's (and factor's) scaled
    log-probability summed over all dims right of the particle dim, which sits at
    ``-(max_plate_nesting + 1)`` of the sites' batch shape. Latent sites are not touched
    (sampled from their prior: the bootstrap proposal). Preserves the model's execution; it
    only observes.
    """

    def __init__(self, num_particles: int, max_plate_nesting: int = 0) -> None:
        super().__init__()
        self.num_particles, self.dim = num_particles, -(max_plate_nesting + 1)
        self.log_weight: torch.Tensor | float = 0.0

    def _postprocess_message(self, msg) -> None:
        if msg["type"] != "sample" or not msg["is_observed"]:
            return
        lp = site_log_prob(msg)
        if lp is not None:
            self.log_weight = self.log_weight + per_particle(lp, self.num_particles, self.dim)
