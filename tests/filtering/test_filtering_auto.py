"""Regressor choice (``regressor="auto"``), NW bandwidth selection and the robust DKF options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _filtering_helpers import random_model, simulate

from ppltk.datasets import simulate_neural_decoding, simulate_vonmises_neurons
from ppltk.errors import ArgumentError
from ppltk.filtering import (
    DiscriminativeKalmanFilter,
    GaussianState,
    KalmanFilter,
    NadarayaWatsonRegressor,
    dkf_update,
    normalised_rmse,
)
from ppltk.filtering.selection import gaussian_row_loglik, select_regressor


def test_auto_picks_the_linear_regressor_on_linear_gaussian_data():
    # E[z | x] is exactly linear and Cov[z | x] constant: the linear regressor is the true
    # model (and the DKF with it is the Kalman filter); a flexible model can only win by
    # chance, which the one-standard-error rule guards against (8 of 8 seeds pick
    # "linear" in a scan of seeds 0-7; this test runs one of them)
    for seed in (3,):
        rng = np.random.default_rng(seed)
        X, Z = simulate(rng, random_model(rng, 2, 10), 1500)
        dkf = DiscriminativeKalmanFilter(warn=False).fit(torch.as_tensor(X), torch.as_tensor(Z))
        assert dkf.regressor_name_ == "linear", dkf.selection_
        assert "auto -> linear" in repr(dkf)
        table = dkf.selection_
        assert set(table) == {"linear", "nw", "mlp", "gp"}
        assert table["linear"]["loglik"] >= max(v["loglik"] - v["se"] for v in table.values())


def test_auto_picks_a_nonlinear_regressor_on_strongly_nonlinear_tuning():
    # 12 narrowly (von Mises) tuned neurons in 100 ms bins: E[z | x] is far from linear;
    # the linear model's held-out log-likelihood is several standard errors below
    X, Z = simulate_vonmises_neurons(
        12,
        1500,
        100.0,
        seed=0,
        modulation_hz=100.0,
        concentration=(4.0, 8.0),
        velocity_timescale_ms=2000.0,
    )
    dkf = DiscriminativeKalmanFilter(warn=False).fit(X[:1200], Z[:1200])
    assert dkf.regressor_name_ in ("nw", "mlp", "gp"), dkf.selection_
    lin = dkf.selection_["linear"]
    best = max(v["loglik"] for v in dkf.selection_.values())
    assert lin["loglik"] < best - 2 * lin["se"]
    kf = KalmanFilter().fit(X[:1200], Z[:1200])
    assert normalised_rmse(dkf.filter(X[1200:])[0], Z[1200:]) < normalised_rmse(
        kf.filter(X[1200:])[0], Z[1200:]
    )


def test_select_regressor_scores_are_cross_fitted_gaussian_logliks():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(400, 3, generator=gen, dtype=torch.float64)
    Z = X[:, :2] + 0.1 * torch.randn(400, 2, generator=gen, dtype=torch.float64)
    from ppltk.filtering import ConstantCovariance

    name, reg, resid, table = select_regressor(
        ("linear",), X[:300], Z[:300], X[300:], Z[300:], ConstantCovariance()
    )
    assert name == "linear" and table["linear"]["se"] == 0.0
    # oracle: constant Q from one half of the held-out residuals scores the other half
    a, b = resid[:50], resid[50:]
    Qa, Qb = a.mT @ a / 50, b.mT @ b / 50
    expected = torch.cat(
        [gaussian_row_loglik(a, Qb.expand(50, 2, 2)), gaussian_row_loglik(b, Qa.expand(50, 2, 2))]
    )
    assert math.isclose(table["linear"]["loglik"], float(expected.mean()), rel_tol=1e-10)
    ref = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), Qb)
    torch.testing.assert_close(gaussian_row_loglik(a, Qb.expand(50, 2, 2)), ref.log_prob(a))


def _smooth_1d_plus_noise_feature(N: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = 4 * torch.rand(N, 2, generator=gen, dtype=torch.float64) - 2
    y = torch.sin(2 * x[:, :1]) + 0.3 * torch.randn(N, 1, generator=gen, dtype=torch.float64)
    return x, y


def test_bandwidth_selection_recovers_the_oracle_bandwidth_per_feature():
    """y depends on x1 only: the known bandwidth is the oracle h1 minimising the error on a
    large independent test set (x2 ignored), and x2 must get a much larger bandwidth.

    Tolerance: the leave-one-out bandwidth converges to the oracle with relative error of
    order n^(-1/10) (Hall & Marron, 1987), so the error stays visible at n = 800. Over 12
    replicate data sets (seeds 0-11) log(h_selected / h_oracle) had mean 0.07 and sd 0.23;
    the test allows 3 sd, a factor of 2. The irrelevant x2 got h2 >= 8 h1 in every
    replicate; the test asks for 4 h1.
    """
    x, y = _smooth_1d_plus_noise_feature(800, seed=0)
    x_te, y_te = _smooth_1d_plus_noise_feature(20000, seed=999)
    nw = NadarayaWatsonRegressor(projection=None).fit(x, y)
    h1, h2 = (float(h) for h in nw.bandwidth_)
    grid = torch.logspace(math.log10(0.02), 0.0, 60).tolist()
    errors = [
        float(
            (
                NadarayaWatsonRegressor(bandwidth=[h, 1e6], projection=None).fit(x, y).predict(x_te)
                - y_te
            )
            .pow(2)
            .mean()
        )
        for h in grid
    ]
    oracle = grid[int(np.argmin(errors))]
    assert abs(math.log(h1 / oracle)) < math.log(2.0), (h1, oracle)
    assert h2 > 4 * h1
    assert nw.projection_ is None and nw.loo_loglik_ is not None


def test_nw_auto_projection_keeps_the_higher_leave_one_out_likelihood():
    x, y = _smooth_1d_plus_noise_feature(600, seed=1)
    nw = NadarayaWatsonRegressor().fit(x, y)  # projection="auto"
    scores = {
        p: NadarayaWatsonRegressor(projection=p).fit(x, y).loo_loglik_ for p in ("linear", None)
    }
    assert nw.projection_ == max(scores, key=scores.get)
    # sin(2 x1) is not monotone in the linear prediction: the input space wins
    assert nw.projection_ is None
    with pytest.raises(ArgumentError, match="bandwidth"):
        NadarayaWatsonRegressor(bandwidth=[1.0, -1.0])


def test_outlier_gate_bounds_the_update_and_equals_the_inflated_kalman_update():
    d = 2
    prior = GaussianState(torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))
    S = 4.0 * torch.eye(d, dtype=torch.float64)
    Q = 0.5 * torch.eye(d, dtype=torch.float64)
    far = torch.tensor([50.0, 0.0], dtype=torch.float64)
    plain, _ = dkf_update(prior, far, Q, S)
    gated, _, w = dkf_update(prior, far, Q, S, outlier_threshold=9.0, return_weight=True)
    # oracle: pseudo-observation y = R Q^-1 f, R = (Q^-1 - S^-1)^-1; m^2 = e^T (M + R)^-1 e
    R = torch.linalg.inv(torch.linalg.inv(Q) - torch.linalg.inv(S))
    y = R @ torch.linalg.inv(Q) @ far
    m2 = float(y @ torch.linalg.solve(prior.cov + R, y))
    assert math.isclose(float(w), 9.0 / m2, rel_tol=1e-10)
    R_big = R * m2 / 9.0  # the gate is a Kalman update with R inflated by m^2 / c
    K = prior.cov @ torch.linalg.inv(prior.cov + R_big)
    torch.testing.assert_close(gated.mean, K @ y)
    torch.testing.assert_close(gated.cov, (torch.eye(d, dtype=torch.float64) - K) @ prior.cov)
    assert float(plain.mean.norm()) > 30 and float(gated.mean.norm()) < 5
    near = torch.tensor([0.3, -0.2], dtype=torch.float64)
    a, _ = dkf_update(prior, near, Q, S)
    b, _, w = dkf_update(prior, near, Q, S, outlier_threshold=9.0, return_weight=True)
    assert float(w) == 1.0 and torch.equal(a.mean, b.mean)


def test_robust_options_help_on_single_channel_outliers():
    # one channel in twenty bins gets Poisson(40) extra counts, in training and test data
    X, Z = simulate_neural_decoding(
        40, 3000, 20.0, seed=3, tuning="exponential", outlier_prob=0.05, outlier_hz=2000.0
    )
    X_tr, Z_tr, X_te, Z_te = X[:2400], Z[:2400], X[2400:], Z[2400:]
    plain = DiscriminativeKalmanFilter("nw", warn=False).fit(X_tr, Z_tr)
    robust = DiscriminativeKalmanFilter("nw", warn=False, clip_inputs=1e-3, outlier_prob=1e-3).fit(
        X_tr, Z_tr
    )
    err_plain = float(normalised_rmse(plain.filter(X_te)[0], Z_te))
    err_robust = float(normalised_rmse(robust.filter(X_te)[0], Z_te))
    # measured 0.424 -> 0.348 at this seed; ask for a clear (10 %) improvement
    assert err_robust < 0.9 * err_plain
    assert robust.last_outlier_count_ >= 0 and "clip_inputs=0.001" in repr(robust)
    # clipped inputs stay inside the training range; NaN rows still skip the update
    X_nan = X_te[:5].clone()
    X_nan[2] = float("nan")
    means, _ = robust.filter(X_nan)
    assert torch.isfinite(means).all()
    with pytest.raises(ArgumentError, match="outlier_prob"):
        DiscriminativeKalmanFilter(outlier_prob=1.5)
    with pytest.raises(ArgumentError, match="clip_inputs"):
        DiscriminativeKalmanFilter(clip_inputs=0.7)


@pytest.mark.parametrize(
    "options",
    [
        {"Q": 0.3, "nonpd_fix": "drop_prior"},
        {"Q": 3.0, "nonpd_fix": "drop_prior"},
        {"Q": 3.0, "nonpd_fix": "inflate"},
        {"Q": 3.0, "nonpd_fix": "clip"},
        {"Q": 0.3, "robust": True},
    ],
    ids=["pd", "drop_prior", "inflate", "clip", "robust"],
)
def test_constant_q_online_fast_path_equals_the_general_update(options):
    """``step`` with a constant Q uses the Kalman form with H = I and a cached R, G; it must
    give the information-form update of ``filter`` (also where the non-PD fix fires, and
    across a NaN row)."""
    from ppltk.filtering import ConstantCovariance, LinearRegressor

    options = dict(options)
    scale = options.pop("Q")
    gen = torch.Generator().manual_seed(5)
    A = torch.tensor([[0.9, 0.1], [-0.05, 0.85]], dtype=torch.float64)
    Gamma = torch.tensor([[0.3, 0.05], [0.05, 0.2]], dtype=torch.float64)
    W = torch.randn(2, 6, generator=gen, dtype=torch.float64)
    Q = scale * torch.tensor([[1.0, 0.2], [0.2, 0.7]], dtype=torch.float64)
    dkf = DiscriminativeKalmanFilter.from_parts(
        A,
        Gamma,
        LinearRegressor(W, torch.zeros(2, dtype=torch.float64)),
        ConstantCovariance(Q),
        warn=False,
        **options,
    )
    dkf.num_features_ = 6
    X = torch.randn(30, 6, generator=gen, dtype=torch.float64)
    X[7] = float("nan")
    means, covs = dkf.filter(X)
    fires_filter = dkf.last_nonpd_count_
    dkf.reset()
    before = dkf.nonpd_count_
    online = [dkf.step(x) for x in X]
    torch.testing.assert_close(torch.stack([s.mean for s in online]), means)
    torch.testing.assert_close(torch.stack([s.cov for s in online]), covs)
    assert dkf.nonpd_count_ - before == fires_filter
    assert (fires_filter > 0) == (scale > 1 and not options.get("robust", False))
