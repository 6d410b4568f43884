"""The decoding pipeline: load or simulate, split, fit every decoder, score on held-out data.

Point it at your own data: ``decoding_pipeline("session.npz")`` (arrays ``X`` and ``Z``),
``decoding_pipeline("session.csv", state_columns=2)`` (the last two columns are the state)
or ``decoding_pipeline(X, Z, train_size=5000, test_size=1000, plot_path="decoded.png")``.
It fits the Kalman filter, EKF and UKF baselines and one DKF per regressor (``"auto"``
included), and reports normalised RMSE, mean absolute angle error (2-D states), fit time,
filtering time per bin and the latency of the online ``step`` (median and 99th percentile).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ppltk._progress import progress_bar
from ppltk._rng import child_seed, make_generator
from ppltk.errors import ArgumentError, ShapeError
from ppltk.filtering._checks import check_training_pair
from ppltk.filtering.dkf import DiscriminativeKalmanFilter
from ppltk.filtering.fit import fit_poisson_observation, fit_state_dynamics
from ppltk.filtering.kalman import KalmanFilter
from ppltk.filtering.metrics import mean_angle_error, normalised_rmse
from ppltk.filtering.nonlinear import ExtendedKalmanFilter, UnscentedKalmanFilter
from ppltk.filtering.regressors import (
    GPRegressor,
    LinearRegressor,
    MLPRegressor,
    NadarayaWatsonRegressor,
)

__all__ = ["DecodingTable", "decoding_pipeline", "load_decoding_data"]

COLUMNS = (
    "method",
    "nrmse",
    "angle_error_deg",
    "fit_s",
    "ms_per_step",
    "step_p50_ms",
    "step_p99_ms",
    "nonpd_fixes",
    "note",
)


@dataclass
class DecodingTable:
    """Rows of decoding results plus the decoded test trajectories.

    ``rows``: one dict per method with keys ``method``, ``nrmse``, ``angle_error_deg``
    (NaN unless the state is 2-D), ``fit_s``, ``ms_per_step`` (batch filtering time per
    bin), ``step_p50_ms`` / ``step_p99_ms`` (wall-clock latency of one online ``step``;
    NaN for the unfiltered regressors), ``nonpd_fixes`` and ``note`` (e.g. the regressor
    ``"auto"`` chose). ``decoded``: ``{method: [T_test, d]}``; ``truth``: ``[T_test, d]``;
    ``figure``: the saved plot, if any.
    """

    rows: list[dict]
    decoded: dict[str, torch.Tensor] = field(repr=False)
    truth: torch.Tensor = field(repr=False)
    figure: Path | None = None

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


def load_decoding_data(path, *, state_columns=2, x_key: str = "X", z_key: str = "Z"):
    """Load ``(X [T, n], Z [T, d])`` as float64 tensors from an ``.npz`` or ``.csv`` file.

    ``.npz``: arrays ``x_key`` and ``z_key``. ``.csv`` (comma-separated, an optional header
    row): the state is the last ``state_columns`` columns (an int), or the columns named in
    ``state_columns`` (a sequence of header names); every other column is an input.
    """
    path = Path(path)
    if not path.is_file():
        raise ArgumentError(f"Expected an existing .npz or .csv file, but found {str(path)!r}")
    import numpy as np

    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as data:
            missing = [k for k in (x_key, z_key) if k not in data.files]
            if missing:
                raise ArgumentError(
                    f"Expected arrays {x_key!r} and {z_key!r} in {path.name}, but found "
                    f"{sorted(data.files)}"
                )
            X, Z = data[x_key], data[z_key]
    elif suffix == ".csv":
        with path.open() as handle:
            first = handle.readline().strip().split(",")
        try:
            [float(v) for v in first]
            header = None
        except ValueError:
            header = [name.strip() for name in first]
        table = np.loadtxt(path, delimiter=",", skiprows=0 if header is None else 1, ndmin=2)
        if isinstance(state_columns, int):
            if not 0 < state_columns < table.shape[1]:
                raise ArgumentError(
                    f"Expected 0 < `state_columns` < {table.shape[1]} columns, but found "
                    f"{state_columns!r}"
                )
            z_idx = list(range(table.shape[1] - state_columns, table.shape[1]))
        else:
            if header is None or any(name not in header for name in state_columns):
                raise ArgumentError(
                    f"Expected state columns {list(state_columns)} in the header of "
                    f"{path.name}, but found {header}"
                )
            z_idx = [header.index(name) for name in state_columns]
        x_idx = [i for i in range(table.shape[1]) if i not in z_idx]
        X, Z = table[:, x_idx], table[:, z_idx]
    else:
        raise ArgumentError(f"Expected a .npz or .csv file, but found {path.name!r}")
    X = torch.as_tensor(np.asarray(X, dtype=np.float64))
    Z = torch.as_tensor(np.asarray(Z, dtype=np.float64))
    if Z.dim() == 1:
        Z = Z.unsqueeze(-1)
    return X, Z


def _regressor(name: str, fast: bool, seed: int):
    if name == "auto":
        return "auto"
    if name == "nw":
        return NadarayaWatsonRegressor(seed=seed)
    if name == "linear":
        return LinearRegressor()
    if name == "mlp":
        return MLPRegressor(epochs=30 if fast else 60, seed=seed)
    if name == "gp":
        return GPRegressor(
            max_points=300 if fast else 1000, iterations=30 if fast else 60, seed=seed
        )
    raise ArgumentError(
        f"Expected regressors from ('auto', 'linear', 'nw', 'mlp', 'gp'), but found {name!r}"
    )


def _step_latency(filt, X_te: torch.Tensor, steps: int) -> tuple[float, float]:
    """Median and 99th percentile (ms) of the online ``step`` on the first test rows."""
    if steps <= 0 or not hasattr(filt, "step"):
        return math.nan, math.nan
    filt.reset()
    rows = X_te[: steps + 10]
    times = []
    for i, x in enumerate(rows):
        start = time.perf_counter()
        filt.step(x)
        if i >= 10:  # warm-up
            times.append(time.perf_counter() - start)
    filt.reset()
    if not times:
        return math.nan, math.nan
    ms = torch.tensor(times, dtype=torch.float64) * 1000.0
    return float(ms.median()), float(torch.quantile(ms, 0.99))


def _score(name, decoded, truth, fit_s, filter_s, fixes, latency=(math.nan, math.nan), note=""):
    angle = float(mean_angle_error(decoded, truth)) if truth.shape[-1] == 2 else math.nan
    return {
        "method": name,
        "nrmse": float(normalised_rmse(decoded, truth)),
        "angle_error_deg": angle,
        "fit_s": float(fit_s),
        "ms_per_step": 1000.0 * filter_s / truth.shape[0],
        "step_p50_ms": latency[0],
        "step_p99_ms": latency[1],
        "nonpd_fixes": int(fixes),
        "note": note,
    }


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _quadratic_features(z: torch.Tensor) -> torch.Tensor:
    d = z.shape[-1]
    iu = torch.triu_indices(d, d, device=z.device)
    return torch.cat([z, (z.unsqueeze(-1) * z.unsqueeze(-2))[..., iu[0], iu[1]]], -1)


def _nonlinear_baselines(X_tr, Z_tr):
    """EKF/UKF observation models: a Poisson GLM ``exp(Wz + c)`` for count data, else a
    quadratic regression of ``x`` on ``z`` (both with a diagonal residual covariance)."""
    dyn = fit_state_dynamics(Z_tr)
    if bool((X_tr >= 0).all()) and bool((X_tr == X_tr.round()).all()):
        glm = fit_poisson_observation(X_tr, Z_tr)
        mean, R, jac, note = glm.mean, glm.R, glm.jacobian, "Poisson GLM observation"
    else:
        quad = LinearRegressor(ridge=1e-6).fit(_quadratic_features(Z_tr), X_tr)

        def mean(z):
            return quad.predict(_quadratic_features(z))

        resid = X_tr - mean(Z_tr)
        R, jac, note = torch.diag_embed(resid.pow(2).mean(0).clamp_min(1e-9)), None, "quadratic"
    args = (dyn.A, mean, dyn.Gamma, R, torch.zeros_like(dyn.S[0]), dyn.S)
    return {
        "EKF": ExtendedKalmanFilter(*args, observation_jacobian=jac),
        "UKF": UnscentedKalmanFilter(*args),
    }, note


def _split(X, Z, train_fraction, train_size, test_size):
    T = X.shape[0]
    if train_size is None:
        if not 0.0 < train_fraction < 1.0:
            raise ArgumentError(
                f"Expected `train_fraction` in (0, 1), but found {train_fraction!r}"
            )
        train_size = int(train_fraction * T)
    test_size = T - train_size if test_size is None else test_size
    if train_size < 10 or test_size < 1 or train_size + test_size > T:
        raise ArgumentError(
            f"Expected train_size >= 10, test_size >= 1 and train_size + test_size <= {T} "
            f"rows, but found {train_size} and {test_size}"
        )
    test = slice(train_size, train_size + test_size)
    return X[:train_size], Z[:train_size], X[test], Z[test]


def decoding_pipeline(
    X=None,
    Z=None,
    *,
    num_neurons: int = 100,
    num_steps: int = 5000,
    bin_ms: float = 20.0,
    tuning: str = "exponential",
    train_fraction: float = 0.8,
    train_size: int | None = None,
    test_size: int | None = None,
    state_columns=2,
    regressors: tuple[str, ...] = ("nw", "mlp", "gp", "auto"),
    covariance: str = "constant",
    nonpd_fix: str = "drop_prior",
    baselines: bool = True,
    unfiltered: bool = True,
    latency_steps: int = 200,
    plot_path=None,
    fast: bool = False,
    seed: int | torch.Generator | None = 0,
    progress: bool = False,
) -> DecodingTable:
    """Fit KF, EKF, UKF, DKF (one per regressor) and the unfiltered regressors; score them.

    Parameters
    ----------
    X, Z
        Inputs ``[T, n]`` and states ``[T, d]`` (tensors or arrays), or ``X`` a path to an
        ``.npz``/``.csv`` file (:func:`load_decoding_data`, with ``state_columns``) and
        ``Z`` None. Without both it simulates data with
        :func:`ppltk.datasets.simulate_neural_decoding` (``num_neurons``, ``num_steps``,
        ``bin_ms``, ``tuning``).
    train_fraction, train_size, test_size
        The first ``train_size`` rows (default ``train_fraction`` of them) train every
        decoder; the next ``test_size`` rows (default: the rest) are decoded and scored.
    regressors
        DKF regressors, from ``"auto"``, ``"linear"``, ``"nw"``, ``"mlp"``, ``"gp"``.
    baselines, unfiltered
        Include the EKF/UKF rows (observation model: a Poisson GLM for counts, else a
        quadratic regression of ``x`` on ``z``) and the unfiltered regressor rows.
    latency_steps
        Online steps timed per filter (0: skip).
    plot_path
        Save the decoded-vs-true figure (KF and the best DKF) to this PNG path.
    """
    gen = make_generator(seed)
    if isinstance(X, (str, Path)):
        if Z is not None:
            raise ArgumentError("Expected `Z` None when `X` is a file path, but found both")
        X, Z = load_decoding_data(X, state_columns=state_columns)
    if X is None or Z is None:
        from ppltk.datasets.neural import simulate_neural_decoding

        X, Z = simulate_neural_decoding(num_neurons, num_steps, bin_ms, gen, tuning=tuning)
    X, Z = check_training_pair(X, Z)
    if Z.shape[1] < 1:
        raise ShapeError(f"Expected a state with d >= 1 columns, but found {tuple(Z.shape)}")
    X_tr, Z_tr, X_te, Z_te = _split(X, Z, train_fraction, train_size, test_size)
    rows, decoded = [], {}
    bar = progress_bar(3 + 2 * len(regressors), "decoding", progress)
    kf, fit_s = _timed(KalmanFilter().fit, X_tr, Z_tr)
    (decoded["KF"], _), filt_s = _timed(kf.filter, X_te)
    lat = _step_latency(kf, X_te, latency_steps)
    rows.append(_score("KF", decoded["KF"], Z_te, fit_s, filt_s, 0, lat))
    bar.update(1)
    if baselines:
        (filters, note), fit_s = _timed(_nonlinear_baselines, X_tr, Z_tr)
        for name, flt in filters.items():
            (decoded[name], _), filt_s = _timed(flt.filter, X_te)
            lat = _step_latency(flt, X_te, latency_steps)
            rows.append(_score(name, decoded[name], Z_te, fit_s, filt_s, 0, lat, note))
            bar.update(1)
    for reg in regressors:
        dkf = DiscriminativeKalmanFilter(
            _regressor(reg, fast, child_seed(gen)),
            covariance,
            nonpd_fix=nonpd_fix,
            warn=False,
            seed=child_seed(gen),
        )
        _, fit_s = _timed(dkf.fit, X_tr, Z_tr)
        name = f"DKF-{reg}"
        (decoded[name], _), filt_s = _timed(dkf.filter, X_te)
        fixes = dkf.last_nonpd_count_
        lat = _step_latency(dkf, X_te, latency_steps)
        note = f"chose {dkf.regressor_name_}" if reg == "auto" else ""
        rows.append(_score(name, decoded[name], Z_te, fit_s, filt_s, fixes, lat, note))
        if unfiltered:
            (raw, _), pred_s = _timed(dkf.predict_measurement, X_te)
            decoded[f"{reg} (unfiltered)"] = raw
            rows.append(_score(f"{reg} (unfiltered)", raw, Z_te, fit_s, pred_s, 0, note=note))
        bar.update(2)
    bar.close()
    table = DecodingTable(rows, decoded, Z_te)
    if plot_path is not None:
        table.figure = _save_plot(table, Path(plot_path))
    return table


def _save_plot(table: DecodingTable, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from ppltk.filtering.plotting import plot_decoded

    dkf_rows = [r for r in table.rows if r["method"].startswith("DKF")]
    shown = ["KF"] + ([min(dkf_rows, key=lambda r: r["nrmse"])["method"]] if dkf_rows else [])
    fig = plot_decoded(table.truth, {name: table.decoded[name] for name in shown})
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
