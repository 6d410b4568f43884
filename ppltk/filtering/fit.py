r"""Least-squares fits of the linear-Gaussian pieces used by the filters.

* State dynamics :math:`z_t = A z_{t-1} + \eta_t`, :math:`\eta_t \sim N(0, \Gamma)`:
  regress :math:`z_t` on :math:`z_{t-1}` (the direction matters: rows are consecutive states).
* Stationary covariance :math:`S = A S A^\top + \Gamma` (discrete Lyapunov equation).
* Linear observation :math:`x_t = H z_t + b + \varepsilon_t`,
  :math:`\varepsilon_t \sim N(0, R)`: regress :math:`x_t` on :math:`[z_t, 1]`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch

from ppltk.errors import ArgumentError, NotPositiveDefiniteError, ShapeError
from ppltk.filtering._checks import as_float_tensor, check_training_pair

__all__ = [
    "StateDynamics",
    "LinearObservation",
    "fit_state_dynamics",
    "stationary_covariance",
    "fit_linear_observation",
    "PoissonObservation",
    "fit_poisson_observation",
]


class StateDynamics(NamedTuple):
    """Fitted AR(1) state dynamics: ``A [d, d]``, ``Gamma [d, d]``, stationary ``S [d, d]``."""

    A: torch.Tensor
    Gamma: torch.Tensor
    S: torch.Tensor


class LinearObservation(NamedTuple):
    """Fitted linear observation model ``x = H z + b + N(0, R)``."""

    H: torch.Tensor
    b: torch.Tensor
    R: torch.Tensor


def _residual_cov(residuals: torch.Tensor, num_params: int) -> torch.Tensor:
    dof = residuals.shape[0] - num_params
    if dof < 1:
        raise ArgumentError(
            f"Expected more rows than fitted parameters ({num_params}), but found "
            f"{residuals.shape[0]} rows"
        )
    cov = residuals.mT @ residuals / dof
    return 0.5 * (cov + cov.mT)


def fit_state_dynamics(Z, stationary: str = "lyapunov") -> StateDynamics:
    r"""Fit :math:`A, \Gamma` by least squares on consecutive states and derive :math:`S`.

    .. math::
        \hat A = \arg\min_A \sum_t \lVert z_t - A z_{t-1} \rVert^2, \qquad
        \hat\Gamma = \frac{1}{T-1-d} \sum_t (z_t - \hat A z_{t-1})(z_t - \hat A z_{t-1})^\top.

    Parameters
    ----------
    Z
        States ``[T, d]`` (one trajectory) or ``[B, T, d]`` (independent trajectories, pooled).
    stationary
        ``"lyapunov"``: :math:`S` solves :math:`S = A S A^\top + \Gamma`
        (:func:`scipy.linalg.solve_discrete_lyapunov`); ``"empirical"``: the sample second
        moment of ``Z``.
    """
    Z = as_float_tensor(Z, "Z")
    if Z.dim() not in (2, 3) or Z.shape[-2] < 3:
        raise ShapeError(f"Expected `Z` of shape [T, d] or [B, T, d], but found {tuple(Z.shape)}")
    if not torch.isfinite(Z).all():
        raise ArgumentError("Expected `Z` to be finite training data, but found NaN/inf entries")
    d = Z.shape[-1]
    prev = Z[..., :-1, :].reshape(-1, d)
    nxt = Z[..., 1:, :].reshape(-1, d)
    # z_t^T = z_{t-1}^T A^T  =>  A^T = lstsq(prev, nxt)
    A = torch.linalg.lstsq(prev, nxt).solution.mT
    Gamma = _residual_cov(nxt - prev @ A.mT, d)
    if stationary == "lyapunov":
        S = stationary_covariance(A, Gamma)
    elif stationary == "empirical":
        flat = Z.reshape(-1, d)
        S = flat.mT @ flat / flat.shape[0]
    else:
        raise ArgumentError(
            f"Expected `stationary` in ('lyapunov', 'empirical'), but found {stationary!r}"
        )
    return StateDynamics(A, Gamma, S)


def stationary_covariance(A: torch.Tensor, Gamma: torch.Tensor) -> torch.Tensor:
    r"""Solve :math:`S = A S A^\top + \Gamma` for the stationary state covariance.

    Raises :class:`NotPositiveDefiniteError` when :math:`A` is not stable (spectral radius
    :math:`\ge 1`), where no stationary distribution exists.
    """
    A_np = A.detach().cpu().double().numpy()
    radius = float(np.max(np.abs(np.linalg.eigvals(A_np))))
    if radius >= 1.0:
        raise NotPositiveDefiniteError(
            f"Expected a stable `A` (spectral radius < 1) for a stationary covariance, but "
            f"found spectral radius {radius:.4g}"
        )
    S = scipy.linalg.solve_discrete_lyapunov(A_np, Gamma.detach().cpu().double().numpy())
    S = torch.as_tensor(S, dtype=A.dtype, device=A.device)
    return 0.5 * (S + S.mT)


def fit_linear_observation(X, Z, offset: bool = True) -> LinearObservation:
    r"""Fit :math:`x = H z + b + \varepsilon` by least squares on paired rows.

    ``offset=False`` fixes :math:`b = 0` (regression through the origin, the textbook
    neural-decoding KF of Wu et al. 2006 on centred data; :math:`R` then has
    :math:`T - d` degrees of freedom).

    .. math::
        [\hat H, \hat b] = \arg\min \sum_t \lVert x_t - H z_t - b \rVert^2, \qquad
        \hat R = \frac{1}{T - d - 1}\sum_t \hat\varepsilon_t \hat\varepsilon_t^\top.

    Parameters
    ----------
    X
        Observations ``[T, m]``.
    Z
        States ``[T, d]``.
    """
    X, Z = check_training_pair(X, Z)
    design = torch.cat([Z, torch.ones_like(Z[:, :1])], dim=-1) if offset else Z
    coef = torch.linalg.lstsq(design, X).solution  # [d (+ 1), m]
    if offset:
        H, b = coef[:-1].mT, coef[-1]
    else:
        H, b = coef.mT, torch.zeros(X.shape[-1], dtype=X.dtype, device=X.device)
    R = _residual_cov(X - design @ coef, design.shape[-1])
    return LinearObservation(H, b, R)


class PoissonObservation(NamedTuple):
    """Fitted log-linear rate model ``E[x | z] = exp(W z + c)`` with residual covariance ``R``."""

    W: torch.Tensor
    c: torch.Tensor
    R: torch.Tensor

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """Expected observation ``[..., m]`` at states ``z [..., d]``."""
        return torch.exp(z @ self.W.mT + self.c)

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """Jacobian ``[..., m, d]`` of :meth:`mean`: ``diag(exp(W z + c)) W``."""
        return self.mean(z).unsqueeze(-1) * self.W


def fit_poisson_observation(X, Z, iterations: int = 25, ridge: float = 1e-6) -> PoissonObservation:
    r"""Fit a Poisson GLM :math:`x_{ti} \sim \text{Poisson}(\exp(w_i^\top z_t + c_i))` per channel.

    Newton's method on the concave log-likelihood, all channels at once:

    .. math::
        \beta_i \leftarrow \beta_i + (D^\top \operatorname{diag}(\lambda_i) D + \epsilon I)^{-1}
        D^\top (x_i - \lambda_i), \qquad D = [Z, 1].

    ``R`` is the diagonal of the residual variances, a constant Gaussian noise for the
    EKF/UKF baselines.
    """
    X, Z = check_training_pair(X, Z)
    if (X < 0).any():
        raise ArgumentError("Expected non-negative counts in `X`, but found negative entries")
    design = torch.cat([Z, torch.ones_like(Z[:, :1])], -1)  # [T, d + 1]
    beta = torch.zeros(X.shape[1], design.shape[1], dtype=X.dtype, device=X.device)
    beta[:, -1] = torch.log(X.mean(0).clamp_min(1e-3))
    eye = ridge * torch.eye(design.shape[1], dtype=X.dtype, device=X.device)
    for _ in range(iterations):
        rate = torch.exp(design @ beta.mT)  # [T, m]
        grad = (X - rate).mT @ design  # [m, d + 1]
        hess = torch.einsum("tm,tj,tk->mjk", rate, design, design) + eye
        beta = beta + torch.linalg.solve(hess, grad.unsqueeze(-1)).squeeze(-1)
    W, c = beta[:, :-1].contiguous(), beta[:, -1].contiguous()
    resid = X - torch.exp(Z @ W.mT + c)
    return PoissonObservation(W, c, torch.diag_embed(resid.pow(2).mean(0).clamp_min(1e-6)))
