"""Batched Hamiltonian Monte Carlo with a fixed number of leapfrog steps.

Each chain draws :math:`p \\sim \\mathcal N(0, M)`, integrates ``num_steps`` leapfrog steps of
size :math:`\\epsilon` (optionally jittered, :math:`\\epsilon \\cdot U(1-j, 1+j)` per chain and
transition, which keeps detailed balance because the jitter is drawn independently of the
state) and accepts the end point with probability :math:`\\min(1, e^{-(H_L - H_0)})`.  A NaN
or too large energy error is a divergence and is rejected.  The Metropolis correction of a
volume-preserving, reversible map leaves :math:`\\pi` invariant.
"""

from __future__ import annotations

import math

import torch

from ppltk.errors import ArgumentError
from ppltk.mcmc._base import Kernel, LogDensityFn, MCMCState, Params
from ppltk.mcmc.integrators import (
    find_reasonable_step_size,
    kinetic_energy,
    leapfrog,
    sample_momentum,
)

__all__ = ["HMC"]


class HamiltonianKernel(Kernel):
    """Base of the gradient-based kernels (HMC, NUTS): the initial step size comes from
    :func:`~ppltk.mcmc.find_reasonable_step_size` (Stan's heuristic)."""

    def tune_step_size(self, state, logdensity_and_grad, params, generator):
        eps = find_reasonable_step_size(state, params, logdensity_and_grad, generator)
        return Params(eps, params.inverse_mass)


class HMC(HamiltonianKernel):
    """Hamiltonian Monte Carlo with a fixed trajectory of ``num_steps`` leapfrog steps.

    Parameters
    ----------
    num_steps
        Leapfrog steps per transition (one batched log-density call each).
    jitter
        Relative step-size jitter :math:`j \\in [0, 1)`.
    max_delta_energy
        Energy error above which a transition counts as divergent.
    """

    name = "hmc"
    stat_names = ("lp", "accept_prob", "step_size", "n_steps", "diverging", "energy")

    def __init__(self, num_steps: int = 10, jitter: float = 0.0, max_delta_energy: float = 1000.0):
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ArgumentError(
                f"Expected `num_steps` to be a positive int, but found {num_steps!r}"
            )
        if not 0.0 <= jitter < 1.0:
            raise ArgumentError(f"Expected `jitter` in [0, 1), but found {jitter!r}")
        self.num_steps = num_steps
        self.jitter = float(jitter)
        self.max_delta_energy = float(max_delta_energy)

    def __repr__(self) -> str:
        return f"HMC(num_steps={self.num_steps}, jitter={self.jitter})"

    def step(
        self,
        state: MCMCState,
        logdensity_and_grad: LogDensityFn,
        params: Params,
        generator: torch.Generator,
    ) -> tuple[MCMCState, dict[str, torch.Tensor]]:
        """One HMC transition for every chain."""
        minv = params.inverse_mass
        eps = params.step_size
        if self.jitter > 0:
            u = torch.rand(eps.shape, generator=generator, dtype=eps.dtype, device=eps.device)
            eps = eps * (1.0 + self.jitter * (2.0 * u - 1.0))
        p = sample_momentum(params, state.position, generator)
        h0 = -state.lp + kinetic_energy(p, minv)
        new = state
        for _ in range(self.num_steps):
            new, p = leapfrog(new, p, eps, minv, logdensity_and_grad)
        delta = -new.lp + kinetic_energy(p, minv) - h0
        delta = torch.where(torch.isnan(delta), torch.full_like(delta, math.inf), delta)
        diverging = delta > self.max_delta_energy
        accept_prob = torch.exp(-delta).clamp(max=1.0)
        u = torch.rand(delta.shape, generator=generator, dtype=delta.dtype, device=delta.device)
        accept = (torch.log(u) < -delta) & ~diverging
        out = new.select(accept, state)
        n_steps = torch.full_like(state.lp, self.num_steps, dtype=torch.long)
        info = {
            "lp": out.lp,
            "accept_prob": accept_prob,
            "step_size": eps,
            "n_steps": n_steps,
            "diverging": diverging,
            "energy": h0,
        }
        return out, info
