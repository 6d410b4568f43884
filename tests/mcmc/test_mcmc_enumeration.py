"""NUTS on models with discrete latent sites summed out by enumeration: the same posterior as
the hand-marginalised model (tolerances from Monte Carlo standard errors), discrete draws with
the exact conditional frequencies, and simulation-based calibration."""

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch

from ppltk.errors import DiscreteLatentError
from ppltk.mcmc import sample
from ppltk.mcmc.targets import gaussian_mixture as mixture
from ppltk.mcmc.targets import gaussian_mixture_marginal as mixture_marginal

K = 4.5  # standard errors: two-sided about 7e-6 per check for a normal error
D = torch.float64
Y = torch.tensor([-2.3, -1.6, -2.9, -1.1, 0.4, 1.8, 2.6, 1.5, 2.2, 3.0], dtype=D)


def _scalars(draws: dict) -> dict[str, np.ndarray]:
    """``{name: [chain, draw]}`` for each scalar component of the continuous sites."""
    out = {}
    for name in ("w", "loc", "scale"):
        x = np.asarray(draws[name], dtype=float)
        flat = x.reshape(x.shape[:2] + (-1,))
        for j in range(flat.shape[-1]):
            out[f"{name}[{j}]"] = flat[..., j]
    return out


def test_mixture_posterior_equals_hand_marginalised_and_discrete_draws_are_exact():
    kw = {"num_chains": 4, "num_warmup": 150, "num_samples": 150, "progress": False}
    enumerated = sample(mixture, Y, seed=1, **kw)
    hand = sample(mixture_marginal, Y, seed=2, **kw)
    a, b = _scalars(enumerated.draws), _scalars(hand.draws)
    for name in a:
        se = np.sqrt(
            a[name].var() / az.ess(a[name], method="mean")
            + b[name].var() / az.ess(b[name], method="mean")
        )
        assert abs(a[name].mean() - b[name].mean()) < K * se, (
            name,
            a[name].mean(),
            b[name].mean(),
            se,
        )

    # discrete draws: given each continuous draw s, k_i ~ Bernoulli(p_is) independently, so the
    # frequency of k_i = 1 has mean mean_s(p_is) and variance sum_s p_is (1 - p_is) / S^2
    k = torch.as_tensor(np.asarray(enumerated.draws["k"])).reshape(-1, len(Y)).to(D)
    w = torch.as_tensor(np.asarray(enumerated.draws["w"])).reshape(-1, 2)
    loc = torch.as_tensor(np.asarray(enumerated.draws["loc"])).reshape(-1, 2)
    scale = torch.as_tensor(np.asarray(enumerated.draws["scale"])).reshape(-1, 1, 1)
    logits = w.log()[:, None, :] + dist.Normal(loc[:, None, :], scale).log_prob(Y[None, :, None])
    p = logits.softmax(-1)[..., 1]  # [S, N]
    n = p.shape[0]
    se = (p * (1 - p)).sum(0).sqrt() / n
    assert ((k.mean(0) - p.mean(0)).abs() <= K * se + 1e-12).all(), (k.mean(0), p.mean(0))


def _sbc(r: int, n: int, num_warmup: int, thin: int, seed: int) -> None:
    """Simulation-based calibration: ``r`` data sets from the prior of a tiny mixture
    (``mu ~ N(0, 1)``, ``k_i ~ Bernoulli(1/2)``, ``y_i ~ N(mu + 2 k_i, 1)``, ``i < n``), all in
    one run (the replications are independent, so the joint posterior factorises).  The rank of
    the true ``mu`` among 19 posterior draws ``thin`` apart is uniform on 0..19 when the
    sampler and the enumeration are exact: chi-square test on 5 bins of 4 ranks.  The discrete
    draws pass the data-averaged check ``E_y[P(k = 1 | y)] = P(k = 1) = 1/2``."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(r, 1, generator=gen, dtype=D)
    k = torch.bernoulli(torch.full((r, n), 0.5, dtype=D), generator=gen)
    y = mu + 2 * k + torch.randn(r, n, generator=gen, dtype=D)

    def model(y):
        with pyro.plate("rep", r, dim=-2):
            mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=D), 1.0))
            with pyro.plate("obs", n, dim=-1):
                k = pyro.sample("k", dist.Bernoulli(torch.tensor(0.5, dtype=D)))
                pyro.sample("y", dist.Normal(mu + 2 * k, 1.0), obs=y)

    num_samples = -(-19 * thin // 4)
    res = sample(
        model, y, num_chains=4, num_warmup=num_warmup, num_samples=num_samples, seed=seed,
        progress=False,
    )  # fmt: skip
    draws = torch.as_tensor(np.asarray(res.draws["mu"])).reshape(-1, r)  # [4 * num_samples, r]
    thinned = draws[::thin][:19]
    ranks = (thinned < mu[:, 0]).sum(0)  # 0..19
    counts = torch.bincount(ranks // 4, minlength=5).numpy()
    assert scipy.stats.chisquare(counts).pvalue > 1e-3, counts
    k_draws = torch.as_tensor(np.asarray(res.draws["k"])).to(D)
    assert k_draws.shape == (4, num_samples, r, n)
    post = k_draws.reshape(-1, r * n).mean(0)  # P(k = 1 | y) per data point (Monte Carlo)
    se = post.std() / (r * n) ** 0.5
    assert abs(post.mean() - 0.5) < K * se, (post.mean(), se)


def test_sbc_ranks_are_uniform_on_the_enumerated_path():
    _sbc(r=100, n=3, num_warmup=80, thin=12, seed=3)


@pytest.mark.slow
def test_sbc_ranks_are_uniform_on_the_enumerated_path_long():
    _sbc(r=400, n=5, num_warmup=300, thin=40, seed=4)


def test_poisson_latent_is_refused_naming_the_site():
    def model(y):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        n = pyro.sample("count", dist.Poisson(rate))
        pyro.sample("y", dist.Normal(n, 1.0), obs=y)

    with pytest.raises(DiscreteLatentError, match="'count'.*Poisson.*finite support"):
        sample(model, torch.tensor(2.0), num_warmup=10, num_samples=10, progress=False)
