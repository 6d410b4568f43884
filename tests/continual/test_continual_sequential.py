"""Sequential posterior plumbing, the conjugate check and the paper's forgetting finding."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch

from ppltk.continual import FlatBNN, JointHMC, SequentialBayes, run_continual
from ppltk.datasets import toy_blob_tasks
from ppltk.errors import ArgumentError, NotFittedError, ShapeError
from ppltk.mcmc import HMC

NOISE = 0.5  # observation noise sd of the regression


class LinearRegression:
    """y ~ N(X w, NOISE^2): a flat-parameter likelihood for SequentialBayes."""

    dim = 3

    def log_likelihood(self, theta, X, y, num_classes):
        mean = theta @ X.T  # [B, n]
        return dist.Normal(mean, NOISE).log_prob(y.to(theta.dtype)).sum(-1)


def _regression_tasks(num_tasks=3, n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.tensor([1.5, -1.0, 0.5], dtype=torch.float64)
    tasks = []
    for t in range(num_tasks):
        X = torch.randn(n, 3, generator=gen, dtype=torch.float64) + 0.5 * t
        y = X @ w + NOISE * torch.randn(n, generator=gen, dtype=torch.float64)
        tasks.append((X, y))
    return tasks


def _exact_posterior(prior_mean, prior_cov, X, y):
    # Lambda = Sigma0^{-1} + X'X / s^2;  mu = Lambda^{-1} (Sigma0^{-1} mu0 + X'y / s^2)
    prior_prec = torch.linalg.inv(prior_cov)
    prec = prior_prec + X.T @ X / NOISE**2
    cov = torch.linalg.inv(prec)
    return cov @ (prior_prec @ prior_mean + X.T @ y / NOISE**2), cov


def _n_eff(samples: torch.Tensor) -> float:
    """Smallest bulk ESS (ArviZ) over coordinates of ``[C, S, D]`` draws, capped at the 80%
    of draws a density is fitted on (the held-out 20% do not enter the fit)."""
    import arviz as az

    ess = az.ess(az.convert_to_dataset({"w": samples.numpy()}), method="bulk")["w"].values
    return min(float(ess.min()), 0.8 * samples.shape[0] * samples.shape[1])


def _joint(tasks):
    X = torch.cat([t[0] for t in tasks])
    y = torch.cat([t[1] for t in tasks])
    return _exact_posterior(
        torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), X, y
    )


def _final_draws_vs_joint(learner, tasks):
    """Pooled final draws, the joint posterior, N_eff and the tolerance of the final-draw mean.

    Final-draw mean: stage errors (<= Sigma_T / N_eff each, T stages) plus the final draws'
    own MC error; N_eff: the final task's ESS (earlier tasks' chains are alike).
    """
    mean, cov = _joint(tasks)
    n_eff = _n_eff(learner.samples)
    tol = 4.5 * ((len(tasks) + 1) * cov.diagonal() / n_eff).sqrt()
    return learner.samples.flatten(0, 1), mean, cov, n_eff, tol


def test_sequential_gaussian_with_exact_samples_equals_joint():
    """Plumbing: exact posterior samples -> Gaussian fit -> next prior gives the joint posterior."""
    tasks = _regression_tasks()
    current = {}

    def exact_sampler(logdensity_and_grad, init, num_warmup, num_samples, seed):
        prior = learner.prior
        cov0 = (
            prior.covariance_matrix
            if hasattr(prior, "covariance_matrix")
            else torch.eye(3).double()
        )
        mean, cov = _exact_posterior(prior.mean, cov0, *current["task"])
        gen = torch.Generator().manual_seed(seed % 2**31)
        eps = torch.randn(init.shape[0], num_samples, 3, generator=gen, dtype=torch.float64)
        return mean + eps @ torch.linalg.cholesky(cov).T

    learner = SequentialBayes(
        LinearRegression(),
        density="gaussian",
        sampler=exact_sampler,
        num_chains=4,
        num_samples=1000,
        seed=1,
        density_kwargs={"shrinkage": None},
    )
    for task in tasks:
        current["task"] = task
        learner.observe(*task)
    mean, cov = _joint(tasks)
    fit = learner.densities[-1].info
    # Each of T stages adds a mean error of covariance <= Sigma_T / N_fit (derivation: the
    # stage-t error propagates as Sigma_T Lambda_t delta with Lambda_t <= Lambda_T), so the
    # final error sd is <= sqrt(T diag(Sigma_T) / N_fit); 4.5 sd bounds it at this seed.
    n_fit = 0.8 * 4 * 1000
    tol = 4.5 * (len(tasks) * cov.diagonal() / n_fit).sqrt()
    assert ((fit["mean"] - mean).abs() < tol).all()
    # variance estimates: relative sd sqrt(2 / N_fit) per stage, at most sqrt(2T / N_fit) in all
    rel = (fit["cov"].diagonal() / cov.diagonal() - 1).abs()
    assert (rel < 4.5 * (2 * len(tasks) / n_fit) ** 0.5).all()
    # the test can fail: the last task's posterior alone is far outside the tolerance
    last_mean, _ = _exact_posterior(torch.zeros(3).double(), torch.eye(3).double(), *tasks[-1])
    assert ((last_mean - mean).abs() > tol).any()


def test_sequential_gaussian_nuts_equals_joint_within_mc_error():
    """The conjugate check with the real sampler (ppltk.mcmc NUTS, adapted per task)."""
    tasks = _regression_tasks()
    learner = SequentialBayes(
        LinearRegression(),
        density="gaussian",
        sampler="nuts",
        num_chains=4,
        num_warmup=200,
        num_samples=400,
        seed=2,
        density_kwargs={"shrinkage": None},
    )
    for task in tasks:
        learner.observe(*task)
    draws, mean, cov, n_eff, tol = _final_draws_vs_joint(learner, tasks)
    assert ((draws.mean(0) - mean).abs() < tol).all()
    rel = (draws.var(0) / cov.diagonal() - 1).abs()
    assert (rel < 4.5 * (2 * (len(tasks) + 1) / n_eff) ** 0.5).all()
    assert all(info["num_divergences"] == 0 for info in learner.sampler_info)
    last_mean, _ = _exact_posterior(torch.zeros(3).double(), torch.eye(3).double(), *tasks[-1])
    assert ((last_mean - mean).abs() > tol).any()


def test_flat_bnn_matches_module_and_cross_entropy():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    bnn = FlatBNN(net, dtype=torch.float64)
    X = torch.randn(7, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    theta = torch.stack([bnn.initial_vector(), 0.3 * torch.randn(bnn.dim, dtype=torch.float64)])
    logits = bnn.logits(theta, X)
    assert logits.shape == (2, 7, 4)
    torch.testing.assert_close(logits[0], net.double()(X))
    ll = bnn.log_likelihood(theta, X, y, num_classes=3)
    ref = -torch.nn.functional.cross_entropy(logits[1, :, :3], y, reduction="sum")
    torch.testing.assert_close(ll[1], ref)
    with pytest.raises(ShapeError, match="outputs"):
        bnn.log_likelihood(theta, X, y, num_classes=5)
    with pytest.raises(ShapeError, match="theta"):
        bnn.logits(theta[:, :-1], X)


def test_learner_errors():
    net = torch.nn.Linear(2, 4)
    with pytest.raises(ArgumentError, match="density"):
        SequentialBayes(net, density="kde")
    with pytest.raises(ArgumentError, match="sampler"):
        JointHMC(net, sampler="gibbs")
    learner = SequentialBayes(net, seed=0)
    with pytest.raises(NotFittedError):
        learner.predict(torch.zeros(3, 2))
    with pytest.raises(ShapeError, match="y"):
        learner.observe(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ArgumentError, match="labels"):
        learner.observe(torch.zeros(3, 2), torch.zeros(3))


def _finding(num_tasks):
    tasks = toy_blob_tasks(num_tasks=num_tasks, num_train=20, num_test=50, seed=0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2 * num_tasks)
    )
    kw = dict(sampler=HMC(num_steps=10), num_chains=4, num_warmup=100, num_samples=100, seed=0)
    seq = run_continual(lambda: SequentialBayes(net, density="gaussian", **kw), tasks)
    joint = run_continual(lambda: JointHMC(net, **kw), tasks)
    return seq.accuracy, joint.accuracy


def _check_finding(seq, joint):
    # Joint HMC: every task stays solved (blobs overlap little: Bayes accuracy > 0.97).
    assert (joint[-1] > 0.85).all()
    # Sequential: learns each task when it arrives, but task 1 collapses at the end.
    assert (seq.diagonal() > 0.85).all()
    assert seq[-1, 0] < 0.6
    assert joint[-1, 0] - seq[-1, 0] > 0.3


def test_paper_finding_three_tasks():
    """Kessler et al.: joint HMC keeps task 1, the sequential posterior forgets it."""
    _check_finding(*_finding(3))


@pytest.mark.slow
def test_paper_finding_five_tasks():
    _check_finding(*_finding(5))


@pytest.mark.parametrize("density", ["gmm", "flow"])
def test_sequential_gmm_and_flow_priors_recover_joint_posterior(density):
    """Gaussian posteriors are inside both families, so the loop must still give the joint."""
    tasks = _regression_tasks(num_tasks=2)
    kw = {"max_components": 2} if density == "gmm" else {"num_steps": 300, "hidden_dims": [16]}
    learner = SequentialBayes(
        LinearRegression(),
        density=density,
        sampler=HMC(num_steps=5),
        num_chains=8,
        num_warmup=100,
        num_samples=250,
        seed=3,
        density_kwargs=kw,
    )
    for task in tasks:
        learner.observe(*task)
    # as in the NUTS test: (T + 1) stages of MC error, N_eff from ArviZ
    draws, mean, _, _, tol = _final_draws_vs_joint(learner, tasks)
    assert ((draws.mean(0) - mean).abs() < tol).all()
    assert learner.densities[-1].kind == density
    assert len(learner.densities) == 2 and all(
        math.isfinite(d.heldout_loglik) for d in learner.densities
    )


def test_same_seed_same_draws_and_different_seed_different_draws():
    task = _regression_tasks(num_tasks=1)[0]

    def draws(seed):
        learner = SequentialBayes(
            LinearRegression(),
            sampler=HMC(num_steps=3),
            num_chains=2,
            num_warmup=20,
            num_samples=20,
            seed=seed,
        )
        return learner.observe(*task).samples

    assert torch.equal(draws(5), draws(5))
    assert not torch.equal(draws(5), draws(6))
