r"""The Kalman filter and Rauch–Tung–Striebel smoother, batched over independent streams.

Model (``d`` states, ``m`` observations, time ``t = 1..T``):

.. math::
    z_0 \sim N(m_0, P_0), \quad z_t = A z_{t-1} + \eta_t,\ \eta_t \sim N(0, \Gamma), \quad
    x_t = H z_t + b + \varepsilon_t,\ \varepsilon_t \sim N(0, R).

Each step predicts then updates (the convention of filterpy), so ``init_mean``/``init_cov``
describe :math:`z_0`, before the first observation. A row of ``X`` containing NaN is a
missing observation: that step keeps the prediction and adds nothing to the log-likelihood.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ppltk.errors import ArgumentError, NotPositiveDefiniteError
from ppltk.filtering._checks import (
    as_float_tensor,
    check_covariance,
    check_finite_output,
    check_fitted,
    check_matrix,
    check_observations,
    check_row,
    named_linalg_errors,
)
from ppltk.filtering.fit import fit_linear_observation, fit_state_dynamics
from ppltk.gaussian import (
    GaussianState,
    expand_state,
    mask_missing,
    matvec,
    predict_linear,
    rts_smooth,
    update_with_gain,
)

__all__ = ["KalmanFilter", "KalmanOutput", "kalman_update"]


class KalmanOutput(NamedTuple):
    """Everything a forward pass produces, each with a leading batch ``[...]``.

    ``means [..., T, d]``, ``covs [..., T, d, d]`` (filtered), ``pred_means``/``pred_covs``
    (one-step predictions :math:`p(z_t \\mid x_{1:t-1})`) and ``log_likelihood [...]``
    (:math:`\\log p(x_{1:T})`, missing rows excluded).
    """

    means: torch.Tensor
    covs: torch.Tensor
    pred_means: torch.Tensor
    pred_covs: torch.Tensor
    log_likelihood: torch.Tensor


def kalman_update(
    prior: GaussianState, x: torch.Tensor, H: torch.Tensor, R: torch.Tensor, b=None, missing=True
) -> tuple[GaussianState, torch.Tensor]:
    r"""Linear Kalman update (Joseph form) with NaN rows skipped.

    .. math::
        S = H M H^\top + R,\quad K = M H^\top S^{-1},\quad \mu = \nu + K(x - H\nu - b),\quad
        \Sigma = (I-KH)M(I-KH)^\top + K R K^\top.

    Returns the posterior and :math:`\log N(x; H\nu + b, S)` (zero for missing rows).
    ``missing=False`` promises that ``x`` has no NaN, which lets a covariance shared by all
    streams (shape ``[d, d]`` against means ``[..., d]``) stay shared.
    """
    x_pred = matvec(H, prior.mean) if b is None else matvec(H, prior.mean) + b
    cross = prior.cov @ H.mT
    innov = H @ cross + R
    innov = 0.5 * (innov + innov.mT)
    if not missing:
        return update_with_gain(prior, x, x_pred, cross, innov, H, R)
    observed = ~torch.isnan(x).any(-1)
    x_filled = torch.nan_to_num(x, nan=0.0)
    posterior, loglik = update_with_gain(prior, x_filled, x_pred, cross, innov, H, R)
    return mask_missing(observed, posterior, prior, loglik)


class KalmanFilter:
    r"""Linear-Gaussian Kalman filter and RTS smoother over a batch of streams.

    Parameters may carry leading batch dimensions that broadcast against the batch of
    observation streams ``X [..., T, m]``. Leave them ``None`` and call :meth:`fit` to learn
    :math:`A, \Gamma` (least squares on consecutive states), :math:`H, b, R` (least squares
    of observations on states) and :math:`z_0 \sim N(0, S)` with :math:`S` stationary.

    Parameters
    ----------
    transition_matrix, transition_cov
        :math:`A` ``[..., d, d]`` and :math:`\Gamma` ``[..., d, d]``.
    observation_matrix, observation_cov
        :math:`H` ``[..., m, d]`` and :math:`R` ``[..., m, m]``.
    observation_offset
        :math:`b` ``[..., m]`` (default zero).
    init_mean, init_cov
        :math:`m_0` ``[..., d]`` (default zero) and :math:`P_0` ``[..., d, d]``
        (default identity).

    Examples
    --------
    >>> import torch
    >>> kf = KalmanFilter(torch.eye(1) * 0.9, torch.eye(1), torch.eye(1), torch.eye(1))
    >>> means, covs = kf.filter(torch.zeros(5, 1, dtype=torch.float32))
    >>> tuple(means.shape), tuple(covs.shape)
    ((5, 1), (5, 1, 1))
    """

    state_: GaussianState | None = None

    def __init__(
        self,
        transition_matrix=None,
        transition_cov=None,
        observation_matrix=None,
        observation_cov=None,
        observation_offset=None,
        init_mean=None,
        init_cov=None,
    ) -> None:
        self.A = None
        if transition_matrix is not None:
            self._set_parameters(
                transition_matrix,
                transition_cov,
                observation_matrix,
                observation_cov,
                observation_offset,
                init_mean,
                init_cov,
            )

    def _set_parameters(self, A, Gamma, H, R, b, m0, P0) -> None:
        A = as_float_tensor(A, "transition_matrix")
        d = A.shape[-1]
        A = check_matrix(A, "transition_matrix", d, d)
        Gamma = check_matrix(as_float_tensor(Gamma, "transition_cov", A), "transition_cov", d, d)
        H = as_float_tensor(H, "observation_matrix", A)
        m = H.shape[-2] if H.dim() >= 2 else -1
        H = check_matrix(H, "observation_matrix", m, d)
        R = check_matrix(as_float_tensor(R, "observation_cov", A), "observation_cov", m, m)
        b = None if b is None else as_float_tensor(b, "observation_offset", A)
        m0 = torch.zeros(d, dtype=A.dtype, device=A.device) if m0 is None else m0
        P0 = torch.eye(d, dtype=A.dtype, device=A.device) if P0 is None else P0
        m0 = as_float_tensor(m0, "init_mean", A)
        P0 = check_matrix(as_float_tensor(P0, "init_cov", A), "init_cov", d, d)
        for cov, name in ((Gamma, "transition_cov"), (R, "observation_cov"), (P0, "init_cov")):
            check_covariance(cov, name)
        self.A, self.Gamma, self.H, self.R, self.b = A, Gamma, H, R, b
        self.init_mean, self.init_cov = m0, P0

    @classmethod
    def from_state_space(cls, ssm) -> KalmanFilter:
        r"""The Kalman filter of a :class:`ppltk.smc.LinearGaussianSSM` (inverse of
        :meth:`~ppltk.smc.LinearGaussianSSM.from_kalman`).

        The SSM observes :math:`x_0 \sim N(m_0, P_0)` directly, this filter predicts first,
        so its start is :math:`z_0 \sim N(A^{-1}m_0, A^{-1}(P_0 - \Gamma)A^{-\top})`: that
        needs an invertible :math:`A` and :math:`P_0 \succeq \Gamma`
        (:class:`~ppltk.errors.NotPositiveDefiniteError` otherwise).
        """
        A, gamma = ssm.A, ssm.Q
        try:
            m = torch.linalg.solve(A, ssm.m0.unsqueeze(-1)).squeeze(-1)
            left = torch.linalg.solve(A, ssm.P0 - gamma)
            P = torch.linalg.solve(A, left.mT).mT
        except RuntimeError as err:
            raise NotPositiveDefiniteError(
                f"Expected an invertible transition matrix A, but found: {err}"
            ) from err
        P = 0.5 * (P + P.mT)
        if bool((torch.linalg.eigvalsh(P) < -1e-10 * P.abs().max().clamp_min(1.0)).any()):
            raise NotPositiveDefiniteError(
                "Expected the state-space model's P0 - Q to be positive semi-definite (the "
                "filter's start before its first prediction), but found a negative eigenvalue"
            )
        return cls(A, gamma, ssm.C, ssm.R, None, m, P)

    @property
    def state_dim(self) -> int:
        check_fitted(self, "A")
        return self.A.shape[-1]

    @property
    def obs_dim(self) -> int:
        check_fitted(self, "A")
        return self.H.shape[-2]

    def fit(self, X, Z, *, offset: bool = True, init_cov: str = "stationary") -> KalmanFilter:
        r"""Least-squares fit of every parameter from ``X [T, m]`` and states ``Z [T, d]``.

        What it fits, and how that differs from a "textbook" least-squares decoding KF
        (Wu et al., 2006) that starts at a zero mean:

        * the observation model has an offset, :math:`x = Hz + b + \varepsilon`
          (``offset=True``); the textbook model :math:`x = Hz + \varepsilon` (``offset=False``)
          assumes inputs centred beforehand. With inputs centred on *all* the data (say
          principal components computed before the train/test split), the model without
          offset effectively uses the test-period mean of ``X``, which the offset fitted on
          training rows cannot; with a drift in baseline rates between the periods that
          alone separates the two. On stationary data the two agree to
          :math:`O(1/\sqrt{T})`;
        * the dynamics :math:`z_t = A z_{t-1} + \eta_t` have no offset, so the state is
          taken to have mean zero (true for velocities; centre ``Z`` otherwise);
        * :math:`\Gamma` and :math:`R` divide by the residual degrees of freedom
          (:math:`T - 1 - d`, :math:`T - d - 1`), not by :math:`T`;
        * :math:`z_0 \sim N(0, S)` with :math:`S = ASA^\top + \Gamma` stationary
          (``init_cov="stationary"``), i.e. the first update treats the state as a draw
          from the stationary distribution; ``init_cov="zero"`` starts at exactly
          :math:`z_0 = 0` (a zero covariance, as a filter started at rest). Either way the
          initial belief is forgotten within a few time constants of :math:`A`, so it
          changes the nRMSE of a 1,000-bin test by well under 0.01.
        """
        if init_cov not in ("stationary", "zero"):
            raise ArgumentError(
                f"Expected `init_cov` 'stationary' or 'zero', but found {init_cov!r}"
            )
        dyn = fit_state_dynamics(Z)
        obs = fit_linear_observation(X, Z, offset=offset)
        P0 = dyn.S if init_cov == "stationary" else torch.zeros_like(dyn.S)
        self._set_parameters(dyn.A, dyn.Gamma, obs.H, obs.R, obs.b, None, P0)
        return self

    def init_state(
        self, batch_shape: tuple[int, ...] = (), shared_cov: bool = False
    ) -> GaussianState:
        """The belief about :math:`z_0`, expanded to ``batch_shape`` (covariance kept
        ``[d, d]`` when ``shared_cov``)."""
        check_fitted(self, "A")
        state = expand_state(self.init_mean, self.init_cov, batch_shape)
        return state._replace(cov=self.init_cov) if shared_cov else state

    def predict_update(
        self, state: GaussianState, x: torch.Tensor, missing: bool = True
    ) -> tuple[GaussianState, GaussianState, torch.Tensor]:
        """One predict-update step from ``state``. Returns ``(posterior, prediction, loglik)``."""
        prior = predict_linear(state, self.A, self.Gamma)
        posterior, loglik = kalman_update(prior, x, self.H, self.R, self.b, missing)
        return posterior, prior, loglik

    def reset(self, batch_shape: tuple[int, ...] = ()) -> None:
        """Restart the online filter (:meth:`step`) at :math:`z_0` for ``batch_shape`` streams."""
        self.state_ = self.init_state(batch_shape)

    def step(self, x) -> GaussianState:
        """Online update with one observation row ``x [..., m]`` (NaN row: no update).

        Keeps only the current belief (O(1) memory) in ``state_``; returns it.
        """
        check_fitted(self, "A")
        x = check_row(as_float_tensor(x, "x", self.A), "x", self.obs_dim)
        if getattr(self, "state_", None) is None:
            self.reset(x.shape[:-1])
        with named_linalg_errors("innovation covariances H M H^T + R"):
            state = self.predict_update(self.state_, x)[0]
        check_finite_output(state.mean, "filtered means and covariances", state.cov)
        self.state_ = state
        return self.state_

    def _forward(self, X) -> tuple[KalmanOutput, tuple[int, ...]]:
        """Forward pass; covariances stay ``[T, d, d]`` when shared by all streams.

        They are shared when no row is missing and the parameters carry no batch dimension:
        the covariance recursion then does not depend on the data, so it runs once.
        """
        check_fitted(self, "A")
        X = check_observations(as_float_tensor(X, "X", self.A), "X", self.obs_dim)
        params = (self.A, self.Gamma, self.H, self.R, self.init_cov)
        missing = bool(torch.isnan(X).any())
        shared = not missing and all(p.dim() == 2 for p in params)
        state = self.init_state(X.shape[:-2], shared_cov=shared)
        posts, priors, total = [], [], torch.zeros((), dtype=X.dtype, device=X.device)
        with named_linalg_errors("innovation covariances H M H^T + R"):
            for t in range(X.shape[-2]):
                state, prior, loglik = self.predict_update(state, X[..., t, :], missing)
                posts.append(state)
                priors.append(prior)
                total = total + loglik
        out = KalmanOutput(
            torch.stack([s.mean for s in posts], -2),
            torch.stack([s.cov for s in posts], -3),
            torch.stack([s.mean for s in priors], -2),
            torch.stack([s.cov for s in priors], -3),
            total.expand(X.shape[:-2]),
        )
        check_finite_output(out.means, "filtered moments and log-likelihoods", out.covs, total)
        return out, X.shape[:-2]

    @staticmethod
    def _expand(covs: torch.Tensor, batch: tuple[int, ...]) -> torch.Tensor:
        return covs.expand(*batch, *covs.shape[-3:])

    def filter_full(self, X) -> KalmanOutput:
        """Forward pass over ``X [..., T, m]``; see :class:`KalmanOutput`."""
        out, batch = self._forward(X)
        return out._replace(
            covs=self._expand(out.covs, batch), pred_covs=self._expand(out.pred_covs, batch)
        )

    def filter(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """Filtered means ``[..., T, d]`` and covariances ``[..., T, d, d]``."""
        out = self.filter_full(X)
        return out.means, out.covs

    def log_likelihood(self, X) -> torch.Tensor:
        r""":math:`\log p(x_{1:T})` per stream ``[...]`` (prediction-error decomposition)."""
        return self.filter_full(X).log_likelihood

    def smooth(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        r"""RTS-smoothed means ``[..., T, d]`` and covariances of :math:`p(z_t \mid x_{1:T})`."""
        out, batch = self._forward(X)
        T = out.means.shape[-2]
        filtered = [GaussianState(out.means[..., t, :], out.covs[..., t, :, :]) for t in range(T)]
        predicted = [
            GaussianState(out.pred_means[..., t, :], out.pred_covs[..., t, :, :]) for t in range(T)
        ]
        crosses = [None] + [s.cov @ self.A.mT for s in filtered[:-1]]
        with named_linalg_errors("predicted covariances in the smoother"):
            smoothed = rts_smooth(filtered, predicted, crosses)
        means = torch.stack([s.mean for s in smoothed], -2)
        return means, self._expand(torch.stack([s.cov for s in smoothed], -3), batch)
