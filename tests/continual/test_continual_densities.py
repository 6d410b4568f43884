"""Density estimators recover known Gaussians and mixtures; they work as priors."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

from ppltk.continual import fit_density, fit_flow, fit_gaussian, fit_gmm
from ppltk.errors import ArgumentError, NotPositiveDefiniteError, ShapeError

N = 3000
HELDOUT = 0.2


def _gaussian_truth(d=3):
    L = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.4, 0.5]], dtype=torch.float64)
    return dist.MultivariateNormal(
        torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), scale_tril=L
    )


def _mixture_truth():
    means = torch.tensor([[-3.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
    scales = torch.tensor(
        [[[1.0, 0.0], [0.5, 0.7]], [[0.6, 0.0], [-0.2, 1.0]]], dtype=torch.float64
    )
    return dist.MixtureSameFamily(
        dist.Categorical(probs=torch.tensor([0.3, 0.7], dtype=torch.float64)),
        dist.MultivariateNormal(means, scale_tril=scales),
    )


def _truth_tolerance(truth, num_params, n=N):
    """Allowed gap between the fit's held-out log-likelihood and the truth's expectation.

    held-out mean of log q = E_p[log p] - KL(p||q) + noise. Noise sd: sd(log p)/sqrt(N_ho),
    sd(log p) estimated from 20000 fresh truth draws; KL of an ML fit ~ num_params / (2 N_train)
    on average; allow 4.5 noise sd plus 4 times the expected KL.
    """
    lp = truth.log_prob(_samples(truth, n=20000, seed=123))
    n_ho = HELDOUT * n
    return float(lp.mean()), 4.5 * float(lp.std()) / math.sqrt(n_ho) + 4 * num_params / (
        2 * (n - n_ho)
    )


def _samples(truth, n=N, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return truth.sample((n,))


def test_gaussian_recovers_known_gaussian():
    truth = _gaussian_truth()
    fit = fit_gaussian(_samples(truth), seed=0)
    # exact expectation E_p[log p] = -entropy
    expected = -float(truth.entropy())
    _, tol = _truth_tolerance(truth, num_params=3 + 6)
    assert abs(fit.heldout_loglik - expected) < tol
    q = fit.distribution
    # mean error sd = sqrt(diag Sigma / N_train); 4.5 sd
    assert ((q.mean - truth.mean).abs() < 4.5 * (truth.variance / (0.8 * N)).sqrt()).all()
    # variance relative error sd = sqrt(2 / N_train) (+ small Ledoit-Wolf shrinkage)
    assert ((q.variance / truth.variance - 1).abs() < 4.5 * math.sqrt(2 / (0.8 * N)) + 0.02).all()


def test_gmm_recovers_two_component_mixture_and_picks_k():
    truth = _mixture_truth()
    fit = fit_gmm(_samples(truth, seed=1), max_components=4, seed=0)
    assert fit.info["num_components"] == 2
    expected, tol = _truth_tolerance(truth, num_params=2 * (2 + 3) + 1)
    assert abs(fit.heldout_loglik - expected) < tol
    # a single Gaussian is clearly worse on the same held-out data (the test can fail)
    assert fit.info["scores"][1] < expected - 2 * tol


def test_gmm_picks_one_component_for_a_gaussian():
    fit = fit_gmm(_samples(_gaussian_truth(), seed=2), max_components=3, seed=0)
    assert fit.info["num_components"] == 1


def test_flow_fits_mixture_better_than_gaussian():
    truth = _mixture_truth()
    x = _samples(truth, n=1500, seed=3)
    flow = fit_flow(x, flow="affine", num_layers=2, hidden_dims=[32], num_steps=300, seed=0)
    gauss = fit_gaussian(x, seed=0)
    expected, tol = _truth_tolerance(truth, num_params=0, n=1500)
    # the truth is 0.8 nats above the best Gaussian; the flow gets within the held-out noise
    # tolerance (4.5 sd of the held-out mean) of it
    assert flow.heldout_loglik > gauss.heldout_loglik + 0.5
    assert abs(expected - flow.heldout_loglik) < tol


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("gaussian", {}),
        ("gmm", {}),
        ("flow", {"num_steps": 20}),
        ("flow", {"num_steps": 20, "flow": "spline"}),
    ],
)
def test_fitted_density_is_a_differentiable_prior(kind, kw):
    truth = _gaussian_truth()
    fit = fit_density(_samples(truth, n=400), kind, seed=0, **kw)
    q = fit.distribution
    assert q.event_shape == (3,)
    theta = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    lp = q.log_prob(theta)
    assert lp.shape == (5,)
    (grad,) = torch.autograd.grad(lp.sum(), theta)
    assert torch.isfinite(grad).all()
    # the fitted parameters are frozen
    assert all(not p.requires_grad for p in getattr(fit.distribution, "parameters", lambda: [])())
    # same seed, same fit
    again = fit_density(_samples(truth, n=400), kind, seed=0, **kw)
    assert again.heldout_loglik == pytest.approx(fit.heldout_loglik, rel=1e-10)


def test_density_errors():
    with pytest.raises(ShapeError, match="samples"):
        fit_gaussian(torch.zeros(10))
    with pytest.raises(ArgumentError, match="finite"):
        fit_gaussian(torch.full((10, 2), float("nan")))
    with pytest.raises(ArgumentError, match="density"):
        fit_density(torch.zeros(10, 2), "kde")
    with pytest.raises(NotPositiveDefiniteError, match="covariance"):
        fit_gaussian(torch.ones(10, 3, dtype=torch.float64), shrinkage=None)
    with pytest.raises(ArgumentError, match="heldout_fraction"):
        fit_gmm(torch.randn(10, 2), heldout_fraction=1.5)
