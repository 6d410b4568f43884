"""Regressors, covariance models, metrics, the neural simulator and the decoding pipeline."""

from __future__ import annotations

import math

import pytest
import torch

from ppltk.datasets import simulate_neural_decoding
from ppltk.errors import ArgumentError, NotFittedError, ShapeError
from ppltk.filtering import (
    DiscriminativeKalmanFilter,
    GPRegressor,
    KalmanFilter,
    KernelCovariance,
    MLPRegressor,
    NadarayaWatsonRegressor,
    decoding_pipeline,
    fit_poisson_observation,
    fit_state_dynamics,
    mean_angle_error,
    normalised_rmse,
)


def _smooth_problem(N=400, noise=0.1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 4 * torch.rand(N, 1, generator=gen, dtype=torch.float64) - 2
    y = torch.sin(2 * x) + noise * torch.randn(N, 1, generator=gen, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize(
    "make",
    [
        lambda: NadarayaWatsonRegressor(projection=None),
        lambda: MLPRegressor(hidden=(32,), epochs=150, lr=1e-2, weight_decay=0.0),
        lambda: GPRegressor(max_points=400, iterations=80),
    ],
    ids=["nw", "mlp", "gp"],
)
def test_regressors_recover_a_smooth_function(make):
    x, y = _smooth_problem()
    grid = torch.linspace(-1.8, 1.8, 50, dtype=torch.float64).unsqueeze(-1)
    pred = make().fit(x, y).predict(grid)
    rmse = float((pred - torch.sin(2 * grid)).pow(2).mean().sqrt())
    # the noise sd is 0.1; a consistent smoother with ~20 effective points per bandwidth
    # has sd ~0.1/sqrt(20) ~ 0.02 plus a small bias, a linear fit is off by ~0.5
    assert rmse < 0.06
    assert pred.shape == (50, 1)


def test_nw_loo_bandwidth_beats_extreme_bandwidths():
    x, y = _smooth_problem(seed=1)
    x_te, y_te = _smooth_problem(seed=2)
    errors = {}
    for h in (None, 1e-3, 10.0):
        nw = NadarayaWatsonRegressor(bandwidth=h, projection=None).fit(x, y)
        errors[h] = float((nw.predict(x_te) - y_te).pow(2).mean())
    assert errors[None] < errors[1e-3] and errors[None] < errors[10.0]


def test_kernel_covariance_tracks_heteroscedastic_residuals():
    gen = torch.Generator().manual_seed(3)
    x = 4 * torch.rand(3000, 1, generator=gen, dtype=torch.float64) - 2
    sd = 0.2 + x.abs()
    r = sd * torch.randn(3000, 2, generator=gen, dtype=torch.float64)
    Q = (
        KernelCovariance(shrinkage=0.05)
        .fit(x, r)
        .predict(torch.tensor([[0.0], [1.8]], dtype=torch.float64))
    )
    # true variances 0.04 and 4.0; kernel averages over a neighbourhood, so only an order check
    assert Q.shape == (2, 2, 2)
    assert Q[1, 0, 0] > 10 * Q[0, 0, 0]
    assert (torch.linalg.eigvalsh(Q) > 0).all()


def test_regressor_errors():
    with pytest.raises(NotFittedError):
        NadarayaWatsonRegressor().predict(torch.zeros(3, 2))
    nw = NadarayaWatsonRegressor().fit(
        torch.randn(30, 2, dtype=torch.float64), torch.randn(30, 1, dtype=torch.float64)
    )
    with pytest.raises(ShapeError, match=r"\[\.\.\., 2\]"):
        nw.predict(torch.zeros(4, 3))
    with pytest.raises(ArgumentError):
        NadarayaWatsonRegressor(bandwidth=-1.0)


def test_metrics():
    truth = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert float(normalised_rmse(truth, truth)) == 0.0
    # predicting the mean gives exactly 1
    assert math.isclose(float(normalised_rmse(truth.mean(0).expand_as(truth), truth)), 1.0)
    rotated = truth @ torch.tensor([[0.0, 1.0], [-1.0, 0.0]]).mT  # +90 degrees
    assert math.isclose(float(mean_angle_error(rotated, truth)), 90.0, rel_tol=1e-6)
    flipped = -truth
    assert math.isclose(
        float(mean_angle_error(flipped, truth, degrees=False)), math.pi, rel_tol=1e-6
    )
    with pytest.raises(ShapeError):
        normalised_rmse(truth, truth[:3])


def test_simulator_statistics_and_determinism():
    X, Z = simulate_neural_decoding(50, 4000, 20.0, seed=4)
    X2, Z2 = simulate_neural_decoding(50, 4000, 20.0, seed=4)
    assert X.shape == (4000, 50) and Z.shape == (4000, 2) and X.dtype == torch.float64
    assert torch.equal(X, X2) and torch.equal(Z, Z2)
    assert not torch.equal(X, simulate_neural_decoding(50, 4000, 20.0, seed=5)[0])
    assert (X >= 0).all() and torch.equal(X, X.round())
    # AR(1) coefficient a = exp(-20/400) ~ 0.951; the least-squares estimate has standard
    # error sqrt((1 - a^2)/T) ~ 0.005 per entry; effective T is smaller for a trajectory
    # with correlation time 20 bins, so allow 0.03 (> 5 standard errors of the mean over
    # 200 independent-ish blocks)
    dyn = fit_state_dynamics(Z)
    torch.testing.assert_close(
        dyn.A, math.exp(-0.05) * torch.eye(2, dtype=torch.float64), atol=0.03, rtol=0
    )
    # stationary sd 1: the sample variance over ~200 effective samples has sd ~0.1
    assert (Z.var(0) - 1.0).abs().max() < 0.35
    # with negligible modulation each rate is its baseline 10 Hz * U(0.5, 1.5): the mean over
    # 50 neurons has sd 10 * 0.289 / sqrt(50) = 0.41 Hz (Poisson noise over 2e5 bins is
    # negligible), so 10 +- 4 sd
    flat, _ = simulate_neural_decoding(50, 4000, 20.0, seed=4, modulation_hz=1e-6)
    rate = float(flat.mean() / 0.02)
    assert 10.0 - 1.64 < rate < 10.0 + 1.64
    Xo, _ = simulate_neural_decoding(50, 4000, 20.0, seed=4, outlier_prob=0.05)
    assert (Xo - X).sum() > 0 and ((Xo - X) != 0).sum(1).max() == 1
    with pytest.raises(ArgumentError, match="tuning"):
        simulate_neural_decoding(10, 100, 20.0, seed=0, tuning="gaussian")
    with pytest.raises(ArgumentError, match="num_neurons"):
        simulate_neural_decoding(0, 100, 20.0, seed=0)


def test_poisson_glm_solves_its_score_equations():
    X, Z = simulate_neural_decoding(
        20, 4000, 100.0, seed=6, tuning="exponential", modulation_hz=10.0
    )
    glm = fit_poisson_observation(X, Z)
    # the Poisson MLE with intercept solves D^T (x - lambda) = 0 exactly, D = [Z, 1]
    design = torch.cat([Z, torch.ones_like(Z[:, :1])], -1)
    score = design.mT @ (X - glm.mean(Z)) / X.shape[0]
    assert score.abs().max() < 1e-8
    # tuning depth kappa = log(1 + m/b) with m/b in (1/3, 3): kappa in (0.29, 1.39); the
    # MLE's standard error with 4000 bins of ~1-3 counts is ~0.02
    norms = glm.W.norm(dim=-1)
    assert (norms > 0.2).all() and (norms < 1.5).all()
    torch.testing.assert_close(glm.jacobian(Z[0]), torch.func.jacrev(glm.mean)(Z[0]))


def test_dkf_beats_kf_on_exponentiated_tuning():
    X, Z = simulate_neural_decoding(40, 3000, 20.0, seed=7, tuning="exponential")
    X_tr, Z_tr, X_te, Z_te = X[:2400], Z[:2400], X[2400:], Z[2400:]
    kf_err = normalised_rmse(KalmanFilter().fit(X_tr, Z_tr).filter(X_te)[0], Z_te)
    dkf = DiscriminativeKalmanFilter("nw", warn=False).fit(X_tr, Z_tr)
    dkf_err = normalised_rmse(dkf.filter(X_te)[0], Z_te)
    raw_err = normalised_rmse(dkf.predict_measurement(X_te)[0], Z_te)
    assert dkf_err < kf_err
    assert dkf_err < raw_err


def test_decoding_pipeline_fast():
    table = decoding_pipeline(
        num_neurons=20, num_steps=800, regressors=("nw", "mlp"), fast=True, seed=8
    )
    names = [row["method"] for row in table.rows]
    assert names == ["KF", "EKF", "UKF", "DKF-nw", "nw (unfiltered)", "DKF-mlp", "mlp (unfiltered)"]
    for row in table.rows:
        assert 0.0 < row["nrmse"] < 1.5 and 0.0 <= row["angle_error_deg"] <= 180.0
    assert table.decoded["KF"].shape == table.truth.shape == (160, 2)
    assert "| DKF-nw |" in table.to_markdown()


def test_nw_loo_scores_equal_brute_force_leave_one_out():
    x, y = _smooth_problem(N=40, seed=5)
    nw = NadarayaWatsonRegressor(projection=None, grid_size=6).fit(x, y)
    Xs, Ys = nw.X_train[nw.loo_index_], nw.Y_train[nw.loo_index_]
    for h, score in zip(nw.loo_grid_.tolist(), nw.loo_scores_.tolist()):
        total = 0.0
        for i in range(len(Xs)):
            rest = torch.cat([torch.arange(i), torch.arange(i + 1, len(Xs))])
            w = torch.exp(-((Xs[rest] - Xs[i]) ** 2).sum(-1) / (2 * h * h))
            total += float(((w @ Ys[rest]) / w.sum() - Ys[i]).pow(2).sum())
        # mean leave-one-out Gaussian log-likelihood with the ML variance of the residuals
        loglik = -0.5 * math.log(total / len(Xs)) - 0.5 * (1 + math.log(2 * math.pi))
        assert math.isclose(score, loglik, rel_tol=1e-7)
    assert math.isclose(float(nw.bandwidth_), float(nw.loo_grid_[nw.loo_scores_.argmax()]))


def test_gp_mean_equals_sklearn_with_the_same_hyperparameters():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel

    x, y = _smooth_problem(N=120, seed=6)
    gp = GPRegressor(max_points=120, iterations=40).fit(x, y)
    log_ell, log_sf, log_sn = (float(t) for t in gp.hyper_)
    Xs, Ys = gp.x_scaler(x), gp.y_scaler(y)
    kernel = ConstantKernel(math.exp(2 * log_sf), "fixed") * RBF(math.exp(log_ell), "fixed")
    ref = GaussianProcessRegressor(kernel, alpha=math.exp(2 * log_sn) + 1e-6, optimizer=None)
    ref.fit(Xs.numpy(), Ys.numpy())
    grid = torch.linspace(-2, 2, 30, dtype=torch.float64).unsqueeze(-1)
    expected = ref.predict(gp.x_scaler(grid).numpy()).reshape(-1, 1) * gp.y_scaler.std.numpy()
    expected = expected + gp.y_scaler.mean.numpy()
    torch.testing.assert_close(gp.predict(grid), torch.as_tensor(expected), atol=1e-8, rtol=1e-8)
    # the fitted hyperparameters raise the marginal likelihood above the starting point
    start = ConstantKernel(1.0, "fixed") * RBF(1.0, "fixed")  # the fit starts at l = sf = 1
    lml_start = (
        GaussianProcessRegressor(start, alpha=0.25 + 1e-6, optimizer=None)
        .fit(Xs.numpy(), Ys.numpy())
        .log_marginal_likelihood_value_
    )
    assert ref.log_marginal_likelihood_value_ > lml_start


def test_mlp_is_reproducible_from_its_seed():
    x, y = _smooth_problem(N=200, seed=7)
    a = MLPRegressor(epochs=5, seed=3).fit(x, y).predict(x[:10])
    b = MLPRegressor(epochs=5, seed=3).fit(x, y).predict(x[:10])
    c = MLPRegressor(epochs=5, seed=4).fit(x, y).predict(x[:10])
    assert torch.equal(a, b) and not torch.equal(a, c)
