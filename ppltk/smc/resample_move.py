r"""Resample-move SMC over a sequence of targets (Gilks & Berzuini, 2001; Chopin's IBIS, 2002).

Targets :math:`\pi_t(z) \propto p(z) \prod_{s \le t} \ell_s(z)` — e.g. a static model's
posterior as data batches :math:`y_s` arrive, :math:`\ell_s(z) = p(y_s \mid z, y_{<s})`. Step
:math:`t` = reweight by :math:`\ell_t`, resample when :math:`\mathrm{ESS}/N <` threshold, then
move with an MCMC kernel invariant for :math:`\pi_t`. Each block preserves its target, so the
population targets :math:`\pi_t` and :math:`\log\hat Z_t` estimates
:math:`\log \int p(z)\prod_{s\le t}\ell_s(z)\,dz`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError
from ppltk.smc.moves import mcmc_move, population_params
from ppltk.smc.population import Population, check_log_weights
from ppltk.smc.resampling import resample

__all__ = ["resample_move"]


def resample_move(
    log_prior: Callable[[torch.Tensor], torch.Tensor],
    log_likelihoods: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    particles: torch.Tensor,
    *,
    kernel=None,
    num_mcmc_steps: int = 5,
    ess_threshold: float = 0.5,
    resampling="systematic",
    seed: int | torch.Generator = 0,
    progress: bool = False,
) -> tuple[Population, list[float]]:
    """Run resample-move SMC; returns the final weighted population and the ESS after each step.

    ``particles [N, D]`` are prior draws; ``log_likelihoods[t](z [N, D]) -> [N]``.
    """
    from ppltk.smc.tempered import _default_kernel

    if particles.ndim != 2 or particles.shape[0] < 2:
        raise ArgumentError(
            f"Expected `particles` shaped [N >= 2, D], but found {list(particles.shape)}"
        )
    generator = make_generator(seed, particles.device)
    kernel = _default_kernel(kernel)
    pop, history = Population.uniform(particles, torch.zeros_like(particles[:, 0])), []
    with progress_bar(len(log_likelihoods), "resample-move SMC", progress) as bar:
        for t, log_lik in enumerate(log_likelihoods):
            pop = pop.reweight(_finite_or_raise(log_lik(pop.particles).detach(), t))
            history.append(float(pop.ess))
            pop, resampled, _ = resample(
                pop, resampling, generator, ess_threshold, f"observation t={t}"
            )
            if bool(resampled.all()):
                seen = log_likelihoods[: t + 1]

                def target(z, seen=seen):
                    return log_prior(z) + sum(f(z) for f in seen)

                params = population_params(kernel, pop.particles)
                state, _ = mcmc_move(
                    kernel, target, pop.particles, num_mcmc_steps, generator, params
                )
                pop = pop.with_particles(state.position)
            bar.update()
    return pop, history


def _finite_or_raise(log_lik: torch.Tensor, t: int) -> torch.Tensor:
    """NaN log-likelihoods are a model error; all ``-inf`` means zero evidence: both raise."""
    check_log_weights(log_lik, f"observation t={t}")
    return log_lik
