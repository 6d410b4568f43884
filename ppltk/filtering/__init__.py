"""Kalman-family filters, the discriminative Kalman filter and neural-decoding tools."""

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
from ppltk.filtering.pipeline import DecodingTable, decoding_pipeline
from ppltk.filtering.plotting import plot_decoded
from ppltk.filtering.regressors import (
    GPRegressor,
    LinearRegressor,
    MLPRegressor,
    NadarayaWatsonRegressor,
    make_regressor,
)

__all__ = [
    "ConstantCovariance",
    "DiscriminativeKalmanFilter",
    "ExtendedKalmanFilter",
    "UnscentedKalmanFilter",
    "GPRegressor",
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
