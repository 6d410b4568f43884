"""A conjugate model with an exact posterior sampler: the reference for calibration checks.

.. math::

    \\mu \\sim \\mathcal N(0, \\tau^2), \\qquad y_i \\mid \\mu \\sim \\mathcal N(\\mu, \\sigma^2),
    \\quad i = 1..n,

    \\mu \\mid y \\sim \\mathcal N\\Big(\\frac{\\sum_i y_i / \\sigma^2}{1/\\tau^2 + n/\\sigma^2},
    \\ \\frac{1}{1/\\tau^2 + n/\\sigma^2}\\Big).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from ppltk._rng import make_generator
from ppltk.results import Result

__all__ = ["normal_mean_model", "NormalMeanPosterior"]


def normal_mean_model(
    n: int = 10, prior_scale: float = 1.0, noise_scale: float = 1.0, y: torch.Tensor | None = None
) -> None:
    """``mu ~ N(0, prior_scale²)``, ``y[i] ~ N(mu, noise_scale²)`` for ``i < n``."""
    mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0), prior_scale))
    with pyro.plate("data", n):
        pyro.sample("y", dist.Normal(mu, noise_scale), obs=y)


@dataclass(frozen=True)
class NormalMeanPosterior:
    """Exact posterior sampler of :func:`normal_mean_model`, usable as an SBC ``method``.

    ``scale_factor`` and ``shift`` (in posterior standard deviations) make it deliberately wrong:
    the defaults ``1`` and ``0`` give the exact posterior.
    """

    num_draws: int = 100
    prior_scale: float = 1.0
    noise_scale: float = 1.0
    scale_factor: float = 1.0
    shift: float = 0.0

    def __call__(
        self, model: Callable, args: tuple, data: dict[str, torch.Tensor], seed: int
    ) -> Result:
        y = data["y"].double()
        precision = 1.0 / self.prior_scale**2 + y.numel() / self.noise_scale**2
        sd = math.sqrt(1.0 / precision)
        mean = (y.sum() / self.noise_scale**2) / precision
        gen = make_generator(seed)
        z = torch.randn(1, self.num_draws, generator=gen, dtype=torch.float64)
        draws = mean + sd * (self.shift + self.scale_factor * z)
        return Result(draws={"mu": draws}, method="exact-normal")
