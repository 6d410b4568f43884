"""ChEES-HMC: exact posterior moments (MCSE tolerances), adaptation sanity, SBC, resumption,
reproducibility and argument checks.

Moment checks pass within ``K = 4.5`` Monte Carlo standard errors,
``SE(mean) = sqrt(v / ESS_mean)`` and ``SE(var) = sqrt((mu_4 - v^2) / ESS_sd)`` with ArviZ
ESS over all chains (two-sided, about 7e-6 per check for a normal error).
"""

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats

from ppltk.errors import ArgumentError, InterruptedWarning
from ppltk.mcmc import ChEES, ChEESParams, sample, sample_flat
from ppltk.mcmc.chees import OPTIMAL_TARGET_ACCEPT, chees_gradient, harmonic_mean_accept
from ppltk.mcmc.targets import correlated_covariance, gaussian_logdensity

K = 4.5
DTYPE = torch.float64


def assert_moments(x: np.ndarray, mean: float, var: float, name: str = "") -> None:
    """Mean and variance of ``x [chain, draw]`` within K MC standard errors of the truth."""
    x = np.asarray(x, dtype=float)
    se_mean = np.sqrt(var / az.ess(x, method="mean"))
    mu4 = np.mean((x - x.mean()) ** 4)
    se_var = np.sqrt(max(mu4 - var**2, 1e-12) / az.ess(x, method="sd"))
    assert abs(x.mean() - mean) < K * se_mean, f"{name}: mean {x.mean()} vs {mean} (SE {se_mean})"
    assert abs(x.var() - var) < K * se_var, f"{name}: var {x.var()} vs {var} (SE {se_var})"


def _init(chains: int, dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(chains, dim, generator=gen, dtype=DTYPE) * 4 - 2


def _scaled_gaussian(scales: torch.Tensor):
    def logdensity_and_grad(z):
        return -0.5 * ((z / scales) ** 2).sum(-1), -z / scales**2

    return logdensity_and_grad


def test_correlated_ill_scaled_gaussian_moments():
    dim = 6
    cov = correlated_covariance(dim, rho=0.7)  # scales 0.1 .. 10, correlation 0.7
    mean = torch.linspace(-1.0, 1.0, dim, dtype=DTYPE)
    out = sample_flat(
        gaussian_logdensity(mean, cov), _init(128, dim), kernel="chees", num_warmup=300,
        num_samples=200, seed=3, progress=False,
    )  # fmt: skip
    assert out.positions.shape == (128, 200, dim)
    assert out.num_divergences == 0
    x = out.positions.numpy()
    for d in range(dim):
        assert_moments(x[..., d], float(mean[d]), float(cov[d, d]), f"dim {d}")
    # lock-step: one step size, trajectory length and metric for all chains, frozen
    for name in ("step_size", "trajectory_length", "n_steps"):
        value = out.stats[name]
        assert (value == value[:1]).all(), name
    assert (out.stats["step_size"] == out.stats["step_size"][0, 0]).all()
    assert isinstance(out.params, ChEESParams)
    assert set(ChEES.stat_names) == set(out.stats)


def normal_normal(y):
    theta = pyro.sample("theta", dist.Normal(1.0, 2.0))
    with pyro.plate("N", y.shape[0]):
        pyro.sample("y", dist.Normal(theta, 1.5), obs=y)


def test_conjugate_model_through_sample():
    y = torch.tensor([0.3, 2.1, 1.4, -0.2, 3.0, 1.1])
    precision = 1 / 2.0**2 + len(y) / 1.5**2
    mean = (1.0 / 2.0**2 + y.sum().item() / 1.5**2) / precision
    res = sample(
        normal_normal, y, kernel="chees", num_chains=64, num_warmup=200, num_samples=100,
        seed=1, progress=False,
    )  # fmt: skip
    assert res.method == "chees"
    assert res.draws["theta"].shape == (64, 100)
    assert_moments(res.draws["theta"], mean, 1 / precision, "theta")
    assert {"lp", "accept_prob", "step_size", "trajectory_length", "n_steps", "diverging"} <= set(
        res.stats
    )
    assert res.attrs["num_divergences"] == 0


def test_trajectory_grows_to_the_widest_scale_and_step_size_hits_the_target():
    """Unit metric on N(0, diag(s^2)), s in [0.3, 3.2]: ChEES's optimum for a jittered
    trajectory on a Gaussian of scale s is T = 2.25 s (tan 2x = 2x), so T must grow from 0.1
    to within 40% of 2.25 times the widest scale; the harmonic-mean acceptance ends near
    0.651."""
    scales = torch.logspace(-0.5, 0.5, 10, dtype=DTYPE)
    optimum = 2.25 * float(scales.max())  # ChEES's exact optimum for the widest scale
    start = 0.1  # 1.4% of the optimum: only adaptation can bring T into the band below
    assert start / optimum < 0.6
    out = sample_flat(
        _scaled_gaussian(scales), _init(128, 10), kernel=ChEES(trajectory_length=start),
        num_warmup=400, num_samples=100, seed=0, adapt_mass=False, progress=False,
    )  # fmt: skip
    length = float(out.params.trajectory_length[0])
    # Adam on a noisy criterion settles near, not at, the optimum: 0.82-0.96 of it over the
    # seeds tried; +-40% still tells adaptation from none (1.4%) and from running away
    assert 0.6 < length / optimum < 1.4, length / optimum
    # per-iteration harmonic mean over chains, averaged over the kept iterations
    accept = out.stats["accept_prob"].clamp(min=1e-10)
    harmonic = (1.0 / (1.0 / accept).mean(0)).mean()
    # dual averaging hits 0.651 during warm-up; the final step size is the iterates' average
    # (as in Stan), a little smaller, so the kept draws accept a little more (0.72-0.74 at
    # seeds 0-4)
    assert OPTIMAL_TARGET_ACCEPT - 0.05 < float(harmonic) < OPTIMAL_TARGET_ACCEPT + 0.15
    x = out.positions.numpy()
    for d in (0, 9):
        assert_moments(x[..., d], 0.0, float(scales[d] ** 2), f"dim {d}")


def test_metric_is_the_cross_chain_variance():
    scales = torch.logspace(-1, 1, 10, dtype=DTYPE)
    out = sample_flat(
        _scaled_gaussian(scales), _init(128, 10), kernel="chees", num_warmup=300,
        num_samples=20, seed=0, progress=False,
    )  # fmt: skip
    ratio = out.params.inverse_mass[0] / scales**2
    assert ((ratio > 0.7) & (ratio < 1.3)).all(), ratio
    # preconditioned, every direction has scale 1: T of order 1 (not of order 10)
    assert 0.5 < float(out.params.trajectory_length[0]) < 15.0


def test_chees_gradient_sign_on_a_gaussian():
    """Exact draws of N(0, I): the ChEES gradient is positive for a short trajectory
    (T = 1 < 2.25) and negative just past the optimum (T = 3)."""
    kernel, gen = ChEES(), torch.Generator().manual_seed(0)
    ld = _scaled_gaussian(torch.ones(5, dtype=DTYPE))
    signs = []
    for length in (1.0, 3.0):
        grads = []
        for _ in range(10):
            z = torch.randn(2000, 5, generator=gen, dtype=DTYPE)
            ones = torch.ones(2000, dtype=DTYPE)
            params = ChEESParams(0.1 * ones, torch.ones_like(z), length * ones)
            _, info = kernel.step(kernel.init(z, ld), ld, params, gen)
            ok = ~info["diverging"]
            grads.append(float(chees_gradient(
                z, info["proposal_position"], info["proposal_momentum"], info["accept_prob"],
                ok, params.inverse_mass, info["jitter"] * length,
            )))  # fmt: skip
        signs.append(np.sign(np.mean(grads)))
    assert signs == [1.0, -1.0]


def test_harmonic_mean_accept():
    acc = torch.tensor([0.5, 1.0, 0.25, 0.0], dtype=DTYPE)
    ok = torch.tensor([True, True, True, False])
    assert float(harmonic_mean_accept(acc, ok)) == pytest.approx(3 / (2 + 1 + 4))
    assert float(harmonic_mean_accept(acc, torch.zeros(4, dtype=torch.bool))) == 0.0


def test_reproducible_from_a_seed():
    ld = _scaled_gaussian(torch.tensor([0.5, 2.0], dtype=DTYPE))
    run = lambda seed: sample_flat(  # noqa: E731
        ld, _init(16, 2), kernel="chees", num_warmup=50, num_samples=20, seed=seed,
        progress=False,
    ).positions  # fmt: skip
    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_non_finite_region_is_rejected_per_chain():
    """Half-normal written with -inf outside z > 0: the chains stay in the support."""

    def ld(z):
        lp = torch.where(z[:, 0] > 0, -0.5 * (z**2).sum(-1), -math.inf)
        return lp, -z

    init = _init(64, 2).abs() + 0.1
    out = sample_flat(ld, init, kernel="chees", num_warmup=150, num_samples=100, seed=0,
                      progress=False, warn_divergences=False)  # fmt: skip
    assert (out.positions[..., 0] > 0).all()
    assert int(out.attrs["nonfinite_evaluations"].sum()) > 0
    assert_moments(out.positions[..., 0].numpy(), math.sqrt(2 / math.pi), 1 - 2 / math.pi)


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
    ld = _scaled_gaussian(torch.tensor([0.5, 2.0, 1.0], dtype=DTYPE))
    opts = dict(kernel="chees", num_warmup=60, num_samples=40, seed=4, progress=False)
    full = sample_flat(ld, _init(16, 3), **opts)
    calls = {"n": 0}

    def flaky(z):
        calls["n"] += 1
        if calls["n"] == 300:
            raise KeyboardInterrupt
        return ld(z)

    path = tmp_path / "chees.pt"
    with pytest.warns(InterruptedWarning):
        part = sample_flat(flaky, _init(16, 3), checkpoint=path, checkpoint_every=10, **opts)
    assert part.interrupted
    resumed = sample_flat(ld, _init(16, 3), checkpoint=path, checkpoint_every=10, **opts)
    assert torch.equal(resumed.positions, full.positions)
    assert torch.equal(resumed.params.trajectory_length, full.params.trajectory_length)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(jitter=0.0), "jitter"),
        (dict(jitter=1.5), "jitter"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(decay_rate=2.0), "decay_rate"),
        (dict(max_leapfrog_steps=0), "max_leapfrog_steps"),
        (dict(trajectory_length=-1.0), "trajectory_length"),
        (dict(max_delta_energy=0.0), "max_delta_energy"),
    ],
)
def test_bad_kernel_arguments_are_named(kwargs, name):
    with pytest.raises(ArgumentError, match=f"`{name}`"):
        ChEES(**kwargs)


def test_bad_run_arguments_are_named():
    ld = _scaled_gaussian(torch.ones(2, dtype=DTYPE))
    with pytest.raises(ArgumentError, match="`dense_mass`"):
        sample_flat(ld, _init(8, 2), kernel="chees", dense_mass=True, progress=False)
    with pytest.raises(ArgumentError, match="`init_position`"):
        sample_flat(ld, _init(1, 2), kernel="chees", num_warmup=10, progress=False)
    with pytest.raises(ArgumentError, match="`kernel`"):
        sample_flat(ld, _init(8, 2), kernel="cheese", progress=False)


X = torch.linspace(-1.0, 1.0, 5, dtype=DTYPE)


def _sbc_logdensity(y):
    def logdensity_and_grad(z):
        resid = y - z[:, :1] - z[:, 1:] * X  # [R, 5]
        lp = -0.5 * (z**2).sum(-1) - 0.5 * (resid**2).sum(-1)
        grad = -z + torch.stack([resid.sum(-1), (resid * X).sum(-1)], -1)
        return lp, grad

    return logdensity_and_grad


@pytest.mark.parametrize("reps", [300, pytest.param(1500, marks=pytest.mark.slow)])
def test_sbc_ranks_are_uniform(reps):
    """SBC (Talts et al. 2018) on a, b ~ N(0, 1), y_i ~ N(a + b x_i, 1): one chain per
    replication (each with its own data y_r, so the shared warm-up is tuned on a mixture of
    posteriors, which affects efficiency only); ranks of a*, b* among L = 20 thinned draws are
    uniform on {0..L}: 7 bins of 3, chi-square test at level 1e-3 per parameter."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(reps, 2, generator=gen, dtype=DTYPE)
    y = theta[:, :1] + theta[:, 1:] * X + torch.randn(reps, 5, generator=gen, dtype=DTYPE)
    thin, draws = 5, 20
    out = sample_flat(
        _sbc_logdensity(y), torch.zeros(reps, 2, dtype=DTYPE), kernel="chees", num_warmup=150,
        num_samples=thin * draws, seed=1, progress=False,
    )  # fmt: skip
    post = out.positions[:, thin - 1 :: thin]
    ranks = (post < theta[:, None, :]).sum(1)
    for d in range(2):
        counts = torch.bincount(ranks[:, d] // 3, minlength=7).numpy()
        assert stats.chisquare(counts).pvalue > 1e-3, (d, counts)


@pytest.mark.slow
def test_hundred_dimensional_correlated_gaussian_moments():
    dim = 100
    cov = correlated_covariance(dim, rho=0.5)
    out = sample_flat(
        gaussian_logdensity(torch.zeros(dim, dtype=DTYPE), cov), _init(256, dim),
        kernel="chees", num_warmup=600, num_samples=300, seed=0, progress=False,
    )  # fmt: skip
    x = out.positions.numpy()
    for d in (0, 50, 99):
        assert_moments(x[..., d], 0.0, float(cov[d, d]), f"dim {d}")


def test_a_chain_started_far_out_is_brought_in():
    """One chain starts at log-density -1.5e6, where every move of the others' step size
    diverges; the harmonic-mean acceptance (dominated by the worst chain) shrinks the shared
    step size until it moves in, then warm-up grows it back; kept draws are exact."""
    ld = _scaled_gaussian(torch.ones(3, dtype=DTYPE))
    init = _init(32, 3)
    init[5] = 1000.0
    out = sample_flat(ld, init, kernel="chees", num_warmup=200, num_samples=100, seed=0,
                      progress=False)  # fmt: skip
    assert out.attrs["restarts"].shape == (32,)
    assert out.positions.abs().max() < 10
    assert out.num_divergences == 0
    assert_moments(out.positions[..., 0].numpy(), 0.0, 1.0)


def test_adapted_parameters_continue_sampling_and_float32():
    """The frozen ChEES parameters of one run drive another (no warm-up, even one chain);
    float32 positions stay float32 throughout."""
    ld = _scaled_gaussian(torch.tensor([0.5, 2.0], dtype=torch.float32))
    init = _init(32, 2).float()
    first = sample_flat(ld, init, kernel="chees", num_warmup=100, num_samples=10, seed=0,
                        progress=False)  # fmt: skip
    assert first.positions.dtype == torch.float32
    assert first.params.trajectory_length.dtype == torch.float32
    again = sample_flat(ld, first.state.position, kernel="chees", num_warmup=0,
                        num_samples=10, seed=1, params=first.params, progress=False)  # fmt: skip
    assert torch.equal(again.stats["trajectory_length"][:, 0], first.params.trajectory_length)
    one = sample_flat(ld, first.state.position[:1], kernel="chees", num_warmup=0,
                      num_samples=5, seed=1, params=first.params.take(torch.tensor([0])),
                      progress=False)  # fmt: skip
    assert one.positions.shape == (1, 5, 2)
