r"""Adaptive tempering: the next inverse temperature chosen by ESS bisection.

Targets :math:`\pi_\beta(z) \propto p(z)\, p(y \mid z)^\beta`, :math:`0 = \beta_0 < \dots <
\beta_K = 1`. Moving from :math:`\beta` to :math:`\beta'` reweights by
:math:`p(y \mid z)^{\beta' - \beta}`; the increment is chosen so that the conditional ESS
of these weights equals ``target_ess`` :math:`\times N` (Jasra et al. 2011), found by bisection
on :math:`\delta = \beta' - \beta`. The choice depends on the current particles, a standard
adaptive-SMC approximation (the evidence stays consistent; exact unbiasedness needs a fixed
schedule, pass ``betas=`` for that).
"""

from __future__ import annotations

import torch

from ppltk.smc.population import ess

__all__ = ["next_beta"]


def tempering_increment(log_likelihood: torch.Tensor, delta: float) -> torch.Tensor:
    r"""Log-weight increment :math:`\delta\,\ell^i`, with :math:`-\infty` kept where
    :math:`\ell^i = -\infty` (so :math:`\delta = 0` gives no NaN)."""
    return torch.where(torch.isneginf(log_likelihood), -torch.inf, delta * log_likelihood)


def next_beta(
    log_likelihood: torch.Tensor,
    beta: float,
    target_ess: float = 0.5,
    log_weights: torch.Tensor | None = None,
    iterations: int = 60,
) -> float:
    r"""Largest :math:`\beta' \le 1` with :math:`\mathrm{ESS}(\log w + (\beta'-\beta)\ell)
    \ge` ``target_ess`` :math:`\cdot N` (bisection, float64).

    ``log_likelihood`` is :math:`\ell^i = \log p(y \mid z^i)` ``[N]``; ``-inf`` entries are
    zero-weight particles.
    """
    ll = log_likelihood.double()
    logw = torch.zeros_like(ll) if log_weights is None else log_weights.double()
    n = ll.shape[-1]

    def ok(delta: float) -> bool:
        return bool(ess(logw + tempering_increment(ll, delta)) >= target_ess * n)

    if ok(1.0 - beta):
        return 1.0
    lo, hi = 0.0, 1.0 - beta
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return beta + max(lo, 1e-12)
