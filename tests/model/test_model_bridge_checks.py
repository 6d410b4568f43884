"""Bridge: deterministic sites as draws, latent-dependent supports, observed-data checks at
trace time, graph-agreement tolerance scaled to dtype and conditioning."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk.errors import ArgumentError, ShapeError, VectorisationWarning
from ppltk.mcmc import sample
from ppltk.model import ModelBridge
from ppltk.model.graph import GraphCache, tolerance

DTYPE = torch.float64


def triangle_model():
    """a ~ U(0, 1), b | a ~ U(0, 1 - a): the joint prior, so a is marginally U(0, 1)
    (E[a] = 1/2) and E[b] = E[(1 - a) / 2] = 1/4; s = a + b is deterministic."""
    a = pyro.sample("a", dist.Uniform(torch.tensor(0.0, dtype=DTYPE), 1.0))
    b = pyro.sample("b", dist.Uniform(torch.tensor(0.0, dtype=DTYPE), 1.0 - a))
    pyro.deterministic("s", a + b)


def test_latent_dependent_support_log_density_is_exact():
    """Transform re-derived at each evaluation: b = (1 - a) sigmoid(u_b), so
    log pi(u) = log p(a) + log p(b | a) + log|J| with p(b | a) = 1 / (1 - a) and
    |J| = a (1 - a) * (1 - a) s (1 - s). Before: b's bound was frozen at its first trace."""
    bridge = ModelBridge(triangle_model, backend="eager")
    assert bridge.dynamic == ["b"]
    z = torch.tensor([[0.3, -1.2], [-2.0, 0.7], [1.5, 2.5]], dtype=DTYPE)
    a, s = torch.sigmoid(z[:, 0]), torch.sigmoid(z[:, 1])
    expected = -torch.log(1 - a) + torch.log(a * (1 - a)) + torch.log((1 - a) * s * (1 - s))
    torch.testing.assert_close(bridge.log_density(z), expected)
    values = bridge.constrain(z)
    torch.testing.assert_close(values["b"], (1 - a) * s)
    torch.testing.assert_close(bridge.unconstrain(values), z)


def test_latent_dependent_support_posterior_and_deterministic_draws():
    """Before: E[a] ~ 0.78 (frozen bound). Tolerance: 5 MCSE with ESS >= 300 in all."""
    res = sample(
        triangle_model, num_chains=4, num_warmup=150, num_samples=250, seed=1, progress=False
    )
    a, b, s = (torch.as_tensor(res.draws[k], dtype=DTYPE) for k in ("a", "b", "s"))
    assert a.shape == b.shape == s.shape == (4, 250)
    torch.testing.assert_close(s, a + b)
    assert abs(float(a.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / 300)
    assert abs(float(b.mean()) - 0.25) < 5 * math.sqrt(7 / 144 / 300)  # Var b = 7/144
    assert (b < 1 - a).all()
    assert "s" not in res.observed_data


def test_deterministic_sites_are_draws_not_observed_data():
    y = torch.tensor([0.5, 1.5, 1.0], dtype=DTYPE)

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, dtype=DTYPE), 1.0))
        pyro.deterministic("twice", 2 * mu)
        with pyro.plate("n", 3):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    bridge = ModelBridge(model, (y,))
    assert "twice" not in bridge.observed and bridge.deterministic == {"twice": ()}
    z = torch.tensor([[[0.1], [0.2]], [[-0.3], [0.4]]], dtype=DTYPE)
    result = bridge.to_result(z)
    torch.testing.assert_close(torch.as_tensor(result.draws["twice"]), 2 * z[..., 0])
    # the deterministic site adds nothing to the density
    lp = bridge.log_density(z[0])
    torch.testing.assert_close(lp, dist.Normal(0.0, 1.0).log_prob(z[0, :, 0]) + dist.Normal(
        z[0, :, 0:1], 1.0).log_prob(y).sum(-1))  # fmt: skip


def test_observed_data_outside_the_support_is_refused_naming_the_site():
    def exponential(y):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        pyro.sample("y_exp", dist.Exponential(rate), obs=y)

    with pytest.raises(ArgumentError, match="'y_exp'.*-1.0"):
        ModelBridge(exponential, (torch.tensor(-1.0),))

    def bernoulli(y):
        p = pyro.sample("p", dist.Beta(1.0, 1.0))
        with pyro.plate("n", y.shape[0]):
            pyro.sample("coin", dist.Bernoulli(p), obs=y)

    with pytest.raises(ArgumentError, match="'coin'.*5.0"):
        ModelBridge(bernoulli, (torch.tensor([1.0, 5.0, 0.0]),))
    ModelBridge(bernoulli, (torch.tensor([1.0, 0.0, 0.0]),))  # valid data passes

    def uniform_bound(y):  # the bound is latent: out-of-bound data is zero likelihood only
        theta = pyro.sample("theta", dist.Exponential(1.0))
        pyro.sample("y", dist.Uniform(0.0, theta), obs=y)

    ModelBridge(uniform_bound, (torch.tensor(7.0),))


def test_observations_broadcast_by_a_plate_are_a_shape_error():
    """[n, 1] data in a plate of n broadcasts to an [n, n] log-probability (-1120 for -35.6)."""
    y = torch.randn(5, 1, generator=torch.Generator().manual_seed(0))

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("n", 5):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

    with pytest.raises(ShapeError, match=r"'obs'.*\[5\].*\[5, 1\]"):
        ModelBridge(model, (y,))
    ModelBridge(model, (y[:, 0],))


def test_graph_tolerance_scales_with_dtype_and_conditioning():
    """A float64 solve with condition number ~1e8 gets a tolerance far above 1e-10 (the
    fixed value that dropped compilation for ill-conditioned models); a well-conditioned
    one keeps 1e-10; float32 keeps >= 1e-4; capped at eps**0.4."""
    a = torch.tensor([[1.0, 1.0], [1.0, 1.0 + 1e-8]], dtype=DTYPE)

    def ill(z):
        return torch.linalg.solve(a, z.T).T[:, 0]

    def well(z):
        return (z**2).sum(-1)

    z = torch.tensor([[1.0, 1.0], [0.5, 0.5]], dtype=DTYPE)
    assert tolerance(well, z) == 1e-10
    assert 1e-9 < tolerance(ill, z) <= torch.finfo(DTYPE).eps ** 0.4
    assert tolerance(well, z.float()) >= 1e-4


def test_graph_fallback_warning_says_what_is_lost():
    def branching(z):
        return torch.where(z.sum() > 0, z, -z) if False else (z if float(z.sum()) > 0 else -z)

    cache = GraphCache(branching, "fx", "Test")
    z = torch.ones(2, 2, dtype=DTYPE)
    with pytest.warns(VectorisationWarning, match="Lost: the captured/compiled graph"):
        cache(z)
    assert cache.failed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(cache(-z), z)
