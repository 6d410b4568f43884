"""Waste-free tempered SMC (Dau & Chopin, 2022) from ppltk's public blocks.

Resample only ``num_chains`` = N / P starting points, run each through P - 1 MCMC steps and
keep *every* state: N particles, no MCMC step wasted.
"""

import torch

from ppltk.mcmc import RandomWalkMH
from ppltk.smc import (
    Population,
    mcmc_move,
    next_beta,
    population_params,
    systematic,
    tempering_increment,
)


def waste_free_tempered(log_prior, log_lik, z, num_chains, generator):
    """``z [N, D]`` prior draws; returns the final population (``log_evidence_estimate()``)."""
    n, kernel = z.shape[0], RandomWalkMH()
    pop, beta, ll = Population.uniform(z, torch.zeros(n, dtype=z.dtype)), 0.0, log_lik(z)
    while beta < 1.0:
        new = next_beta(ll, beta, target_ess=0.5)
        pop = pop.reweight(tempering_increment(ll, new - beta))
        starts = pop.particles[systematic(pop.log_weights, generator, num_samples=num_chains)]
        state, info = mcmc_move(
            kernel,
            lambda u, b=new: log_prior(u) + b * log_lik(u),
            starts,
            n // num_chains - 1,
            generator,
            population_params(kernel, starts),
            return_path=True,
        )
        z = torch.cat([starts[None], info["path"]]).reshape(n, -1)
        pop = Population(z, torch.zeros(n, dtype=z.dtype), pop.log_evidence_estimate())
        beta, ll = new, log_lik(z)
    return pop
