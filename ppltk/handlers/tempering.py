r"""Tempering: scale the log-likelihood of observed sites by :math:`\beta`."""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger

__all__ = ["TemperMessenger", "temper"]


class TemperMessenger(Messenger):
    r"""Multiply every observed site's (and ``pyro.factor``'s) log-probability by ``beta``.

    Under this handler the joint is :math:`\log p(z) + \beta \log p(y \mid z)`: the tempered
    target :math:`\pi_\beta`. Preserves: latent sites' distributions are untouched;
    ``beta = 1`` is the identity and nesting composes, ``temper(temper(m, a), b) = temper(m,
    a b)``. ``beta`` may be a float or a tensor that broadcasts against the sites' batch shape
    (e.g. one temperature per particle).
    """

    def __init__(self, beta: float | torch.Tensor) -> None:
        super().__init__()
        self.beta = beta

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["is_observed"]:
            msg["scale"] = self.beta * msg["scale"]


def temper(fn=None, beta: float | torch.Tensor = 1.0):
    """Functional form of :class:`TemperMessenger` (usable as a decorator or context)."""
    msngr = TemperMessenger(beta)
    return msngr(fn) if fn is not None else msngr
