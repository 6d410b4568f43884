r"""Choosing the DKF regressor by held-out predictive log-likelihood (``regressor="auto"``).

Every candidate :math:`f` is fitted on the first rows, then scored on the held-out rows by
the log-likelihood of the DKF measurement model :math:`p(z \mid x) = N(z; f(x), Q(x))`,
the quantity the filter actually uses. :math:`Q` is cross-fitted so that the score is
out of sample for :math:`Q` too: the held-out rows are cut into two contiguous halves; the
covariance model fitted on one half scores the residuals of the other, and vice versa.

Rows of a time series are autocorrelated, so the standard error of a difference in mean
log-likelihood comes from ``blocks`` contiguous blocks (a batch-means estimate), not from
independent rows. The choice follows the one-standard-error rule: the first candidate in
``candidates`` (ordered from simplest, ``"linear"``, to most flexible) whose mean score is
within one standard error of the best score's. On linear-Gaussian data, where the linear
regressor is the exact :math:`E[z \mid x]` and the DKF reduces to the Kalman filter, a more
flexible model can only beat it by chance, so the rule keeps ``"linear"``.
"""

from __future__ import annotations

import copy
import math
import time

import torch

from ppltk import gaussian
from ppltk.errors import ArgumentError
from ppltk.filtering.regressors import (
    GPRegressor,
    LinearRegressor,
    MLPRegressor,
    NadarayaWatsonRegressor,
)

__all__ = ["AUTO_CANDIDATES", "auto_candidate", "gaussian_row_loglik", "select_regressor"]

AUTO_CANDIDATES = ("linear", "nw", "mlp", "gp")


def auto_candidate(name: str, seed=0):
    """The regressor ``regressor="auto"`` tries under ``name`` (sized to fit in seconds).

    The GP fits its hyperparameters on 500 rows and conditions its mean on 2,000.
    """
    if name == "linear":
        return LinearRegressor()
    if name == "nw":
        return NadarayaWatsonRegressor(seed=seed)
    if name == "mlp":
        return MLPRegressor(seed=seed)
    if name == "gp":
        return GPRegressor(max_points=500, iterations=60, condition_points=2000, seed=seed)
    raise ArgumentError(f"Expected candidates from {AUTO_CANDIDATES}, but found {name!r}")


def gaussian_row_loglik(residuals: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    r""":math:`\log N(r_i; 0, Q_i)` per row ``[N]`` for residuals ``[N, d]``, ``Q [N, d, d]``."""
    return gaussian.log_prob(residuals, torch.linalg.cholesky(Q))


def _cross_fitted_loglik(covariance, X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    half = X.shape[0] // 2
    out = torch.empty(X.shape[0], dtype=R.dtype, device=R.device)
    for fit_rows, score_rows in (
        (slice(half, None), slice(None, half)),
        (slice(None, half), slice(half, None)),
    ):
        model = copy.deepcopy(covariance).fit(X[fit_rows], R[fit_rows])
        out[score_rows] = gaussian_row_loglik(R[score_rows], model.predict(X[score_rows]))
    return out


def _block_se(values: torch.Tensor, blocks: int) -> float:
    """Standard error of the mean of an autocorrelated series by ``blocks`` batch means."""
    blocks = max(2, min(blocks, values.shape[0] // 2))
    means = torch.stack([chunk.mean() for chunk in values.tensor_split(blocks)])
    return float(means.std() / math.sqrt(blocks))


def select_regressor(candidates, X_fit, Z_fit, X_hold, Z_hold, covariance, *, seed=0, blocks=20):
    """Fit each candidate on ``(X_fit, Z_fit)``, score it on ``(X_hold, Z_hold)``, choose one.

    Returns ``(name, fitted regressor, held-out residuals, table)``; ``table`` maps each name
    to ``{"loglik": mean held-out log-likelihood per row, "se": standard error of its
    difference from the best, "fit_s": seconds}``.
    """
    if len(candidates) == 0:
        raise ArgumentError("Expected at least one candidate regressor, but found none")
    if X_hold.shape[0] < 8:
        raise ArgumentError(
            f"Expected at least 8 held-out rows to compare regressors, but found {X_hold.shape[0]}"
        )
    fitted, rows, table = {}, {}, {}
    for name in candidates:
        start = time.perf_counter()
        reg = auto_candidate(name, seed) if isinstance(name, str) else name
        key = name if isinstance(name, str) else type(name).__name__
        reg.fit(X_fit, Z_fit)
        residuals = Z_hold - reg.predict(X_hold).to(Z_hold)
        try:
            rows[key] = _cross_fitted_loglik(covariance, X_hold, residuals)
        except torch.linalg.LinAlgError:  # a degenerate Q: this candidate cannot be used
            rows[key] = torch.full_like(residuals[:, 0], -math.inf)
        fitted[key] = (reg, residuals)
        table[key] = {"fit_s": time.perf_counter() - start}
    best = max(rows, key=lambda k: float(rows[k].mean()))
    best_mean = float(rows[best].mean())
    chosen = None
    for key, values in rows.items():
        mean = float(values.mean())
        diff = values - rows[best]
        se = _block_se(diff, blocks) if math.isfinite(mean) else math.inf
        table[key].update({"loglik": mean, "se": se})
        if chosen is None and math.isfinite(mean) and mean >= best_mean - se:
            chosen = key
    return chosen, fitted[chosen][0], fitted[chosen][1], table
