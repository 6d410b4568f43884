r"""Rejuvenation moves: MCMC kernels that leave the current target invariant.

After resampling, :math:`x^i \leftarrow K^k(x^i, \cdot)` with :math:`\pi K = \pi` keeps an
equally weighted population targeting :math:`\pi` on target (resample-move, Gilks & Berzuini,
2001), while breaking up the duplicates resampling made. Any :mod:`ppltk.mcmc` kernel works
(``init``/``step``/``default_params`` over flat ``[C, D]`` positions, one chain per particle).
The metric is set from the population itself — the weighted particle covariance
:math:`\hat\Sigma = \sum_i W^i (x^i - \bar x)(x^i - \bar x)^\top`, full by default — which is
allowed because it is fixed for the duration of the move; random-walk MH then proposes
:math:`N(x, (2.38^2/D)\,\hat\Sigma)` (Roberts & Rosenthal 2001; what ``particles`` uses).
Gradient-free kernels (``kernel.name == "mh"`` or ``kernel.uses_gradient is False``) never
compute gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "decorrelation_stop",
    "mcmc_move",
    "population_params",
    "weighted_covariance",
    "logdensity_with_grad",
    "uses_gradient",
]


def uses_gradient(kernel) -> bool:
    """Whether ``kernel`` needs the log-density's gradient (random-walk kernels do not)."""
    flag = getattr(kernel, "uses_gradient", None)
    return bool(flag) if flag is not None else getattr(kernel, "name", "") not in ("mh", "pmmh")


def logdensity_with_grad(log_density: Callable[[torch.Tensor], torch.Tensor]):
    """Wrap ``log_density(z [C, D]) -> [C]`` as ``logdensity_and_grad`` (autograd)."""

    def fn(z: torch.Tensor):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lp = log_density(z)
            (grad,) = torch.autograd.grad(lp.sum(), z, allow_unused=True)
        return lp.detach(), torch.zeros_like(z) if grad is None else grad.detach()

    return fn


def logdensity_without_grad(log_density: Callable[[torch.Tensor], torch.Tensor]):
    """Wrap ``log_density`` as ``logdensity_and_grad`` with a zero gradient (no autograd)."""

    def fn(z: torch.Tensor):
        with torch.no_grad():
            lp = log_density(z)
        return lp, torch.zeros_like(z)

    return fn


def weighted_covariance(x: torch.Tensor, log_weights: torch.Tensor | None = None) -> torch.Tensor:
    r"""Weighted covariance :math:`\sum_i W^i (x^i - \bar x)(x^i - \bar x)^\top` of
    ``x [N, D]`` (equal weights when ``log_weights`` is ``None``): ``torch.cov`` with
    ``aweights`` and no bias correction, in float64."""
    weights = None if log_weights is None else torch.softmax(log_weights.double(), -1)
    cov = torch.cov(x.double().T, correction=0, aweights=weights)
    return cov.reshape(x.shape[-1], x.shape[-1]).to(x.dtype)


def population_params(
    kernel,
    positions: torch.Tensor,
    log_weights: torch.Tensor | None = None,
    scale: float | None = None,
    dense: bool = True,
):
    r"""Kernel parameters whose metric is the particles' weighted covariance.

    ``dense=True`` (default) uses the full covariance (plus a ridge of :math:`10^{-9}` times
    its mean variance), ``False`` its diagonal. ``scale`` overrides the step size (default:
    the kernel's own default for random-walk MH, :math:`2.38/\sqrt D`; :math:`D^{-1/4}` for
    gradient kernels, the optimal HMC order in a whitened metric).
    """
    num, dim = positions.shape
    params = kernel.default_params(positions)
    if scale is None and uses_gradient(kernel):
        scale = dim**-0.25
    cov = weighted_covariance(positions, log_weights)
    var = torch.diagonal(cov).clamp_min(1e-12)
    if dense and dim > 1:
        ridge = 1e-9 * var.mean() + 1e-12
        eye = torch.eye(dim, dtype=cov.dtype, device=cov.device)
        params.inverse_mass = (cov + ridge * eye).expand(num, dim, dim).clone()
    else:
        params.inverse_mass = var.expand(num, dim).clone()
    if scale is not None:
        params.step_size = torch.full_like(params.step_size, scale)
    return params


def mcmc_move(
    kernel,
    log_density: Callable,
    positions: torch.Tensor,
    num_steps: int,
    generator: torch.Generator,
    params=None,
    *,
    with_grad: bool | None = None,
    return_path: bool = False,
    stop: Callable | None = None,
):
    r"""Apply ``num_steps`` kernel transitions to every particle.

    ``log_density`` is ``z [N, D] -> lp [N]``, or ``z -> (lp, grad)`` with ``with_grad=True``
    (e.g. from one captured model evaluation). Preserves: if ``positions [N, D]`` are draws
    from :math:`\pi \propto \exp(\text{logdensity})`, so is the returned state. Returns
    ``(state, info)``: the kernel's full final state (position, log-density, gradient) and
    ``info["accept_prob"]`` ``[N]``, the mean acceptance probability; with
    ``return_path=True`` also ``info["path"]`` ``[num_steps, N, D]``, every intermediate
    position (the waste-free SMC population, Dau & Chopin 2022). ``stop(k, state)`` (optional)
    ends the move early after transition ``k`` when it returns ``True``; ``info["num_steps"]``
    is the number of transitions made.
    """
    fn = _as_logdensity_and_grad(kernel, log_density, with_grad)
    params = population_params(kernel, positions) if params is None else params
    state = kernel.init(positions, fn)
    accept = torch.zeros(positions.shape[0], dtype=positions.dtype, device=positions.device)
    path, done = [], 0
    for k in range(num_steps):
        state, info = kernel.step(state, fn, params, generator)
        accept, done = accept + info["accept_prob"], k + 1
        if return_path:
            path.append(state.position)
        if stop is not None and stop(done, state):
            break
    out = {"accept_prob": accept / max(done, 1), "num_steps": done}
    if return_path:
        out["path"] = torch.stack(path)
    return state, out


def _as_logdensity_and_grad(kernel, log_density, with_grad):
    if with_grad:
        return log_density
    if uses_gradient(kernel):
        return logdensity_with_grad(log_density)
    return logdensity_without_grad(log_density)


def decorrelation_stop(start: torch.Tensor, cov: torch.Tensor, target: float = 0.1) -> Callable:
    r"""``stop`` rule for :func:`mcmc_move`: the move has gone far enough when the particles'
    mean squared Mahalanobis jump from ``start`` (metric ``cov``, ``[D, D]`` or ``[D]``)
    reaches :math:`2D(1 - \rho)` with :math:`\rho =` ``target``.

    For a chain at stationarity :math:`E\|x_k - x_0\|^2_{\Sigma^{-1}} = 2D(1 - \bar\rho_k)`
    where :math:`\bar\rho_k` is the mean lag-:math:`k` autocorrelation of the whitened
    coordinates, so this stops once the particles are nearly independent of where the move
    started (random-walk MH needs :math:`O(D)` steps for that, Roberts & Rosenthal 2001).
    """
    dim = start.shape[-1]
    if cov.ndim == 2:
        chol = torch.linalg.cholesky(cov)

        def jump(x):
            white = torch.linalg.solve_triangular(chol, (x - start).mT, upper=False)
            return white.square().sum(0).mean()
    else:

        def jump(x):
            return ((x - start).square() / cov).sum(-1).mean()

    threshold = 2 * dim * (1 - target)
    return lambda k, state: bool(jump(state.position) >= threshold)
