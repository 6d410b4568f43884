"""Kalman-family filters, the discriminative Kalman filter and neural-decoding tools.

Every filter works on a batch of independent streams ``X [..., T, n]`` (NaN rows skip the
update) and has ``filter(X) -> (means [..., T, d], covs [..., T, d, d])`` and an online
``reset()`` / ``step(x_t)``; the KF, EKF and UKF also ``smooth`` and give a
``log_likelihood``. Scikit-learn-like use::

    from ppltk.datasets import simulate_neural_decoding
    from ppltk.filtering import DiscriminativeKalmanFilter, normalised_rmse

    X, Z = simulate_neural_decoding(100, 5000, bin_ms=20.0, seed=0, tuning="exponential")
    dkf = DiscriminativeKalmanFilter().fit(X[:4000], Z[:4000])  # regressor="auto"
    print(dkf)  # which regressor "auto" chose
    means, covs = dkf.filter(X[4000:])
    print(normalised_rmse(means, Z[4000:]))
"""

from ppltk.filtering.covariance import ConstantCovariance, KernelCovariance, make_covariance
from ppltk.filtering.dkf import (
    NONPD_FIXES,
    DiscriminativeKalmanFilter,
    dkf_update,
    pseudo_observation,
)
from ppltk.filtering.fit import (
    LinearObservation,
    PoissonObservation,
    StateDynamics,
    fit_linear_observation,
    fit_poisson_observation,
    fit_state_dynamics,
    stationary_covariance,
)
from ppltk.filtering.kalman import KalmanFilter, KalmanOutput, kalman_update
from ppltk.filtering.metrics import mean_angle_error, normalised_rmse
from ppltk.filtering.nonlinear import ExtendedKalmanFilter, UnscentedKalmanFilter
from ppltk.filtering.pipeline import DecodingTable, decoding_pipeline, load_decoding_data
from ppltk.filtering.plotting import plot_decoded
from ppltk.filtering.regressors import (
    GPRegressor,
    LinearRegressor,
    MLPRegressor,
    NadarayaWatsonRegressor,
    make_regressor,
)
from ppltk.gaussian import GaussianState

__all__ = [
    "ConstantCovariance",
    "DiscriminativeKalmanFilter",
    "ExtendedKalmanFilter",
    "UnscentedKalmanFilter",
    "GPRegressor",
    "GaussianState",
    "KalmanFilter",
    "KalmanOutput",
    "KernelCovariance",
    "LinearObservation",
    "LinearRegressor",
    "MLPRegressor",
    "NONPD_FIXES",
    "NadarayaWatsonRegressor",
    "StateDynamics",
    "PoissonObservation",
    "DecodingTable",
    "decoding_pipeline",
    "load_decoding_data",
    "fit_poisson_observation",
    "mean_angle_error",
    "normalised_rmse",
    "plot_decoded",
    "dkf_update",
    "fit_linear_observation",
    "fit_state_dynamics",
    "kalman_update",
    "make_covariance",
    "make_regressor",
    "pseudo_observation",
    "stationary_covariance",
]
