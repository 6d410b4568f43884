"""Solvers of the augmented fractional SDE: torchsde parity, moments, guards."""

import math

import pytest
import torch
import torchsde

from ppltk.errors import ArgumentError, ShapeError
from ppltk.sde import FractionalSDE, MarkovFBM, sdeint_fractional
from ppltk.sde.solvers import time_grid

SIGMA = 0.7


def _drift(t, x):
    return -x + 0.3 * torch.sin(x)


def _control(t, x, y=None, tau=None, nxt=None):
    return torch.tanh(x) + 0.5 * t


class _TorchsdeLatent(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):  # posterior drift b + sigma u
        return _drift(t, y) + SIGMA * _control(float(t), y)

    def g(self, t, y):
        return torch.full_like(y, SIGMA)

    def h(self, t, y):  # prior drift
        return _drift(t, y)


def test_sde_path_kl_equals_torchsde_logqp_on_brownian_case():
    """K=1, gamma=0, omega=1 with a shared Brownian path: same states, same Euler path KL."""
    batch, d, dt = 6, 3, 0.01
    ts = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    x0 = torch.randn(batch, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # logqp appends one state (the running KL) with zero diffusion, hence d + 1 noises
    bm = torchsde.BrownianInterval(
        t0=0.0,
        t1=1.0,
        size=(batch, d + 1),
        dtype=torch.float64,
        entropy=5,
        levy_area_approximation="none",
    )
    sol, logqp = torchsde.sdeint(
        _TorchsdeLatent(), x0, ts, bm=bm, dt=dt, method="euler", logqp=True
    )
    grid = time_grid(ts, dt)
    dW = torch.stack([bm(t, t + h)[:, :d] for t, h, _ in grid])
    sde = FractionalSDE(_drift, SIGMA, brownian=True)
    out = sdeint_fractional(sde, x0, ts, dt=dt, method="euler", control=_control, dW=dW)
    # torchsde accumulates t += dt while we use t0 + j * span / m; BrownianInterval answers the
    # slightly different query times with bridge samples that differ at the 1e-8 level.
    assert torch.allclose(out.xs, sol, atol=1e-6)
    assert torch.allclose(out.path_kl, logqp.sum(0), rtol=1e-6)
    assert float(out.path_kl.min()) > 0


@pytest.mark.parametrize("method", ["exact", "euler", "heun"])
def test_sde_prior_variance_matches_markov_fbm(method):
    """dX = dB_hat (b=0, sigma=1): Var X(T) = omega^T E[Z Z^T] omega (Type II).

    Tolerance: 4 standard errors of a sample variance, var * sqrt(2 / (N - 1)), plus the
    O(dt) bias of Euler/Heun (gamma_max dt = 0.1 here; we allow 5%).
    """
    n, T = 3000, 1.0
    sde = FractionalSDE(0.0, 1.0, hurst=0.3, num_processes=4, gamma_min=0.5, gamma_max=10.0)
    ts = torch.linspace(0.0, T, 5, dtype=torch.float64)
    out = sdeint_fractional(
        sde, torch.zeros(n, 1, dtype=torch.float64), ts, dt=0.01, method=method, seed=1
    )
    mfbm = MarkovFBM(0.3, gammas=sde.gammas, horizon=T)
    target = float(mfbm.variance(torch.tensor([T]))[0])
    tol = 4 * target * math.sqrt(2 / (n - 1)) + (0 if method == "exact" else 0.05 * target)
    assert float(out.xs[-1, :, 0].var()) == pytest.approx(target, abs=tol)
    assert float(out.path_kl.abs().max()) == 0.0


def test_sde_heun_and_euler_reproduce_ou_mean():
    """Brownian case with linear drift: E X(T) = x0 e^{-T} under Heun and exact steps."""
    n = 4000
    x0 = torch.full((n, 1), 2.0, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sde = FractionalSDE(lambda t, x: -x, 0.5, brownian=True)
    for method in ("heun", "euler"):
        out = sdeint_fractional(sde, x0, ts, dt=0.01, method=method, seed=2)
        sd = math.sqrt(0.25 * (1 - math.exp(-2)) / 2 / n)
        assert float(out.xs[-1].mean()) == pytest.approx(2 * math.exp(-1), abs=4 * sd + 0.01)


def test_sde_solver_guards():
    sde = FractionalSDE(0.0, 1.0, hurst=0.3, num_processes=3, gamma_max=100.0)
    x0 = torch.zeros(2, 1, dtype=torch.float64)
    ts = torch.linspace(0, 1, 3, dtype=torch.float64)
    with pytest.raises(ArgumentError, match="gamma_max"):
        sdeint_fractional(sde, x0, ts, dt=0.01, method="euler")
    with pytest.raises(ArgumentError, match="method"):
        sdeint_fractional(sde, x0, ts, method="rk4")
    with pytest.raises(ShapeError, match="x0"):
        sdeint_fractional(sde, torch.zeros(3, dtype=torch.float64), ts)
    with pytest.raises(ShapeError, match="dW"):
        sdeint_fractional(sde, x0, ts, dt=0.001, method="euler", dW=torch.zeros(3, 2, 1))
    out = sdeint_fractional(sde, x0, ts, dt=0.1, method="exact", seed=0)
    assert out.xs.shape == (3, 2, 1) and out.ys.shape == (3, 2, 1, 3)


class _TorchsdeAugmented(torch.nn.Module):
    """The MA-fBM augmented state (X, Y) written for torchsde with general noise."""

    noise_type, sde_type = "general", "ito"

    def __init__(self, sde: FractionalSDE, d: int) -> None:
        super().__init__()
        self.d, self.g_, self.w = d, sde.gammas, sde.omega().detach()

    def _drift(self, t, z, controlled):
        d, K = self.d, self.g_.numel()
        x, y = z[:, :d], z[:, d:].reshape(-1, d, K)
        u = _control(float(t), x) if controlled else torch.zeros_like(x)
        fx = _drift(t, x) + SIGMA * (self.w.sum() * u - (y * self.w * self.g_).sum(-1))
        return torch.cat([fx, (-self.g_ * y + u[..., None]).flatten(1)], -1)

    def f(self, t, z):
        return self._drift(t, z, True)

    def h(self, t, z):
        return self._drift(t, z, False)

    def g(self, t, z):
        d, K = self.d, self.g_.numel()
        eye = torch.eye(d, dtype=z.dtype)
        gy = eye[:, None, :].expand(d, K, d).reshape(d * K, d)
        return torch.cat([SIGMA * self.w.sum() * eye, gy], 0).expand(z.shape[0], -1, -1)


def test_sde_fractional_euler_matches_torchsde_general_noise():
    """MA-fBM (K=3): our Euler states and path KL equal torchsde's on the augmented system
    with general noise and a shared Brownian path (torchsde recovers u by a pseudo-inverse)."""
    batch, d, dt = 4, 2, 0.01
    sde = FractionalSDE(_drift, SIGMA, hurst=0.3, num_processes=3, gamma_min=0.5, gamma_max=20.0)
    ts = torch.linspace(0.0, 0.5, 6, dtype=torch.float64)
    x0 = torch.randn(batch, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z0 = torch.cat([x0, torch.zeros(batch, d * 3, dtype=torch.float64)], -1)
    bm = torchsde.BrownianInterval(t0=0.0, t1=0.5, size=(batch, d), dtype=torch.float64, entropy=3)
    peer = _TorchsdeAugmented(sde, d)
    sol, logqp = torchsde.sdeint(peer, z0, ts, bm=bm, dt=dt, method="euler", logqp=True)
    dW = torch.stack([bm(t, t + h) for t, h, _ in time_grid(ts, dt)])
    out = sdeint_fractional(sde, x0, ts, dt=dt, method="euler", control=_control, dW=dW)
    assert torch.allclose(out.xs, sol[..., :d], atol=1e-6)
    assert torch.allclose(out.ys.flatten(2), sol[..., d:], atol=1e-6)
    assert torch.allclose(out.path_kl, logqp.sum(0), rtol=1e-6)


@pytest.mark.parametrize("dt", [0.0, -0.1, float("nan"), float("inf")])
def test_sdeint_rejects_non_positive_or_nan_dt(dt):
    sde = FractionalSDE(0.0, 1.0, hurst=0.7)
    x0 = torch.zeros(2, 1, dtype=torch.float64)
    with pytest.raises(ArgumentError, match="`dt`"):
        sdeint_fractional(sde, x0, torch.linspace(0, 1, 5), dt=dt, method="euler")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_sdeint_rejects_nan_or_inf_times(bad):
    sde = FractionalSDE(0.0, 1.0, hurst=0.7)
    x0 = torch.zeros(2, 1, dtype=torch.float64)
    with pytest.raises(ArgumentError, match="finite `ts`"):
        sdeint_fractional(sde, x0, torch.tensor([0.0, bad, 2.0]))
    with pytest.raises(ArgumentError, match="finite `ts`"):
        sdeint_fractional(sde, x0, torch.tensor([0.0, 1.0, bad]))


def test_sdeint_rejects_half_precision_state():
    sde = FractionalSDE(0.0, 1.0, hurst=0.7)
    with pytest.raises(ArgumentError, match="float16"):
        sdeint_fractional(sde, torch.zeros(2, 1, dtype=torch.float16), torch.linspace(0, 1, 3))
