r"""Exact fractional Brownian motion and classical Hurst estimators (baselines).

* :func:`davies_harte` -- exact fBM on a regular grid by circulant embedding of the
  fractional Gaussian noise (fGn) autocovariance
  :math:`\rho(k) = \tfrac12(|k+1|^{2H} - 2|k|^{2H} + |k-1|^{2H})` (Davies and Harte, 1987).
* :func:`hurst_variogram` -- least-squares slope of :math:`\log E|X(t+k\delta)-X(t)|^2 =
  2H \log k + c`.
* :func:`hurst_gaussian_mle` -- profile Gaussian maximum likelihood of H from the increments
  (fGn with an unknown scale).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.linalg
import scipy.optimize
import torch

from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, ShapeError

__all__ = ["davies_harte", "fgn_autocovariance", "hurst_variogram", "hurst_gaussian_mle"]


def _check_hurst(hurst: float) -> None:
    if not 0 < float(hurst) < 1:
        raise ArgumentError(f"Expected `hurst` in (0, 1), but found {hurst!r}")


def fgn_autocovariance(hurst: float, n: int, dtype=torch.float64) -> torch.Tensor:
    r"""Autocovariance :math:`\rho(0..n-1)` of unit-step fractional Gaussian noise."""
    k = torch.arange(n, dtype=dtype)
    h2 = 2 * float(hurst)
    return 0.5 * ((k + 1).abs() ** h2 - 2 * k.abs() ** h2 + (k - 1).abs() ** h2)


def davies_harte(
    hurst: float, num_steps: int, num_paths: int = 1, horizon: float = 1.0, seed=None
) -> torch.Tensor:
    r"""Exact standard fBM (:math:`\operatorname{Var}B_H(t) = t^{2H}`) on ``num_steps + 1`` points.

    The fGn covariance is embedded in a circulant matrix of size :math:`2n` with eigenvalues
    :math:`\lambda = \mathrm{FFT}(\rho_0..\rho_n, \rho_{n-1}..\rho_1)` (non-negative for fGn);
    :math:`\mathrm{FFT}(\sqrt{\lambda/2n}\,(Z_1 + iZ_2))` has real and imaginary parts that are
    two independent exact fGn samples. Returns ``[num_paths, num_steps + 1]`` float64 paths
    on the grid ``linspace(0, horizon, num_steps + 1)``.

    >>> davies_harte(0.7, num_steps=100, num_paths=3, seed=0).shape
    torch.Size([3, 101])
    """
    _check_hurst(hurst)
    for name, value in (("num_steps", num_steps), ("num_paths", num_paths)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ArgumentError(f"Expected `{name}` an int >= 1, but found {value!r}")
    if not isinstance(horizon, numbers.Real) or not math.isfinite(horizon) or horizon <= 0:
        raise ArgumentError(f"Expected `horizon` a finite number > 0, but found {horizon!r}")
    gen = make_generator(seed)
    n, num_paths, horizon = int(num_steps), int(num_paths), float(horizon)
    rho = fgn_autocovariance(hurst, n + 1)
    row = torch.cat([rho, rho[1:n].flip(0)])
    lam = torch.fft.fft(row).real.clamp_min(0.0)
    half = (num_paths + 1) // 2
    z = torch.randn(half, 2, 2 * n, generator=gen, dtype=torch.float64)
    w = torch.sqrt(lam / (2 * n)) * torch.complex(z[:, 0], z[:, 1])
    f = torch.fft.fft(w)[:, :n]
    fgn = torch.cat([f.real, f.imag], 0)[:num_paths] * (horizon / n) ** hurst
    return torch.cat([torch.zeros(num_paths, 1, dtype=torch.float64), fgn.cumsum(-1)], -1)


def _as_paths(ys) -> np.ndarray:
    arr = np.asarray(ys.detach().cpu() if isinstance(ys, torch.Tensor) else ys, dtype=float)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim == 3:
        arr = np.moveaxis(arr, 2, 1).reshape(-1, arr.shape[1])
    if arr.ndim != 2 or arr.shape[-1] < 4:
        raise ShapeError(
            "Expected `ys` of shape [T], [num_paths, T] or [num_paths, T, dim] with T >= 4, "
            f"but found {tuple(arr.shape)}"
        )
    return arr


def hurst_variogram(ys, max_lag: int | None = None) -> float:
    r"""Variogram estimate of H on a regular grid (paths pooled).

    Regresses :math:`\log \overline{(X_{t+k} - X_t)^2}` on :math:`\log k`,
    :math:`k = 1..` ``max_lag`` (default ``min(10, T // 4)``); :math:`\hat H` = slope / 2.
    """
    x = _as_paths(ys)
    max_lag = max_lag or max(2, min(10, x.shape[1] // 4))
    lags = np.arange(1, max_lag + 1)
    v = [np.mean((x[:, k:] - x[:, :-k]) ** 2) for k in lags]
    slope = np.polyfit(np.log(lags), np.log(v), 1)[0]
    return float(slope / 2)


def _profile_nll(hurst: float, incs: np.ndarray) -> float:
    """Negative profile log-likelihood of fGn increments ``[P, n]`` with a common scale."""
    P, n = incs.shape
    cov = scipy.linalg.toeplitz(fgn_autocovariance(hurst, n).numpy())
    chol = scipy.linalg.cho_factor(cov, lower=True)
    quad = np.sum(incs * scipy.linalg.cho_solve(chol, incs.T).T)
    logdet = 2 * np.sum(np.log(np.diag(chol[0])))
    scale2 = quad / (P * n)
    return 0.5 * P * n * np.log(scale2) + 0.5 * P * logdet


def hurst_gaussian_mle(ys, bounds: tuple[float, float] = (0.02, 0.98)) -> float:
    r"""Profile Gaussian MLE of H from the increments of paths on a regular grid.

    Increments are fGn :math:`\sigma^2 \Sigma_H`; :math:`\hat\sigma^2(H)` is profiled out and
    :math:`-\tfrac{Pn}{2}\log\hat\sigma^2(H) - \tfrac P2 \log|\Sigma_H|` maximised (Brent).
    """
    incs = np.diff(_as_paths(ys), axis=1)
    res = scipy.optimize.minimize_scalar(
        _profile_nll, bounds=bounds, args=(incs,), method="bounded", options={"xatol": 1e-5}
    )
    return float(res.x)
