"""Discrete latent sites summed out by enumeration in ModelBridge, against exact oracles:
hand-marginalised log-densities (logsumexp for a mixture, the forward algorithm for an HMM)
and brute-force conditional probabilities for the discrete draws."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk._rng import make_generator
from ppltk.errors import DiscreteLatentError, ModelStructureError
from ppltk.mcmc.targets import gaussian_mixture as mixture
from ppltk.mcmc.targets import gaussian_mixture_marginal as mixture_marginal
from ppltk.model import ModelBridge

D = torch.float64
Y_MIX = torch.tensor([-2.1, -1.7, -2.6, 0.3, 1.9, 2.4, 1.6, 2.2], dtype=D)
Y_HMM = torch.tensor([0.1, -1.3, 2.2, 2.9, 1.7, -0.4, -2.0, 0.8, 3.1, 2.5], dtype=D)


def hmm(y):
    trans = pyro.sample("trans", dist.Dirichlet(torch.ones(3, 3, dtype=D)).to_event(1))
    loc = pyro.sample("loc", dist.Normal(torch.zeros(3, dtype=D), 3.0).to_event(1))
    x = 0
    for t in pyro.markov(range(len(y))):
        x = pyro.sample(f"x_{t}", dist.Categorical(trans[x]))
        pyro.sample(f"y_{t}", dist.Normal(loc[x], 1.0), obs=y[t])


def hmm_prior():
    pyro.sample("trans", dist.Dirichlet(torch.ones(3, 3, dtype=D)).to_event(1))
    pyro.sample("loc", dist.Normal(torch.zeros(3, dtype=D), 3.0).to_event(1))


def forward_algorithm(trans, loc, y):
    r""":math:`\log p(y \mid \theta)` of the HMM by the forward recursion
    :math:`\alpha_t(j) = \log\sum_i \exp(\alpha_{t-1}(i) + \log A_{ij}) + \log N(y_t; \mu_j, 1)`,
    started from state 0."""
    alpha = trans[0].log() + dist.Normal(loc, 1.0).log_prob(y[0])
    for t in range(1, len(y)):
        step = torch.logsumexp(alpha[:, None] + trans.log(), 0)
        alpha = step + dist.Normal(loc, 1.0).log_prob(y[t])
    return torch.logsumexp(alpha, 0)


@pytest.mark.parametrize("backend", ["eager", "fx"])
def test_mixture_log_density_equals_hand_marginalised(backend):
    bridge = ModelBridge(mixture, (Y_MIX,), backend=backend)
    hand = ModelBridge(mixture_marginal, (Y_MIX,), backend="eager")
    assert bridge.enumerated == ["k"] and bridge.dim == hand.dim == 4
    z = 2 * torch.randn(16, bridge.dim, dtype=D, generator=make_generator(0))
    torch.testing.assert_close(bridge.log_density(z), hand.log_density(z), rtol=0, atol=1e-10)
    lp, grad = bridge.log_density_and_grad(z)
    lp_hand, grad_hand = hand.log_density_and_grad(z)
    torch.testing.assert_close(lp, lp_hand, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, grad_hand, rtol=0, atol=1e-9)
    looped = ModelBridge(mixture, (Y_MIX,), backend=backend, vectorise="loop")
    torch.testing.assert_close(looped.log_density(z), hand.log_density(z), rtol=0, atol=1e-10)
    prior, lik = bridge.log_prior_and_likelihood(z)  # p(theta) and p(y | theta) exactly
    prior_hand, lik_hand = hand.log_prior_and_likelihood(z)
    torch.testing.assert_close(prior, prior_hand, rtol=0, atol=1e-10)
    torch.testing.assert_close(lik, lik_hand, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["eager", "fx"])
def test_markov_hmm_log_density_equals_forward_algorithm(backend):
    bridge = ModelBridge(hmm, (Y_HMM,), backend=backend)
    assert bridge.enumerated == [f"x_{t}" for t in range(len(Y_HMM))]
    z = torch.randn(6, bridge.dim, dtype=D, generator=make_generator(1))
    values = bridge.constrain(z)
    lik = torch.stack(
        [forward_algorithm(values["trans"][i], values["loc"][i], Y_HMM) for i in range(6)]
    )
    prior = ModelBridge(hmm_prior, backend="eager").log_density(z)  # with the log-Jacobian
    torch.testing.assert_close(bridge.log_density(z), prior + lik, rtol=0, atol=1e-10)
    torch.testing.assert_close(bridge.log_likelihood(z), lik, rtol=0, atol=1e-10)
    lp, _ = bridge.log_density_and_grad(z)
    torch.testing.assert_close(lp, prior + lik, rtol=0, atol=1e-10)


def coupled(y):
    k = pyro.sample("k", dist.Bernoulli(torch.tensor(0.3, dtype=D)))
    mu = pyro.sample("mu", dist.Normal(3.0 * k, 1.0))
    pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_continuous_site_depending_on_a_discrete_one_splits_prior_and_likelihood_exactly():
    y = torch.tensor(2.0, dtype=D)
    bridge = ModelBridge(coupled, (y,))
    mu = torch.linspace(-3, 5, 9, dtype=D)[:, None]
    log_w = torch.tensor([0.7, 0.3], dtype=D).log()
    prior = torch.logsumexp(
        log_w + dist.Normal(torch.tensor([0.0, 3.0], dtype=D), 1.0).log_prob(mu), -1
    )
    lik = dist.Normal(mu[:, 0], 1.0).log_prob(y)
    got_prior, got_lik = bridge.log_prior_and_likelihood(mu)
    torch.testing.assert_close(got_prior, prior, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_lik, lik, rtol=0, atol=1e-10)


def test_user_enumeration_settings_are_respected():
    def configured(y):
        w = pyro.sample("w", dist.Dirichlet(torch.ones(2, dtype=D)))
        loc = pyro.sample("loc", dist.Normal(torch.tensor([-2.0, 2.0], dtype=D), 1.0).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(torch.zeros((), dtype=D), 0.5))
        with pyro.plate("data", len(y)):
            k = pyro.sample("k", dist.Categorical(w), infer={"enumerate": "parallel"})
            pyro.sample("y", dist.Normal(loc[k], scale), obs=y)

    z = torch.randn(5, 4, dtype=D, generator=make_generator(2))
    expected = ModelBridge(mixture_marginal, (Y_MIX,)).log_density(z)
    for model in (configured, pyro.infer.config_enumerate(mixture)):
        got = ModelBridge(model, (Y_MIX,)).log_density(z)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)

    def sequential():
        k = pyro.sample("k", dist.Bernoulli(0.5), infer={"enumerate": "sequential"})
        pyro.sample("x", dist.Normal(k, 1.0))

    with pytest.raises(DiscreteLatentError, match="'k'.*parallel"):
        ModelBridge(sequential)


def test_poisson_latent_gives_clear_error():
    def model(y):
        n = pyro.sample("n", dist.Poisson(3.0))
        pyro.sample("y", dist.Normal(n, 1.0), obs=y)

    with pytest.raises(DiscreteLatentError, match="'n'.*Poisson.*finite support"):
        ModelBridge(model, (torch.tensor(1.0),))


def test_allow_discrete_and_opting_out_are_unchanged():
    bridge = ModelBridge(mixture, (Y_MIX,), allow_discrete=True)
    assert bridge.discrete_sites == ["k"] and bridge.enumerated == []
    with pytest.raises(DiscreteLatentError, match="'k'"):
        ModelBridge(mixture, (Y_MIX,), enumerate_discrete=False)


def mixture_conditional(values, y):
    r""":math:`p(k_i = j \mid w, \mu, \sigma, y_i) \propto w_j N(y_i; \mu_j, \sigma)`, ``[N, 2]``."""
    logits = values["w"].log() + dist.Normal(values["loc"], values["scale"]).log_prob(y[:, None])
    return logits.softmax(-1)


def test_mixture_discrete_draws_follow_the_exact_conditional():
    bridge = ModelBridge(mixture, (Y_MIX,), vectorise="vmap")
    z0 = torch.randn(2, bridge.dim, dtype=D, generator=make_generator(3))
    n = 300  # each of two points repeated: [chain=2, draw=n]
    z = z0[:, None, :].expand(2, n, bridge.dim)
    result = bridge.to_result(z, seed=5)
    k = torch.as_tensor(result.draws["k"])
    assert k.shape == (2, n, len(Y_MIX))
    for c in range(2):
        p = mixture_conditional({s: v[c] for s, v in bridge.constrain(z0).items()}, Y_MIX)[:, 1]
        freq = k[c].to(D).mean(0)
        se = (p * (1 - p) / n).sqrt()
        assert ((freq - p).abs() <= 4.5 * se + 1e-12).all(), (freq, p)
    # reproducible: a seed, or by default one derived from the draws
    few = z[:, :20]
    again = torch.as_tensor(bridge.to_result(few, seed=5).draws["k"])
    assert torch.equal(again, torch.as_tensor(bridge.to_result(few, seed=5).draws["k"]))
    default = [torch.as_tensor(bridge.to_result(few).draws["k"]) for _ in range(2)]
    assert torch.equal(*default)


LEVELS = torch.tensor([-1.0, 1.0], dtype=D)


def small_hmm(y):
    trans = pyro.sample("trans", dist.Dirichlet(torch.ones(2, 2, dtype=D)).to_event(1))
    x = 0
    for t in pyro.markov(range(len(y))):
        x = pyro.sample(f"x_{t}", dist.Categorical(trans[x]))
        pyro.sample(f"y_{t}", dist.Normal(LEVELS[x], 1.0), obs=y[t])


@pytest.mark.parametrize("vectorise", ["vmap", "loop"])
def test_hmm_joint_draws_follow_the_exact_posterior(vectorise):
    """Draws of (x_0, x_1, x_2) against the brute-force posterior over all 8 paths, drawn
    batched (vmap) and one row at a time."""
    y = torch.tensor([0.4, -1.2, 0.9], dtype=D)
    bridge = ModelBridge(small_hmm, (y,), vectorise=vectorise)
    z0 = torch.randn(1, bridge.dim, dtype=D, generator=make_generator(6))
    trans = bridge.constrain(z0)["trans"][0]
    paths = list(itertools.product(range(2), repeat=3))
    log_joint = []
    for path in paths:
        lp, prev = 0.0, 0
        for t, x in enumerate(path):
            lp += math.log(trans[prev, x]) + dist.Normal(2.0 * x - 1.0, 1.0).log_prob(y[t]).item()
            prev = x
        log_joint.append(lp)
    exact = torch.tensor(log_joint, dtype=D).softmax(0)
    n = 1500
    draws = bridge.to_result(z0[None].expand(1, n, bridge.dim), seed=0).draws
    code = sum(torch.as_tensor(draws[f"x_{t}"][0]).long() * 2 ** (2 - t) for t in range(3))
    freq = torch.bincount(code, minlength=8).to(D) / n
    se = (exact * (1 - exact) / n).sqrt()
    assert ((freq - exact).abs() <= 4.5 * se + 1e-12).all(), (freq, exact)


def test_deterministic_sites_follow_the_drawn_discrete_values():
    def model(y):
        w = pyro.sample("w", dist.Dirichlet(torch.ones(2, dtype=D)))
        loc = pyro.sample("loc", dist.Normal(torch.tensor([-2.0, 2.0], dtype=D), 1.0).to_event(1))
        pyro.deterministic("gap", loc[1] - loc[0])
        with pyro.plate("data", len(y)):
            k = pyro.sample("k", dist.Categorical(w))
            pyro.deterministic("mean_k", loc[k])
            pyro.sample("y", dist.Normal(loc[k], 1.0), obs=y)

    bridge = ModelBridge(model, (Y_MIX,))
    z = torch.randn(2, 5, bridge.dim, dtype=D, generator=make_generator(8))
    draws = {k: torch.as_tensor(v) for k, v in bridge.to_result(z).draws.items()}
    loc, k = draws["loc"], draws["k"].long()
    torch.testing.assert_close(draws["mean_k"], torch.gather(loc, -1, k))
    torch.testing.assert_close(draws["gap"], loc[..., 1] - loc[..., 0])


def test_subsampling_with_enumeration_is_refused():
    def model(y):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2, dtype=D), 1.0).to_event(1))
        with pyro.plate("data", len(y), subsample_size=4):
            k = pyro.sample("k", dist.Bernoulli(torch.tensor(0.5, dtype=D)))
            pyro.sample("y", dist.Normal(loc[k.long()], 1.0), obs=y[:4])

    with pytest.raises(ModelStructureError, match="subsample"):
        ModelBridge(model, (Y_MIX,))
