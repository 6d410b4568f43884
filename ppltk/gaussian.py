r"""Gaussian building blocks shared by the filters, SMC proposals and SDE solvers (core layer).

* :func:`log_prob` — :math:`\log N(r; 0, LL^\top)` by a triangular solve, batched;
* :func:`cholesky_or_zero` — a Cholesky factor that also accepts an all-zero (noise-free)
  covariance;
* :func:`psd_sqrt` — a factor :math:`L` with :math:`LL^\top = \Sigma` for positive
  *semi*-definite (possibly singular) :math:`\Sigma`, by one eigendecomposition;
* :func:`condition` — the Kalman update of :math:`x \sim N(m, P)` on :math:`y = Cx + N(0, R)`:
  gain, posterior moments and the marginal likelihood of :math:`y`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["log_prob", "cholesky_or_zero", "psd_sqrt", "condition"]

_LOG_2PI = math.log(2 * math.pi)


def log_prob(residual: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    r""":math:`\log N(r; 0, L L^\top)` for ``residual [..., m]`` and ``scale_tril [..., m, m]``
    (batch dims broadcast).

    A zero-variance (singular) ``scale_tril`` gives :math:`-\infty` off the support
    (:math:`r \ne 0`), and :math:`+\infty` exactly on it (a point mass has no density).
    """
    diag = torch.diagonal(scale_tril, dim1=-2, dim2=-1)
    if bool((diag == 0).any()):
        hit = (residual == 0).all(-1)
        return torch.where(hit, math.inf, -math.inf).to(residual.dtype)
    m = residual.shape[-1]
    if scale_tril.shape == (1, 1):  # scalar observation: a division, no solve
        maha = (residual[..., 0] / scale_tril[0, 0]).square()
        return -0.5 * (maha + _LOG_2PI) - diag.abs().log().sum(-1)
    if scale_tril.ndim == 2:
        white = torch.linalg.solve_triangular(scale_tril, residual.reshape(-1, m).mT, upper=False)
        maha = white.square().sum(0).reshape(residual.shape[:-1])
        return -0.5 * (maha + m * _LOG_2PI) - diag.abs().log().sum(-1)
    batch = torch.broadcast_shapes(residual.shape[:-1], scale_tril.shape[:-2])
    res = residual.expand(batch + residual.shape[-1:]).unsqueeze(-1)
    tril = scale_tril.expand(batch + scale_tril.shape[-2:])
    white = torch.linalg.solve_triangular(tril, res, upper=False).squeeze(-1)
    return -0.5 * (white.square().sum(-1) + m * _LOG_2PI) - diag.abs().log().sum(-1)


def cholesky_or_zero(cov: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of ``cov``; an all-zero matrix (a noise-free component) gives zeros."""
    if bool((cov == 0).all()):
        return torch.zeros_like(cov)
    return torch.linalg.cholesky(cov)


def psd_sqrt(cov: torch.Tensor) -> torch.Tensor:
    r"""A factor :math:`L` with :math:`L L^\top = \Sigma` for PSD (possibly singular)
    ``cov [..., K, K]``: :math:`L = V \operatorname{diag}(\sqrt{\max(\lambda, 0)})` from
    :math:`\Sigma = V \operatorname{diag}(\lambda) V^\top` (symmetrised first)."""
    evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.mT))
    return evecs * evals.clamp_min(0).sqrt().unsqueeze(-2)


def condition(
    mean: torch.Tensor, cov: torch.Tensor, C: torch.Tensor, R: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Kalman update of :math:`x \sim N(m, P)` on :math:`y = Cx + \varepsilon`,
    :math:`\varepsilon \sim N(0, R)` (unbatched ``m [d]``, ``P [d, d]``):

    .. math:: S = CPC^\top + R,\quad K = PC^\top S^{-1},\quad
              m' = m + K(y - Cm),\quad P' = P - KSK^\top,

    returns ``(m', P', K, log N(y; Cm, S))``.
    """
    S = C @ cov @ C.T + R
    L = torch.linalg.cholesky(S)
    r = y - C @ mean
    K = torch.cholesky_solve(C @ cov, L).T
    return mean + K @ r, cov - K @ S @ K.T, K, log_prob(r, L)
