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
from ppltk.smc.filter import _advance, particle_filter
from ppltk.smc.population import Population, reindex
from ppltk.smc.proposals import bootstrap
from ppltk.smc.resampling import get_resampler, resample

__all__ = ["smc2"]


def _rejuvenate(
    theta, pf_pop, loglik, make_ssm, log_prior, ys_seen, num_x, num_moves, generator, pf
):
    """PMMH moves on every theta-particle, proposal covariance from the theta cloud."""
    chol = torch.linalg.cholesky(
        torch.cov(theta.T).reshape(theta.shape[1], theta.shape[1])
        + 1e-9 * torch.eye(theta.shape[1], dtype=theta.dtype, device=theta.device)
    )
    step = 2.38 / theta.shape[1] ** 0.5
    accepted = torch.zeros_like(theta[:, 0])
    for _ in range(num_moves):
        eps = torch.randn(theta.shape, dtype=theta.dtype, device=theta.device, generator=generator)
        prop = theta + step * eps @ chol.mT
        lp_prop, lp = log_prior(prop), log_prior(theta)
        valid = torch.isfinite(lp_prop)
        safe = torch.where(valid[:, None], prop, theta)
        out = particle_filter(
            make_ssm(safe), ys_seen, num_x, batch_shape=theta.shape[:1], seed=generator, **pf
        )
        ll_prop = out.log_evidence.to(loglik.dtype)
        log_alpha = torch.where(valid, lp_prop + ll_prop - lp - loglik, -torch.inf)
        acc = (
            torch.log(
                torch.rand(
                    log_alpha.shape, dtype=theta.dtype, device=theta.device, generator=generator
                )
            )
            < log_alpha
        )
        theta = torch.where(acc[:, None], prop, theta)
        loglik = torch.where(acc, ll_prop, loglik)
        pf_pop = _select(acc, out.population, pf_pop)
        accepted = accepted + acc.to(theta.dtype) / num_moves
    return theta, pf_pop, loglik, accepted


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
    outer = Population.uniform(
        torch.arange(theta.shape[0]), torch.zeros(theta.shape[0], dtype=torch.float64)
    )
    pf_pop, loglik, moves = None, torch.zeros(theta.shape[0], dtype=torch.float64), 0
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
                theta, pf_pop, loglik, _ = _rejuvenate(
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
