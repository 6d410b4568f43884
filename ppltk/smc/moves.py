r"""Rejuvenation moves: MCMC kernels that leave the current target invariant.

After resampling, :math:`x^i \leftarrow K^k(x^i, \cdot)` with :math:`\pi K = \pi` keeps an
equally weighted population targeting :math:`\pi` on target (resample-move, Gilks & Berzuini,
2001), while breaking up the duplicates resampling made. Any :mod:`ppltk.mcmc` kernel works
(``init``/``step``/``default_params`` over flat ``[C, D]`` positions, one chain per particle).
The proposal scale is set from the population itself (the weighted particle covariance), which
is allowed because it is fixed for the duration of the move.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["mcmc_move", "population_params", "logdensity_with_grad"]


def logdensity_with_grad(log_density: Callable[[torch.Tensor], torch.Tensor]):
    """Wrap ``log_density(z [C, D]) -> [C]`` as ``logdensity_and_grad`` (autograd)."""

    def fn(z: torch.Tensor):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lp = log_density(z)
            (grad,) = torch.autograd.grad(lp.sum(), z, allow_unused=True)
        return lp.detach(), torch.zeros_like(z) if grad is None else grad.detach()

    return fn


def population_params(kernel, positions: torch.Tensor, scale: float | None = None):
    """Kernel parameters whose metric is the particles' (diagonal) variance.

    ``scale`` overrides the step size (default: the kernel's own default for random-walk MH,
    :math:`2.38/\\sqrt D`; :math:`D^{-1/4}` for gradient kernels, the optimal HMC order in a
    whitened metric).
    """
    params = kernel.default_params(positions)
    if scale is None and getattr(kernel, "name", "mh") != "mh":
        scale = positions.shape[-1] ** -0.25
    var = positions.var(0, keepdim=True).clamp_min(1e-12).expand_as(positions)
    params.inverse_mass = var.clone()
    if scale is not None:
        params.step_size = torch.full_like(params.step_size, scale)
    return params


def mcmc_move(
    kernel,
    logdensity_and_grad,
    positions: torch.Tensor,
    num_steps: int,
    generator: torch.Generator,
    params=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Apply ``num_steps`` kernel transitions to every particle.

    Preserves: if ``positions [N, D]`` are draws from :math:`\pi \propto
    \exp(\text{logdensity})`, so are the returned ones. Returns ``(positions, mean acceptance
    probability [N])``.
    """
    params = population_params(kernel, positions) if params is None else params
    state = kernel.init(positions, logdensity_and_grad)
    accept = torch.zeros(positions.shape[0], dtype=positions.dtype, device=positions.device)
    for _ in range(num_steps):
        state, info = kernel.step(state, logdensity_and_grad, params, generator)
        accept = accept + info["accept_prob"] / num_steps
    return state.position, accept
