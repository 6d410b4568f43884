r"""SMC² (Chopin, Jacob & Papaspiliopoulos, 2013): an SMC sampler over parameters whose
particles each carry a particle filter.

Target at time :math:`t`: :math:`p(\theta)\,\hat p_{N_x}(y_{0:t}\mid\theta)` on the extended space
of :math:`\theta` and its filter. Per time step (blocks: batched filter advance, reweight,
adaptive resample, PMMH move):

.. math:: \omega^m \mathrel{*}= \hat p(y_t \mid y_{0:t-1}, \theta^m); \quad
          \text{if } \mathrm{ESS}/M < \tau:\ \text{resample }(\theta^m, \text{filter}^m),\
          \text{then PMMH-move each } \theta^m \text{ with a fresh filter on } y_{0:t}.

The PMMH move leaves the extended target invariant, so draws are from :math:`p(\theta \mid
y_{0:t})` and :math:`\log\hat Z` estimates :math:`\log p(y_{0:t})` (marginal over :math:`\theta`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.results import Result
from ppltk.smc.filter import _advance
from ppltk.smc.pmmh import _pmmh_step
from ppltk.smc.population import Population, reindex
from ppltk.smc.proposals import bootstrap
from ppltk.smc.resampling import get_resampler, resample

__all__ = ["smc2"]


def _rejuvenate(
    theta, pf_pop, loglik, make_ssm, log_prior, ys_seen, num_x, num_moves, generator, pf
):
    """PMMH moves on every theta-particle, proposal covariance from the theta cloud."""
    dim = theta.shape[1]
    chol = torch.linalg.cholesky(
        torch.cov(theta.T).reshape(dim, dim)
        + 1e-9 * torch.eye(dim, dtype=theta.dtype, device=theta.device)
    )
    scale = 2.38 / dim**0.5 * chol
    lp = log_prior(theta)
    for _ in range(num_moves):
        theta, lp, loglik, acc, _, out = _pmmh_step(
            make_ssm, log_prior, ys_seen, theta, lp, loglik, scale, num_x, generator, pf
        )
        pf_pop = _select(acc, out.population, pf_pop)
    return theta, pf_pop, loglik


def _select(mask, new: Population, old: Population) -> Population:
    def pick(a, b):
        return torch.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return Population(
        pick(new.particles, old.particles),
        pick(new.log_weights, old.log_weights),
        pick(new.log_evidence, old.log_evidence),
    )


def smc2(
    make_ssm: Callable[[torch.Tensor], object],
    log_prior: Callable[[torch.Tensor], torch.Tensor],
    ys: torch.Tensor,
    theta0: torch.Tensor,
    *,
    num_x_particles: int = 100,
    ess_threshold: float = 0.5,
    num_moves: int = 3,
    resampling="systematic",
    seed: int | torch.Generator = 0,
    progress: bool = True,
) -> Result:
    """SMC² over parameter particles ``theta0 [M, D]`` drawn from the prior.

    ``make_ssm(theta [M, D])`` returns a state-space model batched over the ``M`` rows (as for
    :func:`~ppltk.smc.pmmh`). Returns a :class:`ppltk.Result` with equally weighted
    ``draws["theta"] [1, M, D]`` and ``log_evidence`` :math:`\\log\\hat p(y)`.
    """
    generator = make_generator(seed, theta0.device)
    pf = dict(resampling=resampling, ess_threshold=0.5)
    resampler, shape = get_resampler(resampling), (theta0.shape[0], num_x_particles)
    theta = theta0
    zeros = torch.zeros(theta.shape[0], dtype=torch.float64, device=theta.device)
    outer = Population.uniform(torch.arange(theta.shape[0], device=theta.device), zeros)
    pf_pop, loglik, moves = None, zeros, 0
    with progress_bar(len(ys), "SMC^2", progress) as bar:
        for t in range(len(ys)):
            ssm = make_ssm(theta)
            pf_pop, inc, _, _, _ = _advance(
                pf_pop, ssm, bootstrap, resampler, 0.5, ys, t, shape, generator
            )
            outer, loglik = outer.reweight(inc), loglik + inc
            outer, mask, anc = resample(
                outer, resampler, generator, ess_threshold, f"observation t={t}"
            )
            if bool(mask.all()):
                theta, loglik, pf_pop = theta[anc], loglik[anc], reindex(pf_pop, anc)
                theta, pf_pop, loglik = _rejuvenate(
                    theta,
                    pf_pop,
                    loglik,
                    make_ssm,
                    log_prior,
                    ys[: t + 1],
                    num_x_particles,
                    num_moves,
                    generator,
                    pf,
                )
                moves += 1
            bar.update()
    final = get_resampler("multinomial")(outer.log_weights, generator)
    return Result(
        draws={"theta": theta[final][None]},
        log_evidence=float(outer.log_evidence_estimate()),
        method="smc2",
        attrs={"num_rejuvenations": moves, "num_x_particles": num_x_particles},
    )
