"""Kalman filter and RTS smoother against float64 oracles: by hand, filterpy, joint Gaussian."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from _filtering_helpers import (
    joint_gaussian,
    random_model,
    reference_kalman,
    simulate,
    torch_model,
)
from filterpy.kalman import KalmanFilter as FilterpyKF

from ppltk.errors import ArgumentError, NotFittedError, ShapeError
from ppltk.filtering import KalmanFilter, normalised_rmse


def make_kf(model: dict) -> KalmanFilter:
    t = torch_model(model)
    return KalmanFilter(t["A"], t["Gamma"], t["H"], t["R"], t["b"], t["m0"], t["P0"])


@pytest.mark.parametrize("seed,d,m", [(0, 2, 3), (1, 3, 1), (2, 4, 6)])
def test_kf_matches_float64_reference_and_filterpy(seed, d, m):
    rng = np.random.default_rng(seed)
    model = random_model(rng, d, m)
    X, _ = simulate(rng, model, T=25)
    means, covs = make_kf(model).filter(torch.as_tensor(X))
    ref_means, ref_covs, ref_ll = reference_kalman(model, X)
    np.testing.assert_allclose(means.numpy(), ref_means, atol=1e-10, rtol=0)
    np.testing.assert_allclose(covs.numpy(), ref_covs, atol=1e-10, rtol=0)
    ll = make_kf(model).log_likelihood(torch.as_tensor(X))
    np.testing.assert_allclose(float(ll), ref_ll, rtol=1e-10)

    fp = FilterpyKF(dim_x=d, dim_z=m)
    fp.F, fp.Q, fp.H, fp.R = model["A"], model["Gamma"], model["H"], model["R"]
    fp.x, fp.P = model["m0"].reshape(d, 1), model["P0"].copy()
    for t, obs in enumerate(X):
        fp.predict()
        fp.update((obs - model["b"]).reshape(m, 1))
        np.testing.assert_allclose(means[t].numpy(), fp.x.ravel(), atol=1e-10, rtol=0)
        np.testing.assert_allclose(covs[t].numpy(), fp.P, atol=1e-10, rtol=0)


def test_log_likelihood_equals_joint_gaussian_density():
    rng = np.random.default_rng(3)
    model = random_model(rng, 2, 2)
    T = 12
    X, _ = simulate(rng, model, T)
    _, mean_x, _, _, cov_xx = joint_gaussian(model, T)
    exact = scipy.stats.multivariate_normal(mean_x, cov_xx).logpdf(X.reshape(-1))
    ll = make_kf(model).log_likelihood(torch.as_tensor(X))
    np.testing.assert_allclose(float(ll), exact, rtol=1e-10)


@pytest.mark.parametrize("seed", [4, 5])
def test_rts_smoother_equals_exact_posterior_from_joint_covariance(seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng, 3, 2)
    T = 10
    X, _ = simulate(rng, model, T)
    mean_z, mean_x, cov_zz, cov_xz, cov_xx = joint_gaussian(model, T)
    # exact conditioning: E[z | x] = m_z + C_zx C_xx^{-1} (x - m_x)
    gain = np.linalg.solve(cov_xx, cov_xz).T
    post_mean = (mean_z + gain @ (X.reshape(-1) - mean_x)).reshape(T, 3)
    post_cov = cov_zz - gain @ cov_xz
    means, covs = make_kf(model).smooth(torch.as_tensor(X))
    np.testing.assert_allclose(means.numpy(), post_mean, atol=1e-9, rtol=0)
    for t in range(T):
        block = post_cov[3 * t : 3 * (t + 1), 3 * t : 3 * (t + 1)]
        np.testing.assert_allclose(covs[t].numpy(), block, atol=1e-9, rtol=0)
    # the last smoothed marginal is the last filtered one, the others differ
    f_means, _ = make_kf(model).filter(torch.as_tensor(X))
    np.testing.assert_allclose(means[-1].numpy(), f_means[-1].numpy(), atol=1e-12)
    assert not np.allclose(means[0].numpy(), f_means[0].numpy(), atol=1e-6)


def test_nan_rows_skip_update_and_equal_exact_marginal_posterior():
    rng = np.random.default_rng(6)
    model = random_model(rng, 2, 3)
    T = 8
    X, _ = simulate(rng, model, T)
    missing = [2, 5]
    X_nan = X.copy()
    X_nan[missing] = np.nan
    X_nan[3, 1] = np.nan  # one NaN entry drops the whole row
    missing.append(3)
    kf = make_kf(model)
    out = kf.filter_full(torch.as_tensor(X_nan))
    for t in missing:
        np.testing.assert_allclose(out.means[t].numpy(), out.pred_means[t].numpy(), atol=0)
        np.testing.assert_allclose(out.covs[t].numpy(), out.pred_covs[t].numpy(), atol=0)
    # oracle: condition the joint Gaussian on the observed rows only
    keep = [t for t in range(T) if t not in missing]
    mean_z, mean_x, cov_zz, cov_xz, cov_xx = joint_gaussian(model, T)
    idx = np.concatenate([np.arange(3 * t, 3 * t + 3) for t in keep])
    gain = np.linalg.solve(cov_xx[np.ix_(idx, idx)], cov_xz[idx]).T
    exact_last = (mean_z + gain @ (X.reshape(-1)[idx] - mean_x[idx]))[-2:]
    np.testing.assert_allclose(out.means[-1].numpy(), exact_last, atol=1e-10)
    exact_ll = scipy.stats.multivariate_normal(mean_x[idx], cov_xx[np.ix_(idx, idx)]).logpdf(
        X.reshape(-1)[idx]
    )
    np.testing.assert_allclose(float(out.log_likelihood), exact_ll, rtol=1e-10)


@pytest.mark.parametrize("with_nan", [True, False], ids=["missing", "shared-cov"])
def test_batched_streams_equal_a_loop(with_nan):
    rng = np.random.default_rng(7)
    model = random_model(rng, 2, 3)
    X = np.stack([simulate(rng, model, 15)[0] for _ in range(6)]).reshape(2, 3, 15, 3)
    if with_nan:
        X[0, 1, 4] = np.nan
    kf = make_kf(model)
    means, covs = kf.filter(torch.as_tensor(X))
    assert means.shape == (2, 3, 15, 2) and covs.shape == (2, 3, 15, 2, 2)
    for i in range(2):
        for j in range(3):
            m_ij, c_ij = kf.filter(torch.as_tensor(X[i, j]))
            torch.testing.assert_close(means[i, j], m_ij, atol=1e-12, rtol=0)
            torch.testing.assert_close(covs[i, j], c_ij, atol=1e-12, rtol=0)
    ll = kf.log_likelihood(torch.as_tensor(X))
    assert ll.shape == (2, 3)
    torch.testing.assert_close(ll[1, 2], kf.log_likelihood(torch.as_tensor(X[1, 2])))
    sm, sc = kf.smooth(torch.as_tensor(X))
    assert sc.shape == (2, 3, 15, 2, 2)
    torch.testing.assert_close(sm[1, 2], kf.smooth(torch.as_tensor(X[1, 2]))[0], atol=1e-12, rtol=0)
    torch.testing.assert_close(sc[0, 1], kf.smooth(torch.as_tensor(X[0, 1]))[1], atol=1e-12, rtol=0)


def test_fit_recovers_linear_gaussian_model():
    rng = np.random.default_rng(8)
    model = random_model(rng, 2, 3)
    T = 4000
    X, Z = simulate(rng, model, T)
    kf = KalmanFilter().fit(torch.as_tensor(X), torch.as_tensor(Z))
    # least-squares standard errors are O(1/sqrt(T)) ~ 0.016 times O(1) noise scales;
    # 0.1 is > 5 standard errors for every entry of these well-conditioned models
    np.testing.assert_allclose(kf.A.numpy(), model["A"], atol=0.1)
    np.testing.assert_allclose(kf.H.numpy(), model["H"], atol=0.1)
    np.testing.assert_allclose(kf.b.numpy(), model["b"], atol=0.1)
    np.testing.assert_allclose(kf.R.numpy(), model["R"], atol=0.1)
    np.testing.assert_allclose(kf.Gamma.numpy(), model["Gamma"], atol=0.1)
    S = kf.init_cov.numpy()
    np.testing.assert_allclose(S, kf.A.numpy() @ S @ kf.A.numpy().T + kf.Gamma.numpy(), atol=1e-10)


def test_kf_errors():
    with pytest.raises(NotFittedError):
        KalmanFilter().filter(torch.zeros(3, 2))
    kf = KalmanFilter(torch.eye(2), torch.eye(2), torch.ones(3, 2), torch.eye(3))
    with pytest.raises(ShapeError, match=r"\[\.\.\., T, 3\]"):
        kf.filter(torch.zeros(5, 2))
    with pytest.raises(ShapeError, match="observation_cov"):
        KalmanFilter(torch.eye(2), torch.eye(2), torch.ones(3, 2), torch.eye(2))
    with pytest.raises(ShapeError):
        KalmanFilter().fit(torch.zeros(10, 3), torch.zeros(9, 2))
    bad = torch.zeros(10, 3)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        KalmanFilter().fit(bad, torch.randn(10, 2, dtype=torch.float32))


def test_batched_parameters_broadcast_against_streams():
    rng = np.random.default_rng(9)
    models = [random_model(rng, 2, 2) for _ in range(3)]
    X = np.stack([simulate(rng, m, 10)[0] for m in models])
    stacked = {k: torch.as_tensor(np.stack([m[k] for m in models])) for k in models[0]}
    kf = KalmanFilter(
        stacked["A"],
        stacked["Gamma"],
        stacked["H"],
        stacked["R"],
        stacked["b"],
        stacked["m0"],
        stacked["P0"],
    )
    means, covs = kf.filter(torch.as_tensor(X))
    for i, model in enumerate(models):
        ref_means, ref_covs, _ = reference_kalman(model, X[i])
        np.testing.assert_allclose(means[i].numpy(), ref_means, atol=1e-10, rtol=0)
        np.testing.assert_allclose(covs[i].numpy(), ref_covs, atol=1e-10, rtol=0)


def test_online_step_equals_filter():
    rng = np.random.default_rng(10)
    model = random_model(rng, 2, 3)
    X = torch.as_tensor(np.stack([simulate(rng, model, 12)[0] for _ in range(2)]))
    X[1, 5] = float("nan")
    kf = make_kf(model)
    means, covs = kf.filter(X)
    kf.reset((2,))
    online = [kf.step(X[:, t]) for t in range(12)]
    torch.testing.assert_close(torch.stack([s.mean for s in online], 1), means, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.stack([s.cov for s in online], 1), covs, atol=1e-12, rtol=0)


def test_fit_without_offset_and_zero_init_is_the_textbook_least_squares_kf():
    """``fit(offset=False, init_cov="zero")`` is the textbook decoding KF (Wu et al. 2006):
    least squares through the origin, z_0 = 0 exactly; checked against numpy."""
    rng = np.random.default_rng(11)
    model = random_model(rng, 2, 6)
    model["b"] = np.zeros(6)
    X, Z = simulate(rng, model, 800)
    kf = KalmanFilter().fit(torch.as_tensor(X), torch.as_tensor(Z), offset=False, init_cov="zero")
    prev, nxt = Z[:-1], Z[1:]
    A = np.linalg.lstsq(prev, nxt, rcond=None)[0].T
    G = (nxt - prev @ A.T).T @ (nxt - prev @ A.T) / (len(prev) - 2)
    H = np.linalg.lstsq(Z, X, rcond=None)[0].T
    R = (X - Z @ H.T).T @ (X - Z @ H.T) / (len(Z) - 2)
    ref = {"A": A, "Gamma": G, "H": H, "R": R, "b": np.zeros(6), "m0": np.zeros(2)}
    ref["P0"] = np.zeros((2, 2))
    means, _, _ = reference_kalman(ref, X)
    np.testing.assert_allclose(kf.filter(torch.as_tensor(X))[0].numpy(), means, atol=1e-8)
    # the default (offset, stationary start) differs only slightly on stationary data
    default = KalmanFilter().fit(torch.as_tensor(X[:600]), torch.as_tensor(Z[:600]))
    textbook = KalmanFilter().fit(
        torch.as_tensor(X[:600]), torch.as_tensor(Z[:600]), offset=False, init_cov="zero"
    )
    errs = [
        float(normalised_rmse(k.filter(torch.as_tensor(X[600:]))[0], torch.as_tensor(Z[600:])))
        for k in (default, textbook)
    ]
    assert abs(errs[0] - errs[1]) < 0.01
    with pytest.raises(ArgumentError, match="init_cov"):
        KalmanFilter().fit(torch.as_tensor(X), torch.as_tensor(Z), init_cov="identity")
