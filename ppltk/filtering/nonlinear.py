r"""Extended and unscented Kalman filters for nonlinear Gaussian state-space models.

.. math::
    z_t = g(z_{t-1}) + \eta_t,\ \eta_t \sim N(0, \Gamma), \qquad
    x_t = h(z_t) + \varepsilon_t,\ \varepsilon_t \sim N(0, R).

``transition`` (:math:`g`) and ``observation`` (:math:`h`) are either matrices (linear maps)
or callables mapping ``[..., d]`` to ``[..., d]`` / ``[..., m]``. The EKF differentiates a
callable with :func:`torch.func.jacrev` (one vector at a time, under :func:`torch.func.vmap`);
the UKF calls it on all sigma points at once, so it must broadcast over leading dimensions.
Both filter a batch of streams ``X [..., T, m]``; NaN rows skip the update. For linear maps
both reduce exactly to the Kalman filter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ppltk.errors import ArgumentError, ShapeError
from ppltk.filtering._checks import (
    as_float_tensor,
    check_covariance,
    check_finite_output,
    check_matrix,
    check_observations,
    check_row,
    named_linalg_errors,
)
from ppltk.gaussian import (
    GaussianState,
    expand_state,
    mask_missing,
    matvec,
    rts_smooth,
    symmetrize,
    update_with_gain,
)

__all__ = ["ExtendedKalmanFilter", "UnscentedKalmanFilter"]


def _jacobian(
    fn: Callable | torch.Tensor, z: torch.Tensor, jac: Callable | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Value ``fn(z) [..., k]`` and Jacobian ``[..., k, d]`` (a matrix is its own Jacobian)."""
    if isinstance(fn, torch.Tensor):
        return matvec(fn, z), fn.expand(*z.shape[:-1], *fn.shape[-2:])
    if jac is not None:
        return fn(z), jac(z)
    flat = z.reshape(-1, z.shape[-1])
    J = torch.func.vmap(torch.func.jacrev(fn))(flat)
    value = fn(flat)
    return value.reshape(*z.shape[:-1], -1), J.reshape(*z.shape[:-1], *J.shape[-2:])


def _apply(fn: Callable | torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ fn.mT if isinstance(fn, torch.Tensor) else fn(points)


class _NonlinearFilter:
    """Shared parameter checks, the time loop and the smoother of the EKF and UKF.

    Parameters
    ----------
    transition
        :math:`g`: a matrix ``[..., d, d]`` or a callable ``[..., d] -> [..., d]``.
    observation
        :math:`h`: a matrix ``[..., m, d]`` or a callable ``[..., d] -> [..., m]``.
    transition_cov, observation_cov
        :math:`\\Gamma` ``[..., d, d]`` and :math:`R` ``[..., m, m]``.
    init_mean, init_cov
        Belief about :math:`z_0` (before the first observation); sets dtype and device.
    """

    def __init__(
        self, transition, observation, transition_cov, observation_cov, init_mean, init_cov
    ):
        self.init_mean = as_float_tensor(init_mean, "init_mean")
        if self.init_mean.dim() < 1:
            raise ShapeError(
                f"Expected `init_mean` of shape [..., d], but found {tuple(self.init_mean.shape)}"
            )
        d = self.init_mean.shape[-1]
        like = self.init_mean
        self.init_cov = check_matrix(as_float_tensor(init_cov, "init_cov", like), "init_cov", d, d)
        self.Gamma = check_matrix(
            as_float_tensor(transition_cov, "transition_cov", like), "transition_cov", d, d
        )
        R = as_float_tensor(observation_cov, "observation_cov", like)
        if R.dim() < 2:
            raise ShapeError(
                f"Expected `observation_cov` of shape [..., m, m], but found {R.shape}"
            )
        self.R = check_matrix(R, "observation_cov", R.shape[-1], R.shape[-1])
        for cov, name in (
            (self.Gamma, "transition_cov"),
            (self.R, "observation_cov"),
            (self.init_cov, "init_cov"),
        ):
            check_covariance(cov, name)
        self.transition = self._map(transition, "transition", d, d)
        self.observation = self._map(observation, "observation", self.R.shape[-1], d)

    def _map(self, fn, name, rows, cols):
        if callable(fn) and not isinstance(fn, torch.Tensor):
            return fn
        if fn is None:
            raise ArgumentError(f"Expected `{name}` to be a matrix or a callable, but found None")
        return check_matrix(as_float_tensor(fn, name, self.init_mean), name, rows, cols)

    def _predict_update(self, state: GaussianState, x: torch.Tensor):
        """One step (NaN row: keep the prediction). Returns ``(posterior, prior, cross, loglik)``."""
        prior, cross = self.predict(state)
        post, loglik = self.update(prior, torch.nan_to_num(x, nan=0.0))
        post, loglik = mask_missing(~torch.isnan(x).any(-1), post, prior, loglik)
        return post, prior, cross, loglik

    def _loop(self, X):
        X = check_observations(as_float_tensor(X, "X", self.init_mean), "X", self.R.shape[-1])
        state = expand_state(self.init_mean, self.init_cov, X.shape[:-2])
        records, total = [], torch.zeros((), dtype=X.dtype, device=X.device)
        with named_linalg_errors("state and innovation covariances"):
            for t in range(X.shape[-2]):
                state, prior, cross, loglik = self._predict_update(state, X[..., t, :])
                records.append((state, prior, cross))
                total = total + loglik
        means = torch.stack([r[0].mean for r in records])
        covs = torch.stack([r[0].cov for r in records])
        check_finite_output(means, "filtered moments and log-likelihoods", covs, total)
        return records, total

    def reset(self, batch_shape: tuple[int, ...] = ()) -> None:
        """Restart the online filter (:meth:`step`) at :math:`z_0` for ``batch_shape`` streams."""
        self.state_ = expand_state(self.init_mean, self.init_cov, batch_shape)

    def step(self, x) -> GaussianState:
        """Online update with one observation row ``x [..., m]`` (NaN row: no update)."""
        x = check_row(as_float_tensor(x, "x", self.init_mean), "x", self.R.shape[-1])
        if getattr(self, "state_", None) is None:
            self.reset(x.shape[:-1])
        with named_linalg_errors("state and innovation covariances"):
            state = self._predict_update(self.state_, x)[0]
        check_finite_output(state.mean, "filtered means and covariances", state.cov)
        self.state_ = state
        return self.state_

    def filter(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """Filtered means ``[..., T, d]`` and covariances ``[..., T, d, d]``."""
        records, _ = self._loop(X)
        return (
            torch.stack([r[0].mean for r in records], -2),
            torch.stack([r[0].cov for r in records], -3),
        )

    def smooth(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """RTS-type smoother (extended or unscented): means ``[..., T, d]``, covariances.

        Uses the cross covariance :math:`\\operatorname{Cov}(z_t, z_{t+1})` each filter
        computed in its prediction (:func:`~ppltk.filtering._gaussian.rts_smooth`).
        """
        records, _ = self._loop(X)
        with named_linalg_errors("predicted covariances in the smoother"):
            smoothed = rts_smooth(*zip(*records))
        means = torch.stack([s.mean for s in smoothed], -2)
        return means, torch.stack([s.cov for s in smoothed], -3)

    def log_likelihood(self, X) -> torch.Tensor:
        """Approximate :math:`\\log p(x_{1:T})` per stream from the innovations ``[...]``."""
        return self._loop(X)[1]


class ExtendedKalmanFilter(_NonlinearFilter):
    r"""EKF: linearise :math:`g` at the filtered mean and :math:`h` at the predicted mean.

    .. math::
        \nu = g(\mu),\ F = \partial g(\mu),\ M = F\Sigma F^\top + \Gamma;\qquad
        H = \partial h(\nu),\ S = HMH^\top + R,\ K = MH^\top S^{-1},\
        \mu' = \nu + K(x - h(\nu)),

    with the Joseph-form covariance. :meth:`smooth` is the extended RTS smoother (gain
    :math:`\Sigma_t F_{t+1}^\top M_{t+1}^{-1}`). Analytic Jacobians ``[..., k, d]`` may be
    passed as ``transition_jacobian``/``observation_jacobian`` (faster than autodiff).
    """

    def __init__(self, *args, transition_jacobian=None, observation_jacobian=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.transition_jacobian = transition_jacobian
        self.observation_jacobian = observation_jacobian

    def predict(self, state: GaussianState):
        """Linearised prediction and :math:`\\operatorname{Cov}(z_{t-1}, z_t) = \\Sigma F^\\top`."""
        nu, F = _jacobian(self.transition, state.mean, self.transition_jacobian)
        cross = state.cov @ F.mT
        return GaussianState(nu, symmetrize(F @ cross + self.Gamma)), cross

    def update(self, prior: GaussianState, x: torch.Tensor):
        x_pred, H = _jacobian(self.observation, prior.mean, self.observation_jacobian)
        cross = prior.cov @ H.mT
        innov = symmetrize(H @ cross + self.R)
        return update_with_gain(prior, x, x_pred, cross, innov, H, self.R)


class UnscentedKalmanFilter(_NonlinearFilter):
    r"""UKF with Van der Merwe's scaled sigma points (additive noise).

    :math:`\lambda = \alpha^2(d+\kappa) - d`; points :math:`\mu` and
    :math:`\mu \pm` the columns of :math:`\operatorname{chol}((d+\lambda)\Sigma)`; weights
    :math:`W^m_0 = \lambda/(d+\lambda)`, :math:`W^c_0 = W^m_0 + 1 - \alpha^2 + \beta`,
    :math:`W_i = 1/(2(d+\lambda))`. Prediction pushes the points of the filtered belief
    through :math:`g`; the update redraws points from the prediction, pushes them through
    :math:`h` and applies :math:`K = C S^{-1}`, :math:`\Sigma' = M - KSK^\top` (as filterpy).
    """

    def __init__(self, *args, alpha: float = 1.0, beta: float = 2.0, kappa: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.init_mean.shape[-1]
        lam = alpha**2 * (d + kappa) - d
        if not d + lam > 0:
            raise ArgumentError(f"Expected alpha^2 (d + kappa) > 0, but found {d + lam!r}")
        opts = {"dtype": self.init_mean.dtype, "device": self.init_mean.device}
        self.Wm = torch.full((2 * d + 1,), 0.5 / (d + lam), **opts)
        self.Wc = self.Wm.clone()
        self.Wm[0] = lam / (d + lam)
        self.Wc[0] = lam / (d + lam) + 1 - alpha**2 + beta
        self.scale = d + lam

    def sigma_points(self, state: GaussianState) -> torch.Tensor:
        """Sigma points ``[..., 2d + 1, d]``."""
        L = torch.linalg.cholesky(self.scale * state.cov)
        offsets = torch.cat([torch.zeros_like(L[..., :1, :]), L.mT, -L.mT], -2)
        return state.mean.unsqueeze(-2) + offsets

    def _moments(self, points: torch.Tensor):
        mean = (self.Wm.unsqueeze(-1) * points).sum(-2)
        centred = points - mean.unsqueeze(-2)
        return mean, centred

    def predict(self, state: GaussianState):
        """Unscented prediction and the sigma-point :math:`\\operatorname{Cov}(z_{t-1}, z_t)`."""
        points = self.sigma_points(state)
        nu, dev = self._moments(_apply(self.transition, points))
        M = (dev.mT * self.Wc) @ dev + self.Gamma
        cross = ((points - state.mean.unsqueeze(-2)).mT * self.Wc) @ dev
        return GaussianState(nu, symmetrize(M)), cross

    def update(self, prior: GaussianState, x: torch.Tensor):
        points = self.sigma_points(prior)
        x_pred, dev_x = self._moments(_apply(self.observation, points))
        dev_z = points - prior.mean.unsqueeze(-2)
        innov = symmetrize((dev_x.mT * self.Wc) @ dev_x + self.R)
        cross = (dev_z.mT * self.Wc) @ dev_x
        return update_with_gain(prior, x, x_pred, cross, innov)
