"""The blocks examples of docs/blocks.md (docs/examples/*.py) run and are exact in law."""

import importlib.util
import math
from pathlib import Path

import pyro.distributions as dist
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
D = torch.float64


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def conjugate(n=12, s=2.0):
    """theta ~ N(0, s^2 I_2), y_j ~ N(theta, I): exact log evidence and posterior mean."""
    y = torch.randn(n, 2, dtype=D, generator=torch.Generator().manual_seed(0)) + 1.0
    cov = torch.eye(n, dtype=D) + s**2 * torch.ones(n, n, dtype=D)
    mvn = dist.MultivariateNormal(torch.zeros(n, dtype=D), cov)
    logz = float(mvn.log_prob(y[:, 0]) + mvn.log_prob(y[:, 1]))
    post_mean = y.sum(0) / (1 / s**2 + n)

    def log_prior(u):
        return dist.Normal(0.0, s).log_prob(u).sum(-1)

    def log_lik_t(t, u):
        return dist.Normal(u, 1.0).log_prob(y[t]).sum(-1)

    def log_lik(u):
        return sum(log_lik_t(t, u) for t in range(n))

    return y, s, logz, post_mean, log_prior, log_lik_t, log_lik


def test_waste_free_tempered_example_is_consistent():
    y, s, logz, post_mean, log_prior, _, log_lik = conjugate()
    wf = load("waste_free_tempered")
    ests, means = [], []
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        z = s * torch.randn(2000, 2, dtype=D, generator=g)
        pop = wf.waste_free_tempered(log_prior, log_lik, z, num_chains=200, generator=g)
        ests.append(float(pop.log_evidence_estimate()))
        means.append(pop.mean())
    ests = torch.tensor(ests)
    assert abs(ests.mean() - logz) < 5 * max(float(ests.std()), 0.02) / math.sqrt(5) + 0.05
    torch.testing.assert_close(torch.stack(means).mean(0), post_mean, atol=0.05, rtol=0)


def test_ibis_example_matches_exact_evidence():
    y, s, logz, post_mean, log_prior, log_lik_t, _ = conjugate()
    ibis = load("ibis_move")

    def sample_prior(n, g):
        return s * torch.randn(n, 2, dtype=D, generator=g)

    ests = []
    for seed in range(5):
        fk = ibis.IBIS(log_prior, log_lik_t, len(y), sample_prior, num_moves=3)
        state = ibis.run_ibis(fk, 1000, torch.Generator().manual_seed(seed))
        ests.append(float(state.log_evidence))
    ests = torch.tensor(ests)
    assert abs(ests.mean() - logz) < 5 * max(float(ests.std()), 0.02) / math.sqrt(5) + 0.05
    torch.testing.assert_close(state.population.mean(), post_mean, atol=0.1, rtol=0)
