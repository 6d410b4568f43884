"""Variational posterior of fractional SDEs: the bound, the bridge-step KL, learning H."""

import math

import pytest
import torch

from ppltk._rng import make_generator
from ppltk.errors import NotFittedError, ShapeError
from ppltk.sde import (
    FractionalSDE,
    LatentFractionalSDE,
    MarkovFBM,
    VariationalFractionalSDE,
    davies_harte,
    fit_hurst,
    hurst_gaussian_mle,
    hurst_variogram,
    ou_increment_covariance,
)
from ppltk.sde.guided import _bridge_step
from ppltk.sde.variational import check_series


def _built_model(hurst, ts, ys, seed=0, **kw):
    model = VariationalFractionalSDE(hurst_init=hurst, **kw)
    model._build(*check_series(ts, ys), make_generator(seed))
    return model


def _exact_log_evidence(model, ts, ys):
    """log p(y) of the linear-Gaussian model: x0 + sigma * B_hat(t) + noise, per observation."""
    P, T, _ = ys.shape
    sig = float(model.sde.sigma(0.0, torch.zeros(1, 1, dtype=torch.float64)).detach())
    mfbm = MarkovFBM(model.hurst, gammas=model.sde.gammas, horizon=float(ts[-1]))
    cov = sig**2 * mfbm.covariance(ts) + float(model.obs_noise) ** 2 * torch.eye(
        T, dtype=torch.float64
    )
    cov = cov + float(model.x0_prior_scale) ** 2
    loc = torch.full((T,), float(model.x0_prior_loc), dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(loc, cov)
    return float(mvn.log_prob(ys[..., 0]).sum()) / (P * T)


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_sde_elbo_is_a_tight_lower_bound(hurst):
    """ELBO <= log p(y) for the zero-initialised control and for a random control.

    Each ELBO is a mean over 128 posterior paths; the 4 seeds give a standard error, and we
    allow 3 of them above the bound. The zero-net (guided) bound is also tight (< 0.1 nats per
    observation from log p(y)).
    """
    T, P = 24, 4
    ts = torch.linspace(0, 1, T, dtype=torch.float64)
    ys = davies_harte(hurst, T - 1, P, seed=2)[..., None]
    model = _built_model(hurst, ts, ys)
    logp = _exact_log_evidence(model, ts, ys)
    with torch.no_grad():
        zero = torch.stack([model.elbo(num_particles=32, seed=k) for k in range(4)])
        for p in model.net.parameters():
            p.copy_(
                0.5
                * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype)
            )
        rand = torch.stack([model.elbo(num_particles=32, seed=k) for k in range(4)])
    for est in (zero, rand):
        se = float(est.std()) / 2
        assert float(est.mean()) <= logp + 3 * se + 1e-9
    assert logp - float(zero.mean()) < 0.1
    assert float(rand.mean()) < float(zero.mean())  # a random control is worse than the guide


def test_sde_bridge_step_kl_matches_gaussian_oracle():
    """Step KL = KL of the joint (dW, xi) noise law under q vs p (both Gaussian).

    q: the prior noise shifted by the control (u tau, phi u), then conditioned on y.
    """
    sde = FractionalSDE(0.0, 0.8, hurst=0.3, num_processes=2, gamma_min=0.7, gamma_max=3.0)
    g, w = sde.gammas, sde.omega()
    tau, s2 = 0.4, torch.tensor(0.05, dtype=torch.float64)
    x = torch.tensor([[0.2]], dtype=torch.float64)
    y = torch.tensor([[[0.3, -0.5]]], dtype=torch.float64)
    y_obs = torch.tensor([[1.1]], dtype=torch.float64)
    u = torch.tensor([[0.9]], dtype=torch.float64)
    _, _, _, kl = _bridge_step(sde, g, w, 0.0, tau, x, y, y_obs, s2, u, make_generator(0), {})
    gam = torch.cat([torch.zeros(1, dtype=torch.float64), g])
    sigma_n = ou_increment_covariance(gam, tau)  # covariance of (dW, xi_1, xi_2)
    phi = -torch.expm1(-g * tau) / g
    mean_u = torch.cat([u[0] * tau, phi * u[0]])
    load = torch.cat([torch.zeros(1, dtype=torch.float64), 0.8 * w])  # S = load . N
    m = 0.2 + 0.8 * float((y[0, 0] * w * (torch.exp(-g * tau) - 1)).sum())
    cov_ny = sigma_n @ load
    var_y = load @ sigma_n @ load + s2
    mean_q = mean_u + cov_ny * (1.1 - m - load @ mean_u) / var_y
    cov_q = sigma_n - torch.outer(cov_ny, cov_ny) / var_y
    q = torch.distributions.MultivariateNormal(mean_q, cov_q)
    p = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), sigma_n)
    assert float(kl[0]) == pytest.approx(float(torch.distributions.kl_divergence(q, p)), rel=1e-8)


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_sde_fit_hurst_recovers_truth(hurst, record_property):
    """Fractional BM (Davies--Harte), 6 paths x 48 points: fitted H within 0.1 of the truth.

    Reported next to the variogram and Gaussian-MLE estimates on the same paths (the MLE is
    the best possible here; the variational fit must land within 0.1 of the truth as well).
    """
    T = 48
    ts = torch.linspace(0, 1, T, dtype=torch.float64)
    ys = davies_harte(hurst, T - 1, 6, seed=1)[..., None]
    fitted = fit_hurst(ts, ys, seed=0, num_steps=80, num_particles=2, lr=0.05)
    report = {
        "truth": hurst,
        "variational": fitted,
        "variogram": hurst_variogram(ys),
        "gaussian_mle": hurst_gaussian_mle(ys),
    }
    record_property("hurst_estimates", report)
    print(report)
    assert fitted == pytest.approx(hurst, abs=0.1), report
    assert report["gaussian_mle"] == pytest.approx(hurst, abs=0.1), report


def test_sde_fit_api_and_posterior_paths():
    T = 16
    ts = torch.linspace(0, 2, T, dtype=torch.float64)
    ys = davies_harte(0.4, T - 1, 3, horizon=2.0, seed=3)[..., None] * 2.0
    model = VariationalFractionalSDE(num_particles=2, drift="ou")
    with pytest.raises(NotFittedError):
        _ = model.hurst
    model.fit(ts, ys, num_steps=5, seed=1, progress=False)
    assert len(model.elbo_history) == 5 and 0 < model.hurst < 1
    paths, grid = model.sample_posterior_paths(num_samples=200, seed=0)
    assert paths.shape == (200, 3, len(grid), 1) and grid.shape == (4 * (T - 1) + 1,)
    # at observation times the posterior sits within the observation noise of the data:
    # |mean - y| <= 4 * s (the posterior sd there is below s, so this holds with margin)
    s = float(model.obs_noise)
    at_obs = paths.mean(0)[:, ::4]
    assert float((at_obs[:, 1:] - ys[:, 1:]).abs().max()) < 4 * s
    model.fit(ts, ys[:2], num_steps=1, seed=1, progress=False)  # refitting rebuilds the model
    assert model.sample_posterior_paths(2)[0].shape[1] == 2
    one = VariationalFractionalSDE(num_particles=2).fit(ts, ys[0], num_steps=2, progress=False)
    assert one.sample_posterior_paths(4, substeps=1)[0].shape == (4, 1, T, 1)
    with pytest.raises(ShapeError, match="ys"):
        fit_hurst(ts, torch.zeros(2, T + 1, 1))


def test_sde_brownian_special_case_keeps_half():
    T = 12
    ts = torch.linspace(0, 1, T, dtype=torch.float64)
    ys = davies_harte(0.5, T - 1, 2, seed=5)[..., None]
    model = VariationalFractionalSDE(brownian=True, num_particles=2).fit(
        ts, ys, num_steps=3, progress=False
    )
    assert model.hurst == 0.5
    assert torch.equal(model.sde.omega(), torch.ones(1, dtype=torch.float64))
    assert torch.equal(model.sde.gammas, torch.zeros(1, dtype=torch.float64))


def test_sde_latent_model_improves_elbo():
    """Encoder -> x0, fractional SDE, decoder: 25 Adam steps raise the ELBO on a noisy sine."""
    gen = torch.Generator().manual_seed(0)
    ts = torch.linspace(0, 1, 12)
    ys = torch.stack([torch.sin(6 * ts + p) for p in torch.rand(8, generator=gen) * 6], 0)
    ys = torch.stack([ys, torch.cos(6 * ts)[None].expand_as(ys)], -1) + 0.05 * torch.randn(
        8, 12, 2, generator=gen
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LatentFractionalSDE(obs_dim=2, latent_dim=3, num_processes=3, gamma_max=20.0)
    model.fit(ts, ys, num_steps=25, dt=0.02, seed=0, progress=False)
    first, last = model.elbo_history[:5], model.elbo_history[-5:]
    assert sum(last) / 5 > sum(first) / 5 + 0.5
    assert 0 < model.hurst < 1 and math.isfinite(model.elbo_history[-1])


def test_sde_latent_hoisted_control_equals_the_net():
    """The split first layer gives the same control as net([x, context])."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LatentFractionalSDE(obs_dim=2, latent_dim=3, context_dim=5).double()
        torch.nn.init.normal_(model.control.net[-1].weight)
    gen = torch.Generator().manual_seed(1)
    ctx = torch.randn(4, 6, 5, generator=gen, dtype=torch.float64)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    control = model._hoisted_control(ctx, 3)
    for nxt in (1, 4):
        expected = model.control(torch.cat([x, ctx[:, nxt - 1]], -1))
        assert torch.allclose(control(0.0, x, None, 0.1, nxt), expected, atol=1e-12)


@pytest.mark.slow
def test_sde_demo_rows(tmp_path):
    from ppltk.demo.sde import run_demo

    rows = run_demo(fast=True, outdir=tmp_path)
    assert {"capability", "check", "value", "reference", "figure"} <= set(rows[0])
    assert rows[0]["figure"] and (tmp_path / "sde_hurst.png").exists()
    for row in rows[:-1]:
        assert abs(row["value"] - row["reference"]) < 0.1


def test_sde_fit_type_one_and_multidimensional_series():
    """Type I (stationary Y(0)) and a 2-d series run end to end with finite ELBOs."""
    T = 10
    ts = torch.linspace(0, 1, T, dtype=torch.float64)
    ys = davies_harte(0.6, T - 1, 4, seed=6).reshape(2, 2, T).transpose(1, 2)  # [2, T, 2]
    model = VariationalFractionalSDE(kind="I", num_particles=2).fit(
        ts, ys, num_steps=3, progress=False
    )
    assert all(math.isfinite(e) for e in model.elbo_history) and 0 < model.hurst < 1
    assert model.sample_posterior_paths(3, substeps=2)[0].shape == (3, 2, 2 * (T - 1) + 1, 2)
    assert 0 < fit_hurst(ts, ys[0], num_steps=2, num_particles=1) < 1


def test_sde_fit_is_reproducible_from_seed():
    T = 10
    ts = torch.linspace(0, 1, T, dtype=torch.float64)
    ys = davies_harte(0.4, T - 1, 2, seed=8)[..., None]
    runs = [
        VariationalFractionalSDE(num_particles=2).fit(ts, ys, num_steps=3, seed=s, progress=False)
        for s in (5, 5, 6)
    ]
    assert runs[0].elbo_history == runs[1].elbo_history and runs[0].hurst == runs[1].hurst
    assert runs[0].elbo_history != runs[2].elbo_history


@pytest.mark.cuda
def test_sde_fit_and_latent_model_on_cuda():
    T = 10
    ts = torch.linspace(0, 1, T, dtype=torch.float64, device="cuda")
    ys = davies_harte(0.4, T - 1, 2, seed=8)[..., None].cuda()
    model = VariationalFractionalSDE(num_particles=2).fit(ts, ys, num_steps=2, progress=False)
    assert 0 < model.hurst < 1
    paths, _ = model.sample_posterior_paths(2)
    assert paths.device.type == "cuda"
    latent = LatentFractionalSDE(obs_dim=1, latent_dim=2, num_processes=2, gamma_max=10.0).cuda()
    latent.fit(ts.float(), ys.float(), num_steps=2, dt=0.05, progress=False)
    assert math.isfinite(latent.elbo_history[-1])
