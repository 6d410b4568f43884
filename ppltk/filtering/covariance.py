r"""Models of the DKF measurement covariance :math:`Q(x) \approx \operatorname{Cov}[z \mid x]`.

Both models are fitted on held-out residuals :math:`r_i = z_i - f(x_i)` (rows the regressor
:math:`f` did not see), so :math:`Q` measures out-of-sample error. Interface:
``fit(X, residuals) -> self`` and ``predict(X [..., n]) -> [..., d, d]``.
"""

from __future__ import annotations

import torch

from ppltk.errors import ArgumentError
from ppltk.filtering._checks import as_float_tensor, check_fitted, check_training_pair
from ppltk.filtering.regressors import NadarayaWatsonRegressor

__all__ = ["ConstantCovariance", "KernelCovariance", "make_covariance"]


class ConstantCovariance:
    r"""Constant :math:`Q = \frac{1}{N}\sum_i r_i r_i^\top`; pass ``cov [d, d]`` to fix it."""

    def __init__(self, cov=None) -> None:
        self.cov = None if cov is None else as_float_tensor(cov, "cov")

    def fit(self, X, residuals) -> ConstantCovariance:
        _, R = check_training_pair(X, residuals, "X", "residuals")
        self.cov = 0.5 * (R.mT @ R + (R.mT @ R).mT) / R.shape[0]
        return self

    def predict(self, X) -> torch.Tensor:
        check_fitted(self, "cov")
        X = as_float_tensor(X, "X", self.cov)
        return self.cov.expand(*X.shape[:-1], *self.cov.shape)


class KernelCovariance:
    r"""Kernel-smoothed residual outer products, shrunk towards the constant estimate.

    .. math::
        Q(x) = (1-\lambda) \sum_i w_i(x)\, r_i r_i^\top + \lambda \bar Q,
        \qquad \bar Q = \frac1N \sum_i r_i r_i^\top,

    with Nadaraya–Watson weights :math:`w_i(x)` (one bandwidth by leave-one-out squared error on
    the outer products, smoothing in the space of their linear prediction). A convex combination of PSD matrices plus :math:`\lambda \bar Q` with
    :math:`\lambda > 0` is positive definite whenever :math:`\bar Q` is.
    """

    def __init__(self, shrinkage: float = 0.1, bandwidth: float | None = None, seed=0) -> None:
        if not 0.0 < shrinkage <= 1.0:
            raise ArgumentError(f"Expected `shrinkage` in (0, 1], but found {shrinkage!r}")
        self.shrinkage = float(shrinkage)
        self.smoother = NadarayaWatsonRegressor(
            bandwidth=bandwidth,
            projection="linear",
            criterion="squared_error",
            ard=False,
            loo_max_points=1500,
            seed=seed,
        )
        self.mean_cov = None

    def fit(self, X, residuals) -> KernelCovariance:
        X, R = check_training_pair(X, residuals, "X", "residuals")
        d = R.shape[1]
        outer = (R.unsqueeze(-1) * R.unsqueeze(-2)).reshape(-1, d * d)
        self.smoother.fit(X, outer)
        self.mean_cov = outer.mean(0).reshape(d, d)
        return self

    def predict(self, X) -> torch.Tensor:
        check_fitted(self, "mean_cov")
        d = self.mean_cov.shape[-1]
        local = self.smoother.predict(X).reshape(*X.shape[:-1], d, d)
        Q = (1.0 - self.shrinkage) * local + self.shrinkage * self.mean_cov
        return 0.5 * (Q + Q.mT)


def make_covariance(name: str, **kwargs):
    """Build a covariance model by name: ``"constant"`` or ``"kernel"``."""
    models = {"constant": ConstantCovariance, "kernel": KernelCovariance}
    if name not in models:
        raise ArgumentError(f"Expected a covariance name in {sorted(models)}, but found {name!r}")
    return models[name](**kwargs)
