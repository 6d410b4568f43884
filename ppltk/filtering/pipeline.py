"""The neural-decoding pipeline: simulate, split, fit every decoder, score on held-out data."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ppltk._progress import progress_bar
from ppltk._rng import child_seed, make_generator
from ppltk.errors import ArgumentError
from ppltk.filtering._checks import check_training_pair
from ppltk.filtering.dkf import DiscriminativeKalmanFilter
from ppltk.filtering.fit import fit_poisson_observation, fit_state_dynamics
from ppltk.filtering.kalman import KalmanFilter
from ppltk.filtering.metrics import mean_angle_error, normalised_rmse
from ppltk.filtering.nonlinear import ExtendedKalmanFilter, UnscentedKalmanFilter
from ppltk.filtering.regressors import GPRegressor, MLPRegressor, NadarayaWatsonRegressor

__all__ = ["DecodingTable", "decoding_pipeline"]

COLUMNS = ("method", "nrmse", "angle_error_deg", "fit_s", "ms_per_step", "nonpd_fixes")


@dataclass
class DecodingTable:
    """Rows of decoding results plus the decoded test trajectories.

    ``rows``: one dict per method with keys ``method``, ``nrmse``, ``angle_error_deg``,
    ``fit_s``, ``ms_per_step`` (filtering time per bin), ``nonpd_fixes``.
    ``decoded``: ``{method: [T_test, 2]}``; ``truth``: ``[T_test, 2]``.
    """

    rows: list[dict]
    decoded: dict[str, torch.Tensor] = field(repr=False)
    truth: torch.Tensor = field(repr=False)

    def to_markdown(self) -> str:
        """The table as GitHub markdown."""
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for row in self.rows:
            cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def best(self) -> dict:
        """The row with the lowest nRMSE."""
        return min(self.rows, key=lambda row: row["nrmse"])


def _regressor(name: str, fast: bool, seed: int):
    if name == "nw":
        return NadarayaWatsonRegressor(seed=seed)
    if name == "mlp":
        return MLPRegressor(epochs=30 if fast else 60, seed=seed)
    if name == "gp":
        return GPRegressor(
            max_points=300 if fast else 1000, iterations=30 if fast else 60, seed=seed
        )
    raise ArgumentError(f"Expected regressors from ('nw', 'mlp', 'gp'), but found {name!r}")


def _score(name, decoded, truth, fit_s, filter_s, fixes) -> dict:
    return {
        "method": name,
        "nrmse": float(normalised_rmse(decoded, truth)),
        "angle_error_deg": float(mean_angle_error(decoded, truth)),
        "fit_s": float(fit_s),
        "ms_per_step": 1000.0 * filter_s / truth.shape[0],
        "nonpd_fixes": int(fixes),
    }


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _nonlinear_baselines(X_tr, Z_tr):
    dyn = fit_state_dynamics(Z_tr)
    glm = fit_poisson_observation(X_tr, Z_tr)
    args = (dyn.A, glm.mean, dyn.Gamma, glm.R, torch.zeros_like(dyn.S[0]), dyn.S)
    return {
        "EKF": ExtendedKalmanFilter(*args, observation_jacobian=glm.jacobian),
        "UKF": UnscentedKalmanFilter(*args),
    }


def decoding_pipeline(
    X=None,
    Z=None,
    *,
    num_neurons: int = 100,
    num_steps: int = 5000,
    bin_ms: float = 20.0,
    tuning: str = "exponential",
    train_fraction: float = 0.8,
    regressors: tuple[str, ...] = ("nw", "mlp", "gp"),
    covariance: str = "constant",
    nonpd_fix: str = "drop_prior",
    fast: bool = False,
    seed: int | torch.Generator | None = 0,
    progress: bool = False,
) -> DecodingTable:
    """Fit KF, EKF, UKF, DKF (one per regressor) and the unfiltered regressors; score them.

    Without ``X``/``Z`` it simulates data with :func:`ppltk.datasets.simulate_neural_decoding`
    (``num_neurons``, ``num_steps``, ``bin_ms``, ``tuning``). The first ``train_fraction`` of
    the bins trains every decoder; the rest are decoded and scored by normalised RMSE and
    mean absolute angle error.
    """
    gen = make_generator(seed)
    if X is None or Z is None:
        from ppltk.datasets.neural import simulate_neural_decoding

        X, Z = simulate_neural_decoding(num_neurons, num_steps, bin_ms, gen, tuning=tuning)
    X, Z = check_training_pair(X, Z)
    if not 0.0 < train_fraction < 1.0:
        raise ArgumentError(f"Expected `train_fraction` in (0, 1), but found {train_fraction!r}")
    split = int(train_fraction * X.shape[0])
    X_tr, Z_tr, X_te, Z_te = X[:split], Z[:split], X[split:], Z[split:]
    rows, decoded = [], {}
    bar = progress_bar(3 + 2 * len(regressors), "decoding", progress)
    kf, fit_s = _timed(KalmanFilter().fit, X_tr, Z_tr)
    (decoded["KF"], _), filt_s = _timed(kf.filter, X_te)
    rows.append(_score("KF", decoded["KF"], Z_te, fit_s, filt_s, 0))
    bar.update(1)
    baselines, fit_s = _timed(_nonlinear_baselines, X_tr, Z_tr)
    for name, flt in baselines.items():
        (decoded[name], _), filt_s = _timed(flt.filter, X_te)
        rows.append(_score(name, decoded[name], Z_te, fit_s, filt_s, 0))
        bar.update(1)
    for reg in regressors:
        dkf = DiscriminativeKalmanFilter(
            _regressor(reg, fast, child_seed(gen)), covariance, nonpd_fix=nonpd_fix, warn=False
        )
        _, fit_s = _timed(dkf.fit, X_tr, Z_tr)
        (decoded[f"DKF-{reg}"], _), filt_s = _timed(dkf.filter, X_te)
        rows.append(
            _score(f"DKF-{reg}", decoded[f"DKF-{reg}"], Z_te, fit_s, filt_s, dkf.last_nonpd_count_)
        )
        (raw, _), pred_s = _timed(dkf.predict_measurement, X_te)
        decoded[f"{reg} (unfiltered)"] = raw
        rows.append(_score(f"{reg} (unfiltered)", raw, Z_te, fit_s, pred_s, 0))
        bar.update(2)
    bar.close()
    return DecodingTable(rows, decoded, Z_te)
