"""Bad input to the Kalman family gets a named ppltk error, never a raw one or a silent NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _filtering_helpers import random_model, simulate

from ppltk.errors import ArgumentError, NotPositiveDefiniteError, NumericalError, ShapeError
from ppltk.filtering import (
    DiscriminativeKalmanFilter,
    ExtendedKalmanFilter,
    KalmanFilter,
    UnscentedKalmanFilter,
)

EYE = torch.eye(1, dtype=torch.float64)
ZERO = torch.zeros(1, dtype=torch.float64)


RENAME = {"Gamma": "transition_cov", "R": "observation_cov", "A": "transition_matrix"}


def kf(**over):
    p = dict(transition_matrix=0.9 * EYE, transition_cov=EYE, observation_matrix=EYE)
    p["observation_cov"] = EYE
    p.update({RENAME.get(k, k): v for k, v in over.items()})
    return KalmanFilter(**p)


def nonlinear(cls, **over):
    p = dict(transition=0.9 * EYE, observation=EYE, transition_cov=EYE, observation_cov=EYE)
    p.update(init_mean=ZERO, init_cov=EYE)
    p.update({RENAME.get(k, k).replace("_matrix", ""): v for k, v in over.items()})
    return cls(**p)


BUILDERS = {
    "kf": kf,
    "ekf": lambda **o: nonlinear(ExtendedKalmanFilter, **o),
    "ukf": lambda **o: nonlinear(UnscentedKalmanFilter, **o),
}


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("arg, label", [("R", "observation_cov"), ("Gamma", "transition_cov")])
def test_non_pd_covariance_is_refused_at_construction_naming_it(name, arg, label):
    with pytest.raises(NotPositiveDefiniteError, match=f"`{label}`"):
        BUILDERS[name](**{arg: -0.05 * EYE})


@pytest.mark.parametrize("name", list(BUILDERS))
def test_asymmetric_covariance_is_refused(name):
    eye2 = torch.eye(2, dtype=torch.float64)
    skew = torch.tensor([[1.0, 0.5], [-0.5, 1.0]], dtype=torch.float64)
    two_d = {"A": 0.9 * eye2, "R": eye2} | (
        {} if name == "kf" else {"init_mean": torch.zeros(2, dtype=torch.float64), "init_cov": eye2}
    )
    with pytest.raises(NotPositiveDefiniteError, match="`transition_cov`.*symmetric"):
        BUILDERS[name](**two_d, Gamma=skew, observation_matrix=eye2)


@pytest.mark.parametrize("name", ["ekf", "ukf"])
def test_non_pd_init_cov_is_refused(name):
    with pytest.raises(NotPositiveDefiniteError, match="`init_cov`"):
        BUILDERS[name](init_cov=-EYE)
    with pytest.raises(NotPositiveDefiniteError, match="`init_cov`"):
        kf(init_cov=-EYE)


def test_singular_psd_noise_is_still_accepted():
    # a constant-velocity model has singular process noise: PSD, legitimate
    A = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    Gamma = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    H = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    means, _ = KalmanFilter(A, Gamma, H, EYE).filter(torch.randn(5, 1, dtype=torch.float64))
    assert torch.isfinite(means).all()


def test_fitted_kalman_filter_refuses_a_non_pd_overwrite_at_fit():
    rng = np.random.default_rng(0)
    X, Z = simulate(rng, random_model(rng, 2, 3), 200)
    fitted = KalmanFilter().fit(torch.as_tensor(X), torch.as_tensor(Z))
    assert torch.linalg.eigvalsh(fitted.R).min() > 0
    with pytest.raises(NotPositiveDefiniteError, match="`observation_cov`"):
        KalmanFilter(fitted.A, fitted.Gamma, fitted.H, -fitted.R)


def test_ukf_runtime_failure_is_named():
    # P0 = 0 is PSD, but the UKF needs a Cholesky factor of the state covariance
    ukf = nonlinear(UnscentedKalmanFilter, init_cov=0 * EYE, transition_cov=0 * EYE)
    with pytest.raises(NotPositiveDefiniteError, match="Cholesky"):
        ukf.filter(torch.zeros(3, 1, dtype=torch.float64))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_empty_stream_and_inf_and_half_precision_are_named(name):
    f = BUILDERS[name]()
    with pytest.raises(ShapeError, match="T >= 1"):
        f.filter(torch.zeros(0, 1, dtype=torch.float64))
    with pytest.raises(ArgumentError, match="inf"):
        f.filter(torch.tensor([[0.0], [float("inf")]], dtype=torch.float64))
    with pytest.raises(ArgumentError, match="inf"):
        f.step(torch.tensor([float("inf")], dtype=torch.float64))
    with pytest.raises(ShapeError, match="x"):
        f.step(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ArgumentError, match="float16"):
        BUILDERS[name](**{"A": EYE.half()} if name == "kf" else {"init_mean": ZERO.half()})


def test_overflow_is_a_named_error_not_nan():
    with pytest.raises(NumericalError, match="finite"):
        kf(transition_matrix=1e200 * EYE).filter(torch.ones(4, 1, dtype=torch.float64))


def _dkf(seed=0):
    rng = np.random.default_rng(seed)
    X, Z = simulate(rng, random_model(rng, 2, 5), 300)
    return DiscriminativeKalmanFilter("linear").fit(X, Z), torch.as_tensor(X)


def test_dkf_rejects_inf_in_the_stream_like_the_kalman_filter():
    dkf, X = _dkf()
    stream = X[:40].clone()
    stream[3, 1] = float("inf")
    with pytest.raises(ArgumentError, match="inf"):
        dkf.filter(stream)
    with pytest.raises(ArgumentError, match="inf"):
        dkf.step(stream[3])
    stream[3, 1] = float("nan")  # NaN marks a missing row: the rest of the stream is fine
    means, _ = dkf.filter(stream)
    assert torch.isfinite(means).all()


def test_dkf_empty_stream_half_precision_and_non_pd_parts_are_named():
    dkf, X = _dkf()
    with pytest.raises(ShapeError, match="T >= 1"):
        dkf.filter(X[:0])
    with pytest.raises(ShapeError, match="5"):
        dkf.filter(X[:4, :3])
    with pytest.raises(ArgumentError, match="float16"):
        DiscriminativeKalmanFilter("linear").fit(X.half(), X[:, :2].half())
    with pytest.raises(NotPositiveDefiniteError, match="`Gamma`"):
        DiscriminativeKalmanFilter.from_parts(0.5 * EYE, -EYE, dkf.regressor, dkf.covariance)
    with pytest.raises(NotPositiveDefiniteError, match="`S`"):
        DiscriminativeKalmanFilter.from_parts(0.5 * EYE, EYE, dkf.regressor, dkf.covariance, S=-EYE)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_simulator_on_cuda_without_a_gpu_is_a_named_error():
    from ppltk.datasets import simulate_neural_decoding

    with pytest.raises(ArgumentError, match="no GPU"):
        simulate_neural_decoding(5, 10, device="cuda")
    with pytest.raises(ArgumentError, match="`dtype`"):
        simulate_neural_decoding(5, 10, dtype=torch.float16)


def test_singular_regression_design_is_named():
    from ppltk.filtering import LinearRegressor

    X = torch.zeros(10, 2, dtype=torch.float64)  # constant features: X^T X singular
    with pytest.raises(NotPositiveDefiniteError, match="ridge"):
        LinearRegressor().fit(X, torch.randn(10, 1, dtype=torch.float64))


def test_dkf_with_a_singular_fitted_q_is_named():
    rng = np.random.default_rng(1)
    Z = np.zeros((30, 2))
    for t in range(1, 30):
        Z[t] = 0.8 * Z[t - 1] + 0.5 * rng.normal(size=2)
    X = torch.as_tensor(np.c_[Z, Z[:, :1]])  # f(x) fits Z exactly: zero residuals, Q = 0
    dkf = DiscriminativeKalmanFilter("linear").fit(X, torch.as_tensor(Z))
    with pytest.raises(NotPositiveDefiniteError, match="Q"):
        dkf.filter(X[:3])
