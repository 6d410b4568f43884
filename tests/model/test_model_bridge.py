import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import biject_to, constraints

from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, DiscreteLatentError, NonFiniteLogDensityError, ShapeError
from ppltk.model import ModelBridge

Y = torch.tensor([[0.2, 1.5, 0.7], [1.1, 0.3, 2.2]], dtype=torch.float64)


def constrained_model(y):
    """Positive, interval and simplex sites inside plates, a factor and observations."""
    scale = pyro.sample("scale", dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    with pyro.plate("groups", 2):
        rho = pyro.sample("rho", dist.Uniform(torch.tensor(-1.0, dtype=torch.float64), 2.0))
        pyro.sample("probs", dist.Dirichlet(torch.ones(3, dtype=torch.float64) * 2))
        with pyro.plate("items", 3):
            pyro.sample("y", dist.Normal(rho, scale), obs=y.T)
    pyro.factor("penalty", -0.5 * (rho**2).sum())


def constrained_model_hand(z):
    """The same joint log-density with the Jacobians written out by hand (z [D], float64)."""
    log_scale, rho_u, probs_u = z[0], z[1:3], z[3:7].reshape(2, 2)
    scale = log_scale.exp()
    zero = torch.tensor(0.0, dtype=torch.float64)
    lp = dist.LogNormal(zero, 1.0).log_prob(scale) + log_scale  # d scale / d log_scale = scale
    sig = torch.sigmoid(rho_u)
    rho = -1.0 + 3.0 * sig
    lp = (
        lp
        + (
            dist.Uniform(zero - 1.0, zero + 2.0).log_prob(rho) + torch.log(3 * sig * (1 - sig))
        ).sum()
    )
    stick = biject_to(constraints.simplex)
    probs = stick(probs_u)
    lp = lp + dist.Dirichlet(torch.full((3,), 2.0, dtype=torch.float64)).log_prob(probs).sum()
    lp = lp + stick.log_abs_det_jacobian(probs_u, probs).sum()
    lp = lp + dist.Normal(rho, scale).log_prob(Y.T).sum()
    lp = lp - 0.5 * (rho**2).sum()
    return lp


def test_sites_shapes_and_supports():
    bridge = ModelBridge(constrained_model, (Y,))
    assert list(bridge.sites) == ["scale", "rho", "probs"]
    assert bridge.sites["probs"].shape == (2, 3)
    assert bridge.sites["probs"].unconstrained_shape == (2, 2)
    assert bridge.dim == 1 + 2 + 4
    assert set(bridge.observed) == {"y", "penalty"}
    assert bridge.dtype == torch.float64


def test_log_density_matches_hand_written_and_batch_equals_loop():
    bridge = ModelBridge(constrained_model, (Y,))
    z = torch.randn(5, bridge.dim, dtype=torch.float64, generator=make_generator(1))
    batched = bridge.log_density(z)
    expected = torch.stack([constrained_model_hand(row) for row in z])
    torch.testing.assert_close(batched, expected, rtol=1e-12, atol=1e-12)
    looped = ModelBridge(constrained_model, (Y,), vectorise="loop").log_density(z)
    torch.testing.assert_close(batched, looped, rtol=1e-12, atol=1e-12)


def test_gradient_matches_autograd_of_hand_written_and_gradcheck():
    bridge = ModelBridge(constrained_model, (Y,))
    z = torch.randn(3, bridge.dim, dtype=torch.float64, generator=make_generator(2))
    lp, grad = bridge.log_density_and_grad(z)
    for row, g in zip(z, grad):
        r = row.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(constrained_model_hand(r), r)
        torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(bridge.log_density, (z.clone().requires_grad_(True),))


def test_prior_plus_likelihood_is_joint_and_constrain_roundtrip():
    bridge = ModelBridge(constrained_model, (Y,))
    z = torch.randn(4, bridge.dim, dtype=torch.float64, generator=make_generator(3))
    prior, lik = bridge.log_prior_and_likelihood(z)
    torch.testing.assert_close(prior + lik, bridge.log_density(z))
    values = bridge.constrain(z)
    assert values["probs"].shape == (4, 2, 3)
    torch.testing.assert_close(values["probs"].sum(-1), torch.ones(4, 2, dtype=torch.float64))
    assert (values["scale"] > 0).all() and (values["rho"] > -1).all() and (values["rho"] < 2).all()
    torch.testing.assert_close(bridge.unconstrain(values), z)


def test_cholesky_and_correlation_sites():
    def model():
        pyro.sample("L", dist.LKJCholesky(3, torch.tensor(2.0, dtype=torch.float64)))
        scale = torch.ones(3, dtype=torch.float64)
        pyro.sample("scale_tril", dist.HalfNormal(scale).to_event(1))

    bridge = ModelBridge(model)
    assert bridge.sites["L"].unconstrained_shape == (3,)
    z = torch.randn(2, bridge.dim, dtype=torch.float64, generator=make_generator(4))
    L = bridge.constrain(z)["L"]
    corr = L @ L.transpose(-1, -2)
    torch.testing.assert_close(
        torch.diagonal(corr, dim1=-2, dim2=-1), torch.ones(2, 3, dtype=torch.float64)
    )
    assert torch.isfinite(bridge.log_density(z)).all()


def test_discrete_latent_without_finite_support_gives_clear_error():
    """A Categorical latent is summed out (tests/model/test_model_enumeration.py); a Poisson
    latent has no finite support to enumerate and is refused by name."""

    def model():
        k = pyro.sample("k", dist.Poisson(3.0))
        pyro.sample("x", dist.Normal(k, 1.0), obs=torch.tensor(0.0))

    with pytest.raises(DiscreteLatentError, match="'k'.*Poisson"):
        ModelBridge(model)


def test_nan_log_density_at_init_names_the_site():
    def model():
        mu = pyro.sample("mu", dist.Normal(10.0, 1.0))  # NaN at the initial points in (-2, 2)
        pyro.factor("y", torch.where(mu < 5.0, float("nan"), 0.0))

    bridge = ModelBridge(model)
    with pytest.raises(NonFiniteLogDensityError, match="'y'"):
        bridge.initial_points(4, make_generator(0), max_tries=3)


def test_nan_observation_is_refused_at_trace_time_naming_the_site():
    def model():
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(mu, 1.0), obs=torch.tensor(float("nan")))

    with pytest.raises(ArgumentError, match="'y'"):
        ModelBridge(model)


def test_initial_points_are_finite_and_seeded():
    bridge = ModelBridge(constrained_model, (Y,))
    a = bridge.initial_points(6, make_generator(7))
    b = bridge.initial_points(6, make_generator(7))
    assert torch.equal(a, b)
    assert torch.isfinite(bridge.log_density(a)).all()


def test_bad_batch_shape_is_named():
    bridge = ModelBridge(constrained_model, (Y,))
    with pytest.raises(ShapeError, match="batch, 7"):
        bridge.log_density(torch.zeros(7, dtype=torch.float64))


def test_sample_prior_matches_prior_moments():
    def model():
        pyro.sample("s", dist.Gamma(3.0, 2.0))

    bridge = ModelBridge(model)
    z = bridge.sample_prior(2000, make_generator(5))
    s = bridge.constrain(z)["s"]
    # Gamma(3, 2): mean 1.5, sd sqrt(3)/2; 5 standard errors
    assert abs(s.mean().item() - 1.5) < 5 * (math.sqrt(3) / 2) / math.sqrt(2000)


def test_to_result_shapes():
    bridge = ModelBridge(constrained_model, (Y,))
    z = torch.randn(2, 5, bridge.dim, dtype=torch.float64, generator=make_generator(6))
    result = bridge.to_result(z, {"lp": torch.zeros(2, 5)}, method="test")
    assert result["probs"].shape == (2, 5, 2, 3)
    assert "y" in result.to_arviz().observed_data


def test_scale_and_mask_are_applied():
    y = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    keep = torch.tensor([True, False, True])

    def model():
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=torch.float64), 1.0))
        with pyro.plate("n", 3), pyro.poutine.scale(scale=2.5), pyro.poutine.mask(mask=keep):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    bridge = ModelBridge(model)
    z = torch.randn(4, 1, dtype=torch.float64, generator=make_generator(8))
    mu = z[:, 0]
    expected = dist.Normal(0.0, 1.0).log_prob(mu) + 2.5 * (
        dist.Normal(mu[:, None], 1.0).log_prob(y) * keep
    ).sum(-1)
    torch.testing.assert_close(bridge.log_density(z), expected)
