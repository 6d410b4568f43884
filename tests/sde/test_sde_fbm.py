"""Davies--Harte exact fBM and the baseline Hurst estimators."""

import math

import pytest
import torch

from ppltk.errors import ArgumentError, ShapeError
from ppltk.sde import davies_harte, fgn_autocovariance, hurst_gaussian_mle, hurst_variogram


@pytest.mark.parametrize("hurst", [0.3, 0.75])
def test_sde_davies_harte_covariance(hurst):
    """Sample covariance of fBM values vs 1/2 (s^2H + t^2H - |t-s|^2H).

    Entry-wise Monte Carlo SE <= var_max * sqrt(2 / N); allow 4 SE.
    """
    n_paths, n = 6000, 8
    paths = davies_harte(hurst, n, n_paths, horizon=2.0, seed=11)
    assert paths.shape == (n_paths, n + 1) and bool((paths[:, 0] == 0).all())
    t = torch.linspace(0, 2.0, n + 1, dtype=torch.float64)[1:]
    h2 = 2 * hurst
    exact = 0.5 * (t[:, None] ** h2 + t[None, :] ** h2 - (t[:, None] - t[None, :]).abs() ** h2)
    emp = torch.cov(paths[:, 1:].T)
    tol = 4 * float(exact.diagonal().max()) * math.sqrt(2 / n_paths)
    assert float((emp - exact).abs().max()) < tol


def test_sde_fgn_autocovariance_values():
    rho = fgn_autocovariance(0.5, 4)
    assert torch.allclose(rho, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    assert float(fgn_autocovariance(0.8, 2)[1]) == pytest.approx(0.5 * (2**1.6 - 2))


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_sde_baseline_estimators_recover_hurst(hurst):
    """16 exact paths of 256 steps: both estimators within 0.05 (their SD here is ~0.01-0.02)."""
    paths = davies_harte(hurst, 256, 16, seed=4)
    assert hurst_gaussian_mle(paths) == pytest.approx(hurst, abs=0.05)
    assert hurst_variogram(paths) == pytest.approx(hurst, abs=0.05)
    assert hurst_variogram(paths[..., None]) == pytest.approx(hurst_variogram(paths))


def test_sde_fbm_argument_errors():
    with pytest.raises(ArgumentError, match="hurst"):
        davies_harte(1.0, 10)
    with pytest.raises(ShapeError, match="ys"):
        hurst_variogram(torch.zeros(2, 2))


@pytest.mark.parametrize("horizon", [-1.0, 0.0, float("nan"), float("inf")])
def test_davies_harte_rejects_a_bad_horizon_instead_of_complex_output(horizon):
    with pytest.raises(ArgumentError, match="`horizon`"):
        davies_harte(0.7, num_steps=10, horizon=horizon)


def test_davies_harte_rejects_float_step_counts():
    with pytest.raises(ArgumentError, match="`num_steps`"):
        davies_harte(0.7, num_steps=10.5)
