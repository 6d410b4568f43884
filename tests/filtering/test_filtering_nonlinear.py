"""EKF and UKF: exact reduction to the KF for linear maps, and agreement with filterpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _filtering_helpers import random_model, simulate, torch_model
from filterpy.kalman import ExtendedKalmanFilter as FilterpyEKF
from filterpy.kalman import MerweScaledSigmaPoints
from filterpy.kalman import UnscentedKalmanFilter as FilterpyUKF

from ppltk.filtering import ExtendedKalmanFilter, KalmanFilter, UnscentedKalmanFilter


def _linear_setup(seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, 2, 3)
    X, _ = simulate(rng, model, 20)
    X[[4, 11]] = np.nan
    t = torch_model(model)
    kf = KalmanFilter(t["A"], t["Gamma"], t["H"], t["R"], t["b"], t["m0"], t["P0"])
    return t, torch.as_tensor(X), kf


@pytest.mark.parametrize("cls", [ExtendedKalmanFilter, UnscentedKalmanFilter])
def test_linear_maps_reduce_to_kalman_filter(cls):
    t, X, kf = _linear_setup(10)

    def g(z):
        return z @ t["A"].mT

    def h(z):
        return z @ t["H"].mT + t["b"]

    nonlinear = cls(g, h, t["Gamma"], t["R"], t["m0"], t["P0"])
    means, covs = nonlinear.filter(X)
    ref_means, ref_covs = kf.filter(X)
    torch.testing.assert_close(means, ref_means, atol=1e-10, rtol=0)
    torch.testing.assert_close(covs, ref_covs, atol=1e-10, rtol=0)
    torch.testing.assert_close(nonlinear.log_likelihood(X), kf.log_likelihood(X), atol=1e-9, rtol=0)
    if cls is ExtendedKalmanFilter:
        torch.testing.assert_close(nonlinear.smooth(X)[0], kf.smooth(X)[0], atol=1e-10, rtol=0)


def _nonlinear_problem(seed=11, T=30):
    rng = np.random.default_rng(seed)
    A = np.array([[0.95, 0.1], [-0.1, 0.9]])
    Gamma = np.diag([0.05, 0.08])
    R = np.diag([0.1, 0.2, 0.1])
    z = np.zeros(2)
    X = np.zeros((T, 3))
    for t in range(T):
        z = A @ z + rng.multivariate_normal(np.zeros(2), Gamma)
        X[t] = np.array([np.sin(z[0]) + z[1], z[0] * z[1], np.exp(0.5 * z[1])])
        X[t] += rng.multivariate_normal(np.zeros(3), R)
    return A, Gamma, R, X


def h_numpy(z):
    return np.array([np.sin(z[0]) + z[1], z[0] * z[1], np.exp(0.5 * z[1])])


def h_torch(z):
    return torch.stack(
        [torch.sin(z[..., 0]) + z[..., 1], z[..., 0] * z[..., 1], torch.exp(0.5 * z[..., 1])], -1
    )


def _make(cls, transition, Gamma, R, **kwargs):
    """``cls`` with observation map ``h_torch`` and :math:`z_0 \\sim N(0, I_2)`."""
    if isinstance(transition, np.ndarray):
        transition = torch.as_tensor(transition)
    init = (torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    args = (transition, h_torch, torch.as_tensor(Gamma), torch.as_tensor(R), *init)
    return cls(*args, **kwargs)


def test_ekf_matches_filterpy():
    A, Gamma, R, X = _nonlinear_problem()
    fp = FilterpyEKF(dim_x=2, dim_z=3)
    fp.F, fp.Q, fp.R = A, Gamma, R
    fp.x, fp.P = np.zeros((2, 1)), np.eye(2)

    def jac(x):
        z = x.ravel()
        return np.array([[np.cos(z[0]), 1.0], [z[1], z[0]], [0.0, 0.5 * np.exp(0.5 * z[1])]])

    ekf = _make(ExtendedKalmanFilter, A, Gamma, R)
    means, covs = ekf.filter(torch.as_tensor(X))
    for t, obs in enumerate(X):
        fp.predict()
        fp.update(obs.reshape(3, 1), jac, lambda x: h_numpy(x.ravel()).reshape(3, 1))
        np.testing.assert_allclose(means[t].numpy(), fp.x.ravel(), atol=1e-10, rtol=0)
        np.testing.assert_allclose(covs[t].numpy(), fp.P, atol=1e-10, rtol=0)


@pytest.mark.parametrize("alpha,kappa", [(1.0, 0.0), (0.5, 1.0)])
def test_ukf_matches_filterpy(alpha, kappa):
    A, Gamma, R, X = _nonlinear_problem(seed=12)
    points = MerweScaledSigmaPoints(2, alpha=alpha, beta=2.0, kappa=kappa)
    fp = FilterpyUKF(2, 3, dt=1.0, hx=h_numpy, fx=lambda x, dt: A @ x, points=points)
    fp.Q, fp.R, fp.x, fp.P = Gamma, R, np.zeros(2), np.eye(2)
    ukf = _make(
        UnscentedKalmanFilter,
        lambda z: z @ torch.as_tensor(A).mT,
        Gamma,
        R,
        alpha=alpha,
        kappa=kappa,
    )
    means, covs = ukf.filter(torch.as_tensor(X))
    for t, obs in enumerate(X):
        fp.predict()
        fp.update(obs)
        np.testing.assert_allclose(means[t].numpy(), fp.x, atol=1e-10, rtol=0)
        np.testing.assert_allclose(covs[t].numpy(), fp.P, atol=1e-10, rtol=0)


@pytest.mark.parametrize("cls", [ExtendedKalmanFilter, UnscentedKalmanFilter])
def test_nonlinear_batched_equals_loop(cls):
    A, Gamma, R, _ = _nonlinear_problem()
    Xs = torch.as_tensor(np.stack([_nonlinear_problem(seed=s, T=12)[3] for s in range(4)]))
    Xs[1, 3] = float("nan")
    f = _make(cls, A, Gamma, R)
    means, covs = f.filter(Xs)
    for i in range(4):
        m_i, c_i = f.filter(Xs[i])
        torch.testing.assert_close(means[i], m_i, atol=1e-12, rtol=0)
        torch.testing.assert_close(covs[i], c_i, atol=1e-12, rtol=0)
    # the missing row keeps the prediction: the covariance grows instead of shrinking
    assert torch.linalg.det(covs[1, 3]) > torch.linalg.det(covs[1, 2])


def test_ekf_analytic_jacobian_equals_autodiff():
    A, Gamma, R, X = _nonlinear_problem(seed=13, T=15)

    def jac(z):
        one, zero = torch.ones_like(z[..., 0]), torch.zeros_like(z[..., 0])
        rows = [
            torch.stack([torch.cos(z[..., 0]), one], -1),
            torch.stack([z[..., 1], z[..., 0]], -1),
            torch.stack([zero, 0.5 * torch.exp(0.5 * z[..., 1])], -1),
        ]
        return torch.stack(rows, -2)

    auto = _make(ExtendedKalmanFilter, A, Gamma, R).filter(torch.as_tensor(X))
    manual = _make(ExtendedKalmanFilter, A, Gamma, R, observation_jacobian=jac)
    manual = manual.filter(torch.as_tensor(X))
    torch.testing.assert_close(auto[0], manual[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(auto[1], manual[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls", [ExtendedKalmanFilter, UnscentedKalmanFilter])
def test_nonlinear_online_step_equals_filter(cls):
    A, Gamma, R, X = _nonlinear_problem(seed=14, T=10)
    X = torch.as_tensor(X)
    X[3] = float("nan")
    f = _make(cls, A, Gamma, R)
    means, _ = f.filter(X)
    online = torch.stack([f.step(x).mean for x in X])
    torch.testing.assert_close(online, means, atol=1e-12, rtol=0)


def test_ukf_smoother_matches_filterpy_rts_smoother():
    A, Gamma, R, X = _nonlinear_problem(seed=15, T=20)

    # a nonlinear transition as well, so the unscented cross covariance matters
    def g_np(z, dt=1.0):
        return A @ z + 0.1 * np.sin(z)

    def g_torch(z):
        return z @ torch.as_tensor(A).mT + 0.1 * torch.sin(z)

    points = MerweScaledSigmaPoints(2, alpha=1.0, beta=2.0, kappa=0.0)
    fp = FilterpyUKF(2, 3, dt=1.0, hx=h_numpy, fx=g_np, points=points)
    fp.Q, fp.R, fp.x, fp.P = Gamma, R, np.zeros(2), np.eye(2)
    fp_means, fp_covs = fp.batch_filter(list(X))
    fp_smooth, fp_smooth_covs, _ = fp.rts_smoother(fp_means, fp_covs)
    ukf = _make(UnscentedKalmanFilter, g_torch, Gamma, R)
    means, covs = ukf.smooth(torch.as_tensor(X))
    np.testing.assert_allclose(means.numpy(), fp_smooth, atol=1e-10, rtol=0)
    np.testing.assert_allclose(covs.numpy(), fp_smooth_covs, atol=1e-10, rtol=0)
    assert not np.allclose(means[0].numpy(), fp_means[0], atol=1e-4)
