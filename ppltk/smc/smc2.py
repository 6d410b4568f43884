r"""SMC² (Chopin, Jacob & Papaspiliopoulos, 2013): an SMC sampler over parameters whose
particles each carry a particle filter.

Target at time :math:`t`: :math:`p(\theta)\,\hat p_{N_x}(y_{0:t}\mid\theta)` on the extended space
of :math:`\theta` and its filter. Per time step, from public blocks: one batched
:func:`~ppltk.smc.step` of every :math:`\theta`-particle's filter, reweight the outer
:class:`~ppltk.smc.Population` by the filters' evidence increments, adaptively
:func:`~ppltk.smc.resample` it and, after a resampling, move each :math:`\theta` with
:class:`~ppltk.smc.PseudoMarginalMH` (a fresh filter on :math:`y_{0:t}`, carried in the chain
state when accepted):

.. math:: \omega^m \mathrel{*}= \hat p(y_t \mid y_{0:t-1}, \theta^m); \quad
          \text{if } \mathrm{ESS}/M < \tau:\ \text{resample }(\theta^m, \text{filter}^m),\
          \text{then PMMH-move each } \theta^m.

The PMMH move leaves the extended target invariant, so draws are from :math:`p(\theta \mid
y_{0:t})` and :math:`\log\hat Z` estimates :math:`\log p(y_{0:t})` (marginal over :math:`\theta`).
A :math:`\theta`-particle whose filter finds zero likelihood gets zero weight.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.mcmc import Params
from ppltk.results import Result
from ppltk.smc.filter import StateSpaceFK
from ppltk.smc.kernel import SMCState, init, step
from ppltk.smc.pmmh import PseudoMarginalMH, PseudoMarginalState, ssm_estimator
from ppltk.smc.population import Population, reindex
from ppltk.smc.resampling import get_resampler, resample

__all__ = ["smc2"]


def _rejuvenate(theta, inner, make_ssm, log_prior, ys_seen, num_x, num_moves, generator, pf):
    """PMMH moves on every theta-particle, proposal covariance from the theta cloud."""
    dim, kernel = theta.shape[1], PseudoMarginalMH()
    cov = torch.cov(theta.T).reshape(dim, dim) + 1e-9 * torch.eye(
        dim, dtype=theta.dtype, device=theta.device
    )
    params = Params(
        torch.full_like(theta[:, 0], 2.38 / dim**0.5), cov.expand(len(theta), dim, dim).clone()
    )
    estimate = ssm_estimator(make_ssm, log_prior, ys_seen, num_x, generator, True, **pf)
    lp = log_prior(theta) + inner.log_evidence_estimate().to(theta.dtype)
    chain = PseudoMarginalState(theta, lp, inner)
    for _ in range(num_moves):
        chain, _ = kernel.step(chain, estimate, params, generator)
    return chain.position, chain.aux


def smc2(
    make_ssm: Callable[[torch.Tensor], object],
    log_prior: Callable[[torch.Tensor], torch.Tensor],
    ys: torch.Tensor,
    theta0: torch.Tensor,
    *,
    num_x_particles: int = 100,
    ess_threshold: float = 0.5,
    inner_ess_threshold: float = 0.5,
    num_moves: int = 3,
    resampling="systematic",
    proposal=None,
    seed: int | torch.Generator = 0,
    progress: bool = True,
) -> Result:
    """SMC² over parameter particles ``theta0 [M, D]`` drawn from the prior.

    ``make_ssm(theta [M, D])`` returns a state-space model batched over the ``M`` rows (as for
    :func:`~ppltk.smc.pmmh`); ``proposal`` and ``inner_ess_threshold`` configure the inner
    filters, ``ess_threshold`` the outer population. Returns a :class:`ppltk.Result` with
    equally weighted ``draws["theta"] [1, M, D]`` and ``log_evidence`` :math:`\\log\\hat p(y)`.
    """
    generator = make_generator(seed, theta0.device)
    pf = dict(resampling=resampling, ess_threshold=inner_ess_threshold, proposal=proposal)
    resampler, num_theta = get_resampler(resampling), theta0.shape[0]
    theta = theta0
    zeros = torch.zeros(num_theta, dtype=torch.float64, device=theta.device)
    outer = Population.uniform(torch.arange(num_theta, device=theta.device), zeros)
    inner, moves = None, 0
    with progress_bar(len(ys), "SMC^2", progress) as bar:
        for t in range(len(ys)):
            fk = StateSpaceFK(make_ssm(theta), ys, proposal)
            if inner is None:
                inner, info = init(fk, num_x_particles, generator, (num_theta,))
            else:
                inner, info = step(
                    fk, inner, generator, resampling=resampler, ess_threshold=inner_ess_threshold
                )
            outer = outer.reweight(info.log_evidence_increment)
            outer, mask, anc = resample(
                outer, resampler, generator, ess_threshold, f"observation t={t}"
            )
            if bool(mask.all()):
                pop = reindex(inner.population, anc)
                theta, pop = _rejuvenate(
                    theta[anc],
                    pop,
                    make_ssm,
                    log_prior,
                    ys[: t + 1],
                    num_x_particles,
                    num_moves,
                    generator,
                    pf,
                )
                inner, moves = SMCState(pop, inner.t), moves + 1
            bar.update()
    final = get_resampler("multinomial")(outer.log_weights, generator)
    return Result(
        draws={"theta": theta[final][None]},
        log_evidence=float(outer.log_evidence_estimate()),
        method="smc2",
        attrs={"num_rejuvenations": moves, "num_x_particles": num_x_particles},
    )
