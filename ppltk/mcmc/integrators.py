"""Euclidean metric and the leapfrog integrator, batched over chains.

With inverse mass matrix :math:`M^{-1}` (diagonal ``[C, D]`` or dense ``[C, D, D]``) the
Hamiltonian of a chain is

.. math::
    H(z, p) = -\\log \\pi(z) + \\tfrac12 p^\\top M^{-1} p, \\qquad p \\sim \\mathcal N(0, M).

The leapfrog map below is volume preserving and reversible (with :math:`\\epsilon \\to
-\\epsilon`), which is what makes the HMC/NUTS acceptance rules leave :math:`\\pi` invariant.
"""

from __future__ import annotations

import torch

from ppltk.mcmc._base import LogDensityFn, MCMCState, Params, where

__all__ = [
    "velocity",
    "kinetic_energy",
    "sample_momentum",
    "leapfrog",
    "find_reasonable_step_size",
]


def velocity(p: torch.Tensor, inverse_mass: torch.Tensor) -> torch.Tensor:
    """:math:`M^{-1} p` (also Stan's :math:`p^\\sharp`), ``[C, D]``."""
    if inverse_mass.dim() == 3:
        return torch.matmul(inverse_mass, p.unsqueeze(-1)).squeeze(-1)
    return inverse_mass * p


def kinetic_energy(p: torch.Tensor, inverse_mass: torch.Tensor) -> torch.Tensor:
    """:math:`\\tfrac12 p^\\top M^{-1} p`, ``[C]``."""
    return 0.5 * torch.linalg.vecdot(p, velocity(p, inverse_mass))


def sample_momentum(params: Params, shape_like: torch.Tensor, generator) -> torch.Tensor:
    """Draw :math:`p \\sim \\mathcal N(0, M)` for every chain.

    Dense: with :math:`M^{-1} = L L^\\top`, :math:`p = L^{-\\top} \\xi` has covariance
    :math:`L^{-\\top} L^{-1} = M`. Diagonal: :math:`p = \\xi / \\sqrt{m^{-1}}`.
    """
    xi = torch.randn(
        shape_like.shape, generator=generator, dtype=shape_like.dtype, device=shape_like.device
    )
    minv = params.inverse_mass
    if minv.dim() == 3:
        chol = torch.linalg.cholesky(minv)
        return torch.linalg.solve_triangular(
            chol.transpose(-1, -2), xi.unsqueeze(-1), upper=True
        ).squeeze(-1)
    return xi * torch.rsqrt(minv)


def leapfrog(
    state: MCMCState,
    p: torch.Tensor,
    eps: torch.Tensor,
    inverse_mass: torch.Tensor,
    logdensity_and_grad: LogDensityFn,
) -> tuple[MCMCState, torch.Tensor]:
    """One leapfrog step of signed per-chain size ``eps [C]`` (one log-density call).

    .. math::
        p_{1/2} = p + \\tfrac{\\epsilon}{2} \\nabla \\log\\pi(z), \\quad
        z' = z + \\epsilon M^{-1} p_{1/2}, \\quad
        p' = p_{1/2} + \\tfrac{\\epsilon}{2} \\nabla \\log\\pi(z').
    """
    eps_col = eps.unsqueeze(-1)
    half = 0.5 * eps_col
    p_half = torch.addcmul(p, half, state.grad)
    z_new = torch.addcmul(state.position, eps_col, velocity(p_half, inverse_mass))
    lp, grad = logdensity_and_grad(z_new)
    lp, grad = lp.detach(), grad.detach()
    return MCMCState(z_new, lp, grad), torch.addcmul(p_half, half, grad)


def _one_step_log_accept(state, params, logdensity_and_grad, eps, generator) -> torch.Tensor:
    p = sample_momentum(params, state.position, generator)
    h0 = -state.lp + kinetic_energy(p, params.inverse_mass)
    new, p_new = leapfrog(state, p, eps, params.inverse_mass, logdensity_and_grad)
    h1 = -new.lp + kinetic_energy(p_new, params.inverse_mass)
    delta = h0 - h1
    return torch.where(torch.isnan(delta), torch.full_like(delta, -torch.inf), delta)


def find_reasonable_step_size(
    state: MCMCState,
    params: Params,
    logdensity_and_grad: LogDensityFn,
    generator: torch.Generator,
    target: float = 0.8,
    max_iter: int = 200,
) -> torch.Tensor:
    """Stan's step-size heuristic, per chain: double or halve until one leapfrog step's
    acceptance :math:`\\exp(-\\Delta H)` crosses ``target`` (chains stop independently)."""
    eps = params.step_size.clone()
    log_target = torch.log(torch.tensor(target, dtype=eps.dtype, device=eps.device))
    log_acc = _one_step_log_accept(state, params, logdensity_and_grad, eps, generator)
    direction = torch.where(log_acc > log_target, 1.0, -1.0).to(eps.dtype)
    active = torch.ones_like(eps, dtype=torch.bool)
    for _ in range(max_iter):
        trial = eps * torch.pow(2.0, direction)
        log_acc = _one_step_log_accept(state, params, logdensity_and_grad, trial, generator)
        crossed = torch.where(direction > 0, log_acc < log_target, log_acc > log_target)
        # as in Stan, a chain stops at the first step size whose acceptance crosses the target
        eps = where(active, trial, eps)
        active = active & ~crossed
        if not bool(active.any()):
            break
    # no lower floor: a chain started where the log-density is steep needs a tiny step to
    # move at all (a floor would strand it); only exact zero/underflow is excluded
    return eps.clamp(min=torch.finfo(eps.dtype).tiny, max=1e5)
