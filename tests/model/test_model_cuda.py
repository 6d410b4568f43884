import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk._rng import make_generator
from ppltk.model import ModelBridge


@pytest.mark.cuda
def test_bridge_runs_on_the_models_device():
    device = torch.device("cuda")
    y = torch.randn(20, device=device)

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), device=device), 1.0))
        sigma = pyro.sample("sigma", dist.HalfNormal(torch.ones((), device=device)))
        with pyro.plate("n", y.shape[0]):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    bridge = ModelBridge(model, (y,))
    assert bridge.device.type == "cuda"
    z = bridge.initial_points(64, make_generator(0, device))
    lp, grad = bridge.log_density_and_grad(z)
    assert lp.device.type == "cuda" and grad.shape == (64, 2)
    looped = ModelBridge(model, (y,), vectorise="loop")
    torch.testing.assert_close(lp, looped.log_density(z))
