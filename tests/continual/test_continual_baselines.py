"""Baselines: fine-tuning forgets, online Laplace precision is the Gauss-Newton diagonal, VCL."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.autograd.functional import hessian

from ppltk.continual import VCL, FineTuning, FlatBNN, OnlineLaplace, run_continual
from ppltk.datasets import toy_blob_tasks


def _net(hidden=8, out=10):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, out)
    )


def test_finetuning_learns_then_forgets_class_incremental():
    tasks = toy_blob_tasks(num_tasks=3, num_train=20, num_test=30, seed=0)
    run = run_continual(lambda: FineTuning(_net(), num_steps=200, seed=0), tasks)
    assert (run.accuracy.diagonal() > 0.85).all()
    assert run.accuracy[-1, 0] < 0.3  # lower bound: nothing protects task 1
    assert run.forgetting > 0.5


def test_online_laplace_precision_is_hessian_diagonal_for_linear_softmax():
    """For a linear softmax model the Gauss-Newton matrix equals the Hessian of -log p."""
    tasks = toy_blob_tasks(num_tasks=2, num_train=10, seed=1)
    torch.manual_seed(0)
    learner = OnlineLaplace(torch.nn.Linear(2, 4), prior_scale=2.0, num_steps=50, seed=0)
    bnn = FlatBNN(torch.nn.Linear(2, 4), dtype=torch.float64)
    prec = torch.full((bnn.dim,), 0.25, dtype=torch.float64)
    for X, y, _, _ in tasks:
        learner.observe(X, y)
        k = learner.num_classes
        H = hessian(
            lambda t, X=X, y=y, k=k: -bnn.log_likelihood(t[None], X, y, k)[0], learner.theta
        )
        prec = prec + H.diagonal()
        torch.testing.assert_close(learner.precision, prec)
    assert learner.predict_proba(tasks[0][2]).shape == (len(tasks[0][2]), 4)


def test_vcl_fits_a_task_and_passes_its_guide_on_as_prior():
    tasks = toy_blob_tasks(num_tasks=2, num_train=20, num_test=30, seed=2)
    learner = VCL(_net(out=4), num_steps=300, seed=0)
    learner.observe(*tasks[0][:2])
    acc = (learner.predict(tasks[0][2]) == tasks[0][3]).double().mean()
    assert acc > 0.85
    prior = learner.prior
    assert isinstance(prior, dist.Independent) and prior.event_shape == (learner.model.dim,)
    torch.testing.assert_close(prior.mean, learner.loc)
    torch.testing.assert_close(prior.stddev, learner.scale)
    # posterior narrower than the N(0, 1) prior on the informed weights, never wider than ~1
    assert float(learner.scale.min()) < 0.5 and float(learner.scale.max()) < 1.5
    loc_before = learner.loc.clone()
    learner.observe(*tasks[1][:2])
    assert not torch.equal(loc_before, learner.loc)
    assert learner.predict_proba(tasks[1][2]).shape == (len(tasks[1][2]), 4)
