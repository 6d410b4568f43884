r"""The one Gaussian stack (core layer): shared by the Kalman family, the DKF, the SMC models,
proposals and Kalman reference, and the SDE solvers.

* :func:`log_prob` — :math:`\log N(r; 0, LL^\top)` by a triangular solve, batched;
* :func:`cholesky_or_zero` — a Cholesky factor that also accepts an all-zero (noise-free)
  covariance;
* :func:`psd_sqrt` — a factor :math:`L` with :math:`LL^\top = \Sigma` for positive
  *semi*-definite (possibly singular) :math:`\Sigma`, by one eigendecomposition;
* :class:`GaussianState`, :func:`predict_linear`, :func:`update_with_gain` (Joseph form),
  :func:`condition`, :func:`mask_missing`, :func:`rts_step_cross` / :func:`rts_smooth` — the
  Kalman filter and smoother steps on a leading batch of independent streams (means
  ``[..., d]``, covariances ``[..., d, d]``), with Cholesky solves and never explicit inverses
  of innovation covariances, so results stay symmetric positive definite under rounding.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "GaussianState",
    "cholesky_or_zero",
    "condition",
    "expand_state",
    "log_prob",
    "mask_missing",
    "matvec",
    "predict_linear",
    "psd_sqrt",
    "rts_smooth",
    "rts_step_cross",
    "symmetrize",
    "update_with_gain",
]

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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Kalman update of :math:`x \sim N(m, P)` on :math:`y = Cx + \varepsilon`,
    :math:`\varepsilon \sim N(0, R)`: :math:`S = CPC^\top + R`, :math:`K = PC^\top S^{-1}`,
    :math:`m' = m + K(y - Cm)`, :math:`P'` by the Joseph form (:func:`update_with_gain`).

    Returns ``(m', P', log N(y; Cm, S))``.
    """
    prior = GaussianState(mean, cov)
    cross = cov @ C.mT
    innov = C @ cross + R
    post, log_lik = update_with_gain(prior, y, matvec(C, mean), cross, innov, H=C, R=R)
    return post.mean, post.cov, log_lik


class GaussianState(NamedTuple):
    """Mean ``[..., d]`` and covariance ``[..., d, d]`` of a Gaussian belief."""

    mean: torch.Tensor
    cov: torch.Tensor


def symmetrize(matrix: torch.Tensor) -> torch.Tensor:
    """Return :math:`(M + M^\top)/2`."""
    return 0.5 * (matrix + matrix.mT)


def matvec(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Batched matrix-vector product ``matrix @ vector`` with broadcasting.

    An unbatched ``matrix [k, d]`` is applied to all vectors with one GEMM.
    """
    if matrix.dim() == 2:
        return vector @ matrix.mT
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def predict_linear(state: GaussianState, A: torch.Tensor, Gamma: torch.Tensor) -> GaussianState:
    r"""Linear-Gaussian prediction.

    .. math:: \nu = A\mu, \qquad M = A \Sigma A^\top + \Gamma.

    Preserves Gaussianity exactly: if :math:`z_{t-1} \sim N(\mu, \Sigma)` and
    :math:`z_t = A z_{t-1} + \eta`, :math:`\eta \sim N(0, \Gamma)`, then
    :math:`z_t \sim N(\nu, M)`.
    """
    nu = matvec(A, state.mean)
    M = symmetrize(A @ state.cov @ A.mT + Gamma)
    return GaussianState(nu, M)


def update_with_gain(
    prior: GaussianState,
    x: torch.Tensor,
    x_pred: torch.Tensor,
    cross_cov: torch.Tensor,
    innov_cov: torch.Tensor,
    H: torch.Tensor | None = None,
    R: torch.Tensor | None = None,
) -> tuple[GaussianState, torch.Tensor]:
    r"""Kalman measurement update from the first two moments of the predicted observation.

    With innovation :math:`e = x - \hat x`, innovation covariance :math:`S` (``innov_cov``),
    cross covariance :math:`C = \operatorname{Cov}(z, x)` (``cross_cov``, ``[..., d, m]``):

    .. math::
        K = C S^{-1}, \qquad \mu = \nu + K e,

    and the covariance either by the Joseph form (when the linearised ``H`` and ``R`` are
    given; exact for any gain and PSD by construction)

    .. math:: \Sigma = (I - K H) M (I - K H)^\top + K R K^\top,

    or by :math:`\Sigma = M - K S K^\top` (unscented filter). Returns the posterior and
    the log-likelihood :math:`\log N(x; \hat x, S)` ``[...]``.
    """
    L = torch.linalg.cholesky(innov_cov)
    e = x - x_pred
    # K^T = S^{-1} C^T  (Cholesky solve, S symmetric)
    K = torch.cholesky_solve(cross_cov.mT, L).mT
    mean = prior.mean + matvec(K, e)
    if H is not None and R is not None:
        eye = torch.eye(prior.mean.shape[-1], dtype=prior.mean.dtype, device=prior.mean.device)
        I_KH = eye - K @ H
        cov = I_KH @ prior.cov @ I_KH.mT + K @ R @ K.mT
    else:
        cov = prior.cov - K @ innov_cov @ K.mT
    if L.dim() == 2:  # one factor for every stream: a single solve with many right-hand sides
        flat = e.reshape(-1, e.shape[-1]).mT
        white = torch.linalg.solve_triangular(L, flat, upper=False).mT.reshape(e.shape)
    else:
        white = torch.linalg.solve_triangular(L, e.unsqueeze(-1), upper=False).squeeze(-1)
    log_det = 2.0 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    m = x.shape[-1]
    loglik = -0.5 * (white.pow(2).sum(-1) + log_det + m * math.log(2.0 * math.pi))
    return GaussianState(mean, symmetrize(cov)), loglik


def expand_state(
    mean: torch.Tensor, cov: torch.Tensor, batch_shape: tuple[int, ...]
) -> GaussianState:
    """The belief ``N(mean [d], cov [d, d])`` broadcast (as views) to ``batch_shape`` streams."""
    d = mean.shape[-1]
    return GaussianState(mean.expand(*batch_shape, d), cov.expand(*batch_shape, d, d))


def mask_missing(
    observed: torch.Tensor,
    posterior: GaussianState,
    prior: GaussianState,
    loglik: torch.Tensor,
) -> tuple[GaussianState, torch.Tensor]:
    """Keep the prior in streams whose observation row is missing.

    ``loglik [...]`` (a log-likelihood, or any per-stream value such as a boolean flag) is
    zeroed there.
    """
    mean = torch.where(observed.unsqueeze(-1), posterior.mean, prior.mean)
    cov = torch.where(observed[..., None, None], posterior.cov, prior.cov)
    return GaussianState(mean, cov), torch.where(observed, loglik, torch.zeros_like(loglik))


def rts_step_cross(
    filtered: GaussianState,
    predicted_next: GaussianState,
    smoothed_next: GaussianState,
    cross: torch.Tensor,
) -> GaussianState:
    r"""One backward smoothing step from the cross covariance.

    :math:`C = \operatorname{Cov}(z_t, z_{t+1} \mid x_{1:t})`:

    .. math::
        G = C M_{t+1}^{-1}, \quad
        \mu^s_t = \mu_t + G(\mu^s_{t+1} - \nu_{t+1}), \quad
        \Sigma^s_t = \Sigma_t + G(\Sigma^s_{t+1} - M_{t+1}) G^\top.

    With the linearised (EKF) or unscented (UKF) :math:`C` it is the extended or unscented
    RTS smoother.
    """
    L = torch.linalg.cholesky(predicted_next.cov)
    # G^T = M^{-1} C^T
    G = torch.cholesky_solve(cross.mT, L).mT
    mean = filtered.mean + matvec(G, smoothed_next.mean - predicted_next.mean)
    cov = filtered.cov + G @ (smoothed_next.cov - predicted_next.cov) @ G.mT
    return GaussianState(mean, symmetrize(cov))


def rts_smooth(
    filtered: list[GaussianState], predicted: list[GaussianState], crosses: list[torch.Tensor]
) -> list[GaussianState]:
    r"""The backward pass: :func:`rts_step_cross` from the last step back to the first.

    ``filtered[t]`` is :math:`p(z_t \mid x_{1:t})`, ``predicted[t]`` is
    :math:`p(z_t \mid x_{1:t-1})` and ``crosses[t]`` is
    :math:`\operatorname{Cov}(z_{t-1}, z_t \mid x_{1:t-1})` (entry 0 unused). Returns
    :math:`p(z_t \mid x_{1:T})` for every ``t``. For a linear model
    (``crosses[t] = \Sigma_{t-1} A^\top``) it is the exact Rauch–Tung–Striebel smoother.
    """
    smoothed = [filtered[-1]]
    for t in range(len(filtered) - 2, -1, -1):
        smoothed.append(rts_step_cross(filtered[t], predicted[t + 1], smoothed[-1], crosses[t + 1]))
    return smoothed[::-1]
