import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, VectorisationWarning
from ppltk.model import ModelBridge

Y = torch.tensor([28.0, 8, -3, 7, -1, 1, 18, 12], dtype=torch.float64)
S = torch.tensor([15.0, 10, 16, 11, 9, 11, 10, 18], dtype=torch.float64)


def eight_schools(y, s):
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.full((), 5.0, dtype=y.dtype)))
    with pyro.plate("J", y.shape[0]):
        theta = pyro.sample("theta", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * theta, s), obs=y)


def branching(y):
    """Control flow on a latent value: a static graph would bake in one branch."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    scale = 1.0 if bool(mu > 0) else 3.0
    pyro.sample("y", dist.Normal(mu, scale), obs=y)


@pytest.mark.parametrize("batch", [1, 7])
def test_fx_backend_equals_eager_values_and_gradients(batch):
    eager = ModelBridge(eight_schools, (Y, S), backend="eager")
    fx = ModelBridge(eight_schools, (Y, S), backend="fx")
    for seed in range(3):
        z = torch.randn(batch, eager.dim, dtype=torch.float64, generator=make_generator(seed))
        for a, b in zip(fx.log_density_and_grad(z), eager.log_density_and_grad(z)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        for a, b in zip(fx.log_prior_and_likelihood(z), eager.log_prior_and_likelihood(z)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert len(fx._graph_density_and_grad.graphs) == 1


def test_value_dependent_control_flow_falls_back_to_eager():
    y = torch.tensor(0.3, dtype=torch.float64)
    fx = ModelBridge(branching, (y,), backend="fx", vectorise="loop")
    eager = ModelBridge(branching, (y,), backend="eager", vectorise="loop")
    z = torch.tensor([[-1.0], [1.0], [-2.0], [0.5]], dtype=torch.float64)
    with pytest.warns(VectorisationWarning, match="static graph"):
        lp, grad = fx.log_density_and_grad(z)
    torch.testing.assert_close(lp, eager.log_density_and_grad(z)[0])
    torch.testing.assert_close(grad, eager.log_density_and_grad(z)[1])


def test_unknown_backend_is_named():
    with pytest.raises(ArgumentError, match="backend"):
        ModelBridge(eight_schools, (Y, S), backend="jit")


@pytest.mark.slow
def test_inductor_backend_equals_eager():
    eager = ModelBridge(eight_schools, (Y, S), backend="eager")
    compiled = ModelBridge(eight_schools, (Y, S), backend="inductor")
    z = torch.randn(4, eager.dim, dtype=torch.float64, generator=make_generator(0))
    for a, b in zip(compiled.log_density_and_grad(z), eager.log_density_and_grad(z)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["eager", "fx"])
def test_parts_and_grads_add_up_to_the_joint(backend):
    bridge = ModelBridge(eight_schools, (Y, S), backend=backend)
    z = torch.randn(5, bridge.dim, dtype=torch.float64, generator=make_generator(3))
    prior, lik, grad_prior, grad_lik = bridge.log_prior_and_likelihood_and_grads(z)
    lp, grad = bridge.log_density_and_grad(z)
    torch.testing.assert_close(prior + lik, lp)
    torch.testing.assert_close(grad_prior + grad_lik, grad)
    zz = z.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(bridge.log_likelihood(zz).sum(), zz)
    torch.testing.assert_close(grad_lik, expected)
