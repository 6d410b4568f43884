"""The amortized posterior follows the model's device (run with ``-m cuda`` on a GPU)."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppltk.amortized import GaussianMixturePrior, fit_amortized, fit_prior_adaptive


@pytest.mark.cuda
def test_amortized_posterior_on_cuda():
    dev = torch.device("cuda")

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.tensor(0.0, device=dev), 2.0))
        with pyro.plate("data", 10):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y0 = torch.zeros(10, device=dev)
    q = fit_amortized(model, y0, num_simulations=500, max_epochs=2, seed=0, progress=False,
                      calibration_simulations=50)  # fmt: skip
    assert next(q.head.parameters()).device.type == "cuda"
    draws = q.sample(torch.zeros(3, 10, device=dev), 5, seed=0)
    assert draws["mu"].device.type == "cuda" and draws["mu"].shape == (3, 5)
    result = q.posterior(y0, num_samples=50, seed=0, correct=True)
    assert result.draws["mu"].shape == (1, 50) and result.attrs["ess"] > 0
    sample = q.importance_sample(y0, 50, seed=0)
    assert sample.z.device.type == "cuda"
    adaptive = fit_prior_adaptive(model, y0, num_simulations=300, max_epochs=1, hidden=16,
                                  heads=2, layers=1, seed=0, progress=False)  # fmt: skip
    prior = GaussianMixturePrior(torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1))
    assert adaptive.sample(y0, prior, 5, seed=0).device.type == "cuda"
