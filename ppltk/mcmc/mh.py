"""Batched random-walk Metropolis–Hastings.

Proposal :math:`z' = z + \\epsilon L \\xi`, :math:`\\xi \\sim \\mathcal N(0, I)`, with
:math:`L L^\\top = M^{-1}` the (adapted) metric, so the proposal covariance is
:math:`\\epsilon^2 M^{-1}`.  The proposal is symmetric, so accepting with probability
:math:`\\min(1, \\pi(z')/\\pi(z))` leaves :math:`\\pi` invariant.  The default target acceptance
for step-size adaptation is 0.234 (Roberts, Gelman & Gilks 1997).
"""

from __future__ import annotations

import math

import torch

from ppltk.mcmc._base import Kernel, LogDensityFn, MCMCState, Params, default_params

__all__ = ["RandomWalkMH"]


class RandomWalkMH(Kernel):
    """Random-walk Metropolis–Hastings with a Gaussian proposal scaled by the metric."""

    name = "mh"
    target_accept = 0.234
    stat_names = ("lp", "accept_prob", "step_size", "diverging")

    def __repr__(self) -> str:
        return "RandomWalkMH()"

    def default_params(self, position: torch.Tensor, dense: bool = False) -> Params:
        """Step size :math:`2.38/\\sqrt{D}` (optimal scaling for Gaussian targets)."""
        return default_params(position, dense, step_size=2.38 / math.sqrt(position.shape[-1]))

    def step(
        self,
        state: MCMCState,
        logdensity_and_grad: LogDensityFn,
        params: Params,
        generator: torch.Generator,
    ) -> tuple[MCMCState, dict[str, torch.Tensor]]:
        """One Metropolis–Hastings transition for every chain."""
        z = state.position
        xi = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        minv = params.inverse_mass
        if minv.dim() == 3:
            noise = torch.matmul(torch.linalg.cholesky(minv), xi.unsqueeze(-1)).squeeze(-1)
        else:
            noise = xi * minv.sqrt()
        z_new = z + params.step_size.unsqueeze(-1) * noise
        lp, grad = logdensity_and_grad(z_new)
        proposal = MCMCState(z_new, lp.detach(), grad.detach())
        log_ratio = proposal.lp - state.lp
        log_ratio = torch.where(torch.isnan(log_ratio), -math.inf, log_ratio)
        u = torch.rand(lp.shape, generator=generator, dtype=z.dtype, device=z.device)
        accept = torch.log(u) < log_ratio
        out = proposal.select(accept, state)
        info = {
            "lp": out.lp,
            "accept_prob": torch.exp(log_ratio.clamp(max=0.0)),
            "step_size": params.step_size,
            "diverging": torch.zeros_like(accept),
        }
        return out, info
